//! Faults at run time: NaN and infinity in the residual stream (found where they first appear),
//! prompts past the context (refused or truncated, as asked), memory that cannot be had (said
//! before allocating), and Ctrl-C (what was generated is flushed; no file is left half-written).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tiny::Tiny;
use common::{assert_clean_failure, scalpel, stderr, stdout};
use scalpel::model::gguf::{GgufHeader, GgufWriter};

/// The tiny model with one tensor's values replaced.
fn tiny_poisoned(dir: &Path, tensor: &str, value: f32) -> String {
    let t = Tiny::default();
    let bytes = t.gguf();
    let h = GgufHeader::parse(&bytes, Path::new("x")).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &h.metadata {
        w.meta(k, v.clone());
    }
    for info in &h.tensors {
        let raw = &bytes[info.offset as usize..(info.offset + info.n_bytes) as usize];
        let mut data: Vec<f32> =
            raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        if info.name == tensor {
            data[3] = value;
        }
        w.tensor(&info.name, &info.shape(), data);
    }
    let p = dir.join(format!("poison-{value}.gguf"));
    std::fs::write(&p, w.to_bytes()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn nan_is_traced_to_the_point_where_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_poisoned(dir.path(), "blk.1.ffn_down.weight", f32::NAN);
    let o = scalpel(&["generate", "-m", &m, "-p", "hello", "-n", "3"]);
    assert_clean_failure(&o, "invalid", "NaN");
    let o = scalpel(&["generate", "-m", &m, "-p", "hello", "-n", "3", "--check-finite"]);
    assert_clean_failure(&o, "invalid", "first appear at blocks.1.mlp_out");
    let m = tiny_poisoned(dir.path(), "blk.0.attn_output.weight", f32::INFINITY);
    let o = scalpel(&[
        "trace",
        "-m",
        &m,
        "-p",
        "hello",
        "-o",
        dir.path().join("t.st").to_str().unwrap(),
        "--check-finite",
    ]);
    assert_clean_failure(&o, "invalid", "first appear at blocks.0.attn_out");
    assert!(!dir.path().join("t.st").exists());
    // A healthy model passes the check.
    let ok = dir.path().join("ok.gguf");
    std::fs::write(&ok, Tiny::default().gguf()).unwrap();
    let o =
        scalpel(&["generate", "-m", ok.to_str().unwrap(), "-p", "hello", "-n", "3", "--check-finite", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn long_prompts_are_refused_or_truncated_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("tiny.gguf");
    std::fs::write(&m, Tiny::default().gguf()).unwrap();
    let m = m.to_str().unwrap();
    let long = "a b c d e f g h ".repeat(12); // ~190 tokens, context 64
    assert_clean_failure(
        &scalpel(&["generate", "-m", m, "-p", &long, "-n", "4"]),
        "invalid",
        "--overflow truncate",
    );
    let o = scalpel(&["generate", "-m", m, "-p", &long, "-n", "4", "--overflow", "truncate", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("keeping the last"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let n = v["prompt_ids"].as_array().unwrap().len();
    assert!(n + 4 <= 64, "{n} prompt tokens leave room for 4 more");
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 4);
    let o = scalpel(&["lens", "-m", m, "-p", &long, "--overflow", "truncate", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn memory_that_cannot_be_had_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    // 2 layers × 2 × 16.7M positions × 1024 floats: 275 GB of KV cache.
    let t = Tiny { hidden: 1024, heads: 2, kv_heads: 2, context: 1 << 24, ..Default::default() };
    let m = dir.path().join("wide.gguf");
    std::fs::write(&m, t.gguf()).unwrap();
    let o =
        scalpel(&["generate", "-m", m.to_str().unwrap(), "-p", "hello", "-n", "16000000", "--device", "cpu"]);
    assert_clean_failure(&o, "out-of-memory", "KV cache");
    assert!(stderr(&o).contains("GiB"), "{}", stderr(&o));
}

/// Starts `cmd`, waits until `ready` holds for what it has printed to stdout so far (or the
/// timeout passes), sends SIGINT, and returns (exit code, stdout, stderr).
fn interrupt_when(
    mut cmd: Command,
    ready: impl Fn(&str) -> bool,
    timeout: Duration,
) -> (i32, String, String) {
    use std::sync::{Arc, Mutex};
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let start = std::time::Instant::now();
    while !ready(&out.lock().unwrap()) && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    reader.join().unwrap();
    let out = out.lock().unwrap().clone();
    (code, out, err)
}

fn bin() -> Command {
    Command::new(std::env::var_os("SCALPEL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_scalpel").into()))
}

#[test]
fn ctrl_c_flushes_what_was_generated() {
    let mut cmd = bin();
    cmd.args(["generate", "-p", "Once upon a time", "-n", "4000", "-t", "0.8", "--device", "cpu"]);
    // Interrupt once some text has streamed out.
    let (code, out, err) = interrupt_when(cmd, |o| o.len() > 20, Duration::from_secs(120));
    assert_eq!(code, 130, "stderr: {err}");
    assert!(out.trim().len() > 10, "the text generated so far is printed: {out:?}");
    assert!(err.contains("error[interrupted]") && err.contains("stopped after"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_during_a_trace_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let mut cmd = bin();
    // About 3000 tokens: a prefill of many seconds on any CPU; Ctrl-C stops it between layers.
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(300);
    cmd.args(["trace", "-p", &prompt, "-o", out.to_str().unwrap(), "--device", "cpu"]);
    let (code, _, err) = interrupt_when(cmd, |_| false, Duration::from_millis(1500));
    assert_eq!(code, 130, "stderr: {err}");
    assert!(err.contains("error[interrupted]"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}
