//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Each test body, once per device: `cpu`, `mock` (under the seeded random schedule `seed`), and
/// `cuda` (which says it skipped without a GPU). `#[macro_use] mod common;` brings it in.
#[allow(unused_macros)]
macro_rules! on_every_device {
    (seed = $seed:expr; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn cpu() {
                super::$name(scalpel::backend::cpu::Cpu);
            }
            #[test]
            fn mock() {
                use scalpel::backend::cuda::{Cuda, MockOptions, Schedule};
                super::$name(Cuda::mock(MockOptions { schedule: Schedule::Random($seed), ..Default::default() }).unwrap());
            }
            #[test]
            fn cuda() {
                use scalpel::backend::cuda::Cuda;
                if Cuda::available() {
                    super::$name(Cuda::new(0).unwrap());
                } else {
                    eprintln!("{}: no GPU here, skipped on cuda", stringify!($name));
                }
            }
        }
    )*};
}

pub mod devices;
pub mod hf;
pub mod qblocks;
pub mod reference;
pub mod tiny;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use scalpel::model::{KNOWN_MODELS, ModelFiles, models_dir};

/// The path of a model that scripts/setup.sh fetches. A missing model fails the test: CI installs
/// it, and a test that silently passes without its input proves nothing.
pub fn known_model(alias: &str) -> PathBuf {
    let k = KNOWN_MODELS.iter().find(|k| k.alias == alias).expect("known alias");
    let p = models_dir().join(k.file);
    assert!(p.is_file(), "{} is missing at {}: run scripts/setup.sh", k.what, p.display());
    p
}

pub fn open_known(alias: &str) -> ModelFiles {
    let p = known_model(alias);
    ModelFiles::open(Some(p.to_str().unwrap())).expect("model opens")
}

/// The repository root: where the test binary was built, or $SCALPEL_ROOT when the binaries run
/// from another checkout (scripts/gpu_check.sh on a GPU machine).
pub fn repo_root() -> PathBuf {
    std::env::var_os("SCALPEL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn golden_dir() -> PathBuf {
    repo_root().join("tests/golden")
}

pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    pub fn open(path: &Path) -> Self {
        Golden { bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("golden file parses")
    }

    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        (v, t.shape().to_vec())
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    pub fn u8(&self, name: &str) -> Vec<u8> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
        t.data().to_vec()
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    pub fn meta(&self, key: &str) -> Option<String> {
        let (_, m) = SafeTensors::read_metadata(&self.bytes).unwrap();
        m.metadata().as_ref().and_then(|m| m.get(key).cloned())
    }
}

/// ‖a − b‖ / ‖b‖, in f64. NaN anywhere gives NaN, which fails every `<=` check.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    if a.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

/// Compares row by row (a row = `row_len` consecutive values): each row's relative L2 error must
/// be at most `tol`. Returns the worst error.
pub fn assert_rows_close(what: &str, ours: &[f32], theirs: &[f32], row_len: usize, tol: f64) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (r, (a, b)) in ours.chunks(row_len).zip(theirs.chunks(row_len)).enumerate() {
        let e = rel_l2(a, b);
        assert!(e <= tol, "{what}: row {r} relative L2 error {e:e} > {tol:e}");
        worst = worst.max(e);
    }
    worst
}

/// Runs the built `scalpel` binary.
pub fn scalpel(args: &[&str]) -> std::process::Output {
    scalpel_env(args, &[])
}

/// The built `scalpel` binary ($SCALPEL_BIN when set) as a command to adjust before running.
pub fn scalpel_command(args: &[&str]) -> std::process::Command {
    let bin = std::env::var_os("SCALPEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_scalpel")));
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args);
    cmd
}

pub fn scalpel_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = scalpel_command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("scalpel runs")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed cleanly: exit code 1, an `error[class]` line naming the problem, no panic.
pub fn assert_clean_failure(o: &std::process::Output, class: &str, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, got {:?}; stderr: {err}", o.status);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(&format!("error[{class}]")), "expected error class {class}: {err}");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "expected {needle:?} in: {err}");
}
