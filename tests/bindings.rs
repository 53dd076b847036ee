//! The kernel header's two checks at build time, each held against an input that must pass and
//! one that must not:
//! - build/bindings.rs, the generator build.rs runs, on a header of its own with what the
//!   hand-written parser it replaced refused (a struct with array members): the generated Rust
//!   compiles, bindgen's layout tests included, with the layout C gives the struct; the new
//!   function is in the table, and each filling calls its own build's symbol (REAL scalpel_*,
//!   MOCK scalpel_mock_*) with the struct read by C where Rust wrote it;
//! - the mock build's C++ compiler on a kernel file whose launcher disagrees with the header: a
//!   definition is checked against its declaration (extern "C" functions cannot overload), so a
//!   wrong parameter or result type is a build error, and the right one compiles.

#[path = "../build/bindings.rs"]
mod bindings;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// A header the old parser refused: arrays in a struct, of two element sizes, so padding matters.
const ARRAY_HEADER: &str = r#"
#include <stdint.h>
/* The shape of a tensor. */
typedef struct ScalpelDims {
    int rank;
    int64_t dims[4];
    uint8_t flags[3];
} ScalpelDims;
/* The product of the first `rank` dims, plus flags[2], into *out; returns rank. */
int scalpel_dims_total(const ScalpelDims *d, int64_t *out);
"#;

/// The function as the two builds of the kernels would define it: the mock's negates, so a
/// filling that calls the other build's symbol shows.
const ARRAY_KERNELS: &str = r#"
#include "dims.h"
static int total(const ScalpelDims *d, int64_t *out, int64_t sign) {
    int64_t p = 1;
    for (int i = 0; i < d->rank; i++) p *= d->dims[i];
    *out = sign * (p + d->flags[2]);
    return d->rank;
}
int scalpel_dims_total(const ScalpelDims *d, int64_t *out) { return total(d, out, 1); }
int scalpel_mock_dims_total(const ScalpelDims *d, int64_t *out) { return total(d, out, -1); }
"#;

/// What the generated module must satisfy: C's layout of ScalpelDims (x86-64 and aarch64: int64_t
/// aligned to 8), the function in the table with its C signature, and both fillings calling it.
const ARRAY_CHECKS: &str = r#"
const _: () = assert!(size_of::<ScalpelDims>() == 48 && align_of::<ScalpelDims>() == 8);
const _: () = assert!(std::mem::offset_of!(ScalpelDims, dims) == 8);
const _: () = assert!(std::mem::offset_of!(ScalpelDims, flags) == 40);
type Total = unsafe extern "C" fn(*const ScalpelDims, *mut i64) -> std::ffi::c_int;
fn main() {
    let d = ScalpelDims { rank: 3, dims: [2, 3, 4, 1000], flags: [9, 9, 7] };
    for (table, want) in [(REAL, 31), (MOCK, -31)] {
        let f: Total = table.dims_total;
        let mut out = 0i64;
        assert_eq!((unsafe { f(&d, &mut out) }, out), (3, want));
    }
}
"#;

/// bindgen loads the libclang build.rs found (LIBCLANG_PATH is where clang-sys looks first).
fn use_builds_libclang() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any test of this file runs bindgen (each calls this first), and
    // nothing else in this test binary reads the environment from another thread meanwhile.
    ONCE.call_once(|| unsafe { std::env::set_var("LIBCLANG_PATH", env!("SCALPEL_LIBCLANG")) });
}

/// Runs a command; Err holds what it printed when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Compiles `source` into dir/check with the crate's edition and the `cuda` feature's cfg (so
/// both fillings exist), linked with the static library `link` in dir when given.
fn rustc(dir: &Path, source: &str, link: Option<&str>) -> Result<PathBuf, String> {
    let file = dir.join("check.rs");
    std::fs::write(&file, source).unwrap();
    let mut cmd = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    cmd.args(["--edition=2024", "--cap-lints=allow", "--cfg", "feature=\"cuda\""]);
    match link {
        Some(lib) => cmd.arg("-L").arg(dir).args(["-l", &format!("static={lib}")]),
        None => cmd.arg("--emit=metadata"),
    };
    run(cmd.arg("-o").arg(dir.join("check")).arg(&file))?;
    Ok(dir.join("check"))
}

#[test]
fn a_struct_with_array_members_becomes_rust_with_its_c_layout() {
    use_builds_libclang();
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("dims.h");
    std::fs::write(&header, ARRAY_HEADER).unwrap();
    let generated = bindings::generate(&header).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        generated.mock_names.contains("#define scalpel_dims_total scalpel_mock_dims_total\n"),
        "{}",
        generated.mock_names
    );

    let c = dir.path().join("dims.c");
    std::fs::write(&c, ARRAY_KERNELS).unwrap();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    run(Command::new(cc).args(["-c", "-Wall", "-Werror", "-o"]).arg(dir.path().join("dims.o")).arg(&c))
        .unwrap();
    run(Command::new("ar").arg("rcs").arg(dir.path().join("libdims.a")).arg(dir.path().join("dims.o")))
        .unwrap();
    let source = format!("{}\n{ARRAY_CHECKS}", generated.rust);
    let check = rustc(dir.path(), &source, Some("dims"))
        .unwrap_or_else(|e| panic!("{e}\n--- the generated module:\n{}", generated.rust));
    run(&mut Command::new(check)).unwrap();

    // The layout checks can fail: the same module with a layout C does not give is refused.
    let wrong = source.replace("ScalpelDims, flags) == 40", "ScalpelDims, flags) == 36");
    assert!(rustc(dir.path(), &wrong, None).is_err(), "a wrong offset was accepted");
}

#[test]
fn a_function_without_the_prefix_is_refused() {
    use_builds_libclang();
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("plain.h");
    std::fs::write(&header, "int launch(int n);\n").unwrap();
    let e = bindings::generate(&header).err().expect("a launcher without scalpel_ is refused");
    assert!(e.contains("launch: every function's name starts with scalpel_"), "{e}");
}

/// Compiles a kernel file the way the mock build does (build.rs: build_mock) and returns the
/// compiler's diagnostics when it refuses it.
fn mock_compile(dir: &Path, kernel: &str) -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env!("OUT_DIR"));
    let file = dir.join("kernel.cpp");
    std::fs::write(&file, kernel).unwrap();
    let cxx = std::env::var_os("CXX").unwrap_or_else(|| "c++".into());
    let mut cmd = Command::new(cxx);
    cmd.args(["-x", "c++", "-std=c++17", "-fsyntax-only"])
        .args(["-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas"])
        .arg("-I")
        .arg(root.join("kernels/mock/include"))
        .arg("-I")
        .arg(root.join("kernels"))
        .arg("-DSCALPEL_NO_NVTX")
        .arg("-include")
        .arg(out_dir.join("mock/mock_names.h"))
        .arg("-include")
        .arg(root.join("kernels/mock/mock_cuda.h"))
        .arg(&file);
    run(&mut cmd)
}

#[test]
fn a_launcher_that_disagrees_with_the_header_does_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    // The header declares `int scalpel_softcap(ScalpelStream, float *x, int64_t n, float cap)`.
    let kernel = |signature: &str| {
        format!(
            "#include \"common.cuh\"\n\
             extern \"C\" {signature} {{\n    (void)stream; (void)x; (void)n; (void)cap;\n    return 0;\n}}\n"
        )
    };
    let right = "int scalpel_softcap(ScalpelStream stream, float *x, int64_t n, float cap)";
    mock_compile(dir.path(), &kernel(right)).unwrap_or_else(|e| panic!("the header's own signature: {e}"));
    for wrong in [
        "int scalpel_softcap(ScalpelStream stream, float *x, int n, float cap)",
        "int scalpel_softcap(ScalpelStream stream, const float *x, int64_t n, float cap)",
        "int64_t scalpel_softcap(ScalpelStream stream, float *x, int64_t n, float cap)",
    ] {
        let e = mock_compile(dir.path(), &kernel(wrong)).err();
        let e = e.unwrap_or_else(|| panic!("`{wrong}` compiled against the header"));
        assert!(e.contains("softcap"), "`{wrong}`: the error names another function: {e}");
    }
}
