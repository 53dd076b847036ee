//! Malformed and hostile inputs, table-driven: GGUF headers and metadata, safetensors directories,
//! config.json, tokenizer.json, steering-vector files and the command line's own arguments. Each
//! case runs the real binary and must end with the expected error class and exit code (1 for
//! errors, 2 for clap's usage errors), never a panic — with peak memory measured: a file that
//! claims 10^12 elements must not make scalpel allocate for them.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::tiny::Tiny;
use scalpel::model::gguf::{Array, GgufHeader, GgufWriter, Value};

struct Outcome {
    code: i32,
    stderr: String,
    peak_rss_kib: i64,
}

/// Runs the binary and measures the child's peak resident memory (wait4's rusage).
fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let bin = std::env::var_os("SCALPEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_scalpel")));
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn scalpel");
    let mut err = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut err).expect("read stderr");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child we spawned (not reaped elsewhere).
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    std::mem::forget(child); // already reaped
    Outcome { code, stderr: err, peak_rss_kib: usage.ru_maxrss }
}

/// The expected end of a case: an error class (exit 1) or a usage error from clap (exit 2).
enum Expect {
    Error(&'static str, &'static str),
    Usage,
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    expect: Expect,
    /// Peak resident memory allowed, in MiB.
    max_mib: i64,
}

fn case(name: &'static str, args: Vec<String>, expect: Expect) -> Case {
    Case { name, args, env: vec![], expect, max_mib: 400 }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---- raw GGUF building blocks ----

fn str_bytes(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// A header with the given version, counts and raw body.
fn raw_gguf(version: u32, n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// One metadata pair of type u32.
fn kv_u32(key: &str, x: u32) -> Vec<u8> {
    let mut v = str_bytes(key);
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&x.to_le_bytes());
    v
}

/// One tensor info record.
fn tensor_info(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut v = str_bytes(name);
    v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend_from_slice(&d.to_le_bytes());
    }
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

/// The tiny model with its metadata edited (and tensors, unless `tensors` is false).
fn tiny_with(edit: impl FnOnce(&mut BTreeMap<String, Value>), tensors: bool) -> Vec<u8> {
    let t = Tiny::default();
    let h = GgufHeader::parse(&t.gguf(), Path::new("x")).unwrap();
    let mut meta = h.metadata;
    edit(&mut meta);
    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.meta(k, v.clone());
    }
    if tensors {
        t.add_tensors(&mut w, 5);
    }
    w.to_bytes()
}

fn control_vector(edit: impl FnOnce(&mut GgufWriter)) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("controlvector".into()));
    edit(&mut w);
    w.to_bytes()
}

fn st_file(tensors: &[(&str, safetensors::Dtype, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s)| {
            let bytes = s.iter().product::<usize>() * d.bitsize() / 8;
            (n.to_string(), *d, s.clone(), vec![0x3c; bytes])
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

const LLAMA_CONFIG: &str = r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":96,"vocab_size":262,"max_position_embeddings":64}"#;

#[test]
fn malformed_inputs_fail_cleanly_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str, bytes: &[u8]| -> String {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    };
    let hf_dir = |name: &str, files: &[(&str, &[u8])]| -> String {
        let p = d.join(name);
        std::fs::create_dir_all(&p).unwrap();
        for (f, b) in files {
            std::fs::write(p.join(f), b).unwrap();
        }
        p.to_string_lossy().into_owned()
    };
    let tiny = file("tiny.gguf", &Tiny::default().gguf());
    let tok_json = {
        let files = scalpel::model::ModelFiles::open(Some(&tiny)).unwrap();
        files.tokenizer.inner().to_string(false).unwrap()
    };
    let params = |p: &str| s(&["params", "-m", p]);
    let generate = |p: &str| s(&["generate", "-m", p, "-p", "hello", "-n", "2"]);
    let tok = |p: &str| s(&["tokenize", "-m", p, "hello"]);
    use Expect::*;

    let huge = 1u64 << 40;
    let mut cases = vec![
        // GGUF: the header
        case("empty file", params(&file("empty.gguf", b"")), Error("format", "magic")),
        case("wrong magic", params(&file("magic.gguf", b"GGUX\x03\0\0\0")), Error("format", "magic")),
        case("GGUF version 1", params(&file("v1.gguf", &raw_gguf(1, 0, 0, &[]))), Error("unsupported", "version 1")),
        case("GGUF version 99", params(&file("v99.gguf", &raw_gguf(99, 0, 0, &[]))), Error("format", "version 99")),
        case("big-endian GGUF", params(&file("be.gguf", &raw_gguf(3u32.swap_bytes(), 0, 0, &[]))), Error("unsupported", "big-endian")),
        case("header cut short", params(&file("cut.gguf", &raw_gguf(3, 0, 0, &[])[..12])), Error("format", "truncated")),
        case("2^60 metadata pairs", params(&file("kv.gguf", &raw_gguf(3, 0, 1 << 60, &[]))), Error("format", "metadata_kv_count")),
        case("2^60 tensors", params(&file("tn.gguf", &raw_gguf(3, 1 << 60, 0, &[]))), Error("format", "tensor_count")),
        case("a key claiming 2^40 bytes", params(&file("key.gguf", &raw_gguf(3, 0, 1, &[huge.to_le_bytes(), [0; 8]].concat()))), Error("format", "string claims")),
        case("an array claiming 2^40 strings", params(&file("arr.gguf", &raw_gguf(3, 0, 1, &[str_bytes("tokenizer.ggml.tokens"), 9u32.to_le_bytes().to_vec(), 8u32.to_le_bytes().to_vec(), huge.to_le_bytes().to_vec()].concat()))), Error("format", "array claims")),
        case("unknown value type", params(&file("vt.gguf", &raw_gguf(3, 0, 1, &[str_bytes("k"), 77u32.to_le_bytes().to_vec()].concat()))), Error("format", "unknown value type")),
        case("a bool that is 7", params(&file("bool.gguf", &raw_gguf(3, 0, 1, &[str_bytes("k"), 7u32.to_le_bytes().to_vec(), vec![7]].concat()))), Error("format", "bool has value 7")),
        case("a key twice", params(&file("dup.gguf", &raw_gguf(3, 0, 2, &[kv_u32("a", 1), kv_u32("a", 2)].concat()))), Error("format", "appears twice")),
        case("a key that is not UTF-8", params(&file("utf.gguf", &raw_gguf(3, 0, 1, &[2u64.to_le_bytes().to_vec(), vec![0xff, 0xfe], 4u32.to_le_bytes().to_vec(), 1u32.to_le_bytes().to_vec()].concat()))), Error("format", "UTF-8")),
        case("alignment 3", params(&file("align.gguf", &raw_gguf(3, 0, 1, &kv_u32("general.alignment", 3)))), Error("format", "general.alignment")),
        case("a tensor of 0 dims", params(&file("d0.gguf", &raw_gguf(3, 1, 0, &[tensor_info("t", &[], 0, 0), vec![0; 16]].concat()))), Error("format", "n_dims")),
        case("a tensor of 5 dims", params(&file("d5.gguf", &raw_gguf(3, 1, 0, &tensor_info("t", &[1, 1, 1, 1, 1], 0, 0)))), Error("format", "n_dims")),
        case("dims whose product overflows", params(&file("ovf.gguf", &raw_gguf(3, 1, 0, &tensor_info("t", &[1 << 32, 1 << 32], 0, 0)))), Error("format", "implausibly large")),
        Case { max_mib: 100, ..case("a tensor claiming 10^12 elements", params(&file("tera.gguf", &raw_gguf(3, 1, 0, &tensor_info("t", &[1_000_000, 1_000_000], 0, 0)))), Error("format", "past the end of the file")) },
        case("a Q4_0 row of 33", params(&file("q4.gguf", &raw_gguf(3, 1, 0, &tensor_info("t", &[33], 2, 0)))), Error("format", "not a multiple")),
        case("tensor type 99", params(&file("t99.gguf", &raw_gguf(3, 1, 0, &tensor_info("t", &[4], 99, 0)))), Error("unsupported", "type id 99")),
        case("an unaligned offset", params(&file("off.gguf", &[raw_gguf(3, 1, 0, &tensor_info("t", &[4], 0, 3)), vec![0; 64]].concat())), Error("format", "alignment")),
        case("a tensor past the end", params(&file("eof.gguf", &raw_gguf(3, 1, 0, &tensor_info("t", &[1024], 0, 0)))), Error("format", "past the end")),
        case("overlapping tensors", params(&file("ovl.gguf", &[raw_gguf(3, 2, 0, &[tensor_info("a", &[16], 0, 0), tensor_info("b", &[16], 0, 32)].concat()), vec![0; 256]].concat())), Error("format", "overlaps")),
        case("a tensor name twice", params(&file("tdup.gguf", &[raw_gguf(3, 2, 0, &[tensor_info("a", &[8], 0, 0), tensor_info("a", &[8], 0, 32)].concat()), vec![0; 256]].concat())), Error("format", "appears twice")),
        // GGUF: the metadata the model needs
        case("an unknown architecture", generate(&file("arch.gguf", &tiny_with(|m| { m.insert("general.architecture".into(), Value::Str("mamba".into())); }, true))), Error("unsupported", "architecture \"mamba\"")),
        case("no block_count", generate(&file("nobc.gguf", &tiny_with(|m| { m.remove("llama.block_count"); }, true))), Error("format", "llama.block_count: missing")),
        case("heads not a multiple of KV heads", generate(&file("gqa.gguf", &tiny_with(|m| { m.insert("llama.attention.head_count_kv".into(), Value::U32(3)); }, true))), Error("format", "KV head count")),
        case("a dimension given as a string", generate(&file("str.gguf", &tiny_with(|m| { m.insert("llama.embedding_length".into(), Value::Str("64".into())); }, true))), Error("format", "expected an unsigned integer")),
        case("no tokenizer", tok(&file("notok.gguf", &tiny_with(|m| m.retain(|k, _| !k.starts_with("tokenizer.")), true))), Error("tokenizer", "tokenizer.ggml.model")),
        case("tokenizer model bert", tok(&file("bert.gguf", &tiny_with(|m| { m.insert("tokenizer.ggml.model".into(), Value::Str("bert".into())); }, true))), Error("unsupported", "tokenizer model \"bert\"")),
        case("an unknown pre-tokenizer", tok(&file("pre.gguf", &tiny_with(|m| { m.insert("tokenizer.ggml.pre".into(), Value::Str("klingon".into())); }, true))), Error("unsupported", "pre-tokenizer \"klingon\"")),
        case("BOS outside the vocabulary", tok(&file("bos.gguf", &tiny_with(|m| { m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1 << 20)); }, true))), Error("format", "outside the")),
        case("token types of the wrong length", tok(&file("tt.gguf", &tiny_with(|m| { m.insert("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(vec![1, 1]))); }, true))), Error("format", "token_type")),
        case("a merge that is not a pair", tok(&file("mg.gguf", &tiny_with(|m| { m.insert("tokenizer.ggml.merges".into(), Value::Array(Array::Str(vec!["abc".into()]))); }, true))), Error("format", "not a pair")),
        case("shapes that contradict the config", generate(&file("shape.gguf", &{
            let mut w = Tiny { ffn: 80, ..Default::default() }.writer();
            Tiny::default().add_tensors(&mut w, 5);
            w.to_bytes()
        })), Error("format", "contradicts the config")),
        case("no weights at all", generate(&file("now.gguf", &tiny_with(|_| {}, false))), Error("format", "token_embd.weight")),
        // Hugging Face directories
        case("config.json that is not JSON", params(&hf_dir("cj", &[("config.json", b"{ nope")])), Error("format", "JSON")),
        case("model_type mamba", params(&hf_dir("mt", &[("config.json", br#"{"model_type":"mamba"}"#)])), Error("unsupported", "mamba")),
        case("config.json without hidden_size", params(&hf_dir("hs", &[("config.json", br#"{"model_type":"llama","num_hidden_layers":1}"#)])), Error("format", "hidden_size")),
        case("a hidden size of 10^12", params(&hf_dir("big", &[("config.json", br#"{"model_type":"llama","hidden_size":1000000000000,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":4,"vocab_size":4}"#)])), Error("format", "out of range")),
        case("no tokenizer.json", params(&hf_dir("nt", &[("config.json", LLAMA_CONFIG.as_bytes())])), Error("tokenizer", "tokenizer.json")),
        case("tokenizer.json that is garbage", params(&hf_dir("tg", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", b"[1,2,3]")])), Error("format", "tokenizer")),
        case("tokenizer.json that panics the tokenizers crate", params(&hf_dir("tp", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", &std::fs::read(common::repo_root().join("tests/fuzz_regressions/tokenizer_json/truncated-decoder.json")).unwrap())])), Error("format", "tokenizer")),
        case("no weights file", params(&hf_dir("nw", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes())])), Error("not-found", "model.safetensors")),
        Case { max_mib: 100, ..case("a safetensors header claiming 10^12 bytes", params(&hf_dir("sh", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes()), ("model.safetensors", &[1_000_000_000_000u64.to_le_bytes().to_vec(), b"{}".to_vec()].concat())])), Error("format", "safetensors header")) },
        case("a truncated safetensors file", params(&hf_dir("st", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes()), ("model.safetensors", &st_file(&[("model.embed_tokens.weight", safetensors::Dtype::F32, vec![262, 64])])[..600])])), Error("format", "safetensors header")),
        case("an index that is not JSON", params(&hf_dir("ij", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes()), ("model.safetensors.index.json", b"{")])), Error("format", "JSON")),
        case("an index escaping the directory", params(&hf_dir("ie", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes()), ("model.safetensors.index.json", br#"{"weight_map":{"a":"../../etc/passwd"}}"#)])), Error("format", "leaves the model directory")),
        case("an index that lies about a shard", params(&hf_dir("il", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes()), ("model.safetensors.index.json", br#"{"weight_map":{"model.embed_tokens.weight":"a.safetensors","model.norm.weight":"a.safetensors"}}"#), ("a.safetensors", &st_file(&[("model.embed_tokens.weight", safetensors::Dtype::F32, vec![262, 64])]))])), Error("format", "does not hold it")),
        case("weights stored as I64", generate(&hf_dir("i64", &[("config.json", LLAMA_CONFIG.as_bytes()), ("tokenizer.json", tok_json.as_bytes()), ("model.safetensors", &st_file(&[("model.embed_tokens.weight", safetensors::Dtype::I64, vec![262, 64])]))])), Error("unsupported", "I64")),
    ];

    // Steering-vector files
    let cv = |name: &str, bytes: Vec<u8>| -> Vec<String> {
        s(&["generate", "-m", &tiny, "-p", "hello", "-n", "2", "--steer", &file(name, &bytes)])
    };
    cases.extend([
        case("a steering file that is not GGUF", cv("cv1.gguf", b"hello".to_vec()), Error("format", "magic")),
        case(
            "a steering file of another architecture",
            cv("cv2.gguf", tiny_with(|_| {}, false)),
            Error("format", "controlvector"),
        ),
        case(
            "direction.0",
            cv(
                "cv3.gguf",
                control_vector(|w| {
                    w.tensor("direction.0", &[64], vec![1.0; 64]);
                }),
            ),
            Error("format", "layer 0"),
        ),
        case(
            "a tensor not named direction.N",
            cv(
                "cv4.gguf",
                control_vector(|w| {
                    w.tensor("bias.1", &[64], vec![1.0; 64]);
                }),
            ),
            Error("format", "direction.<layer>"),
        ),
        case(
            "a direction of the wrong width",
            cv(
                "cv5.gguf",
                control_vector(|w| {
                    w.tensor("direction.1", &[63], vec![1.0; 63]);
                }),
            ),
            Error("invalid", "hidden size is 64"),
        ),
        case(
            "a direction past the model's layers",
            cv(
                "cv6.gguf",
                control_vector(|w| {
                    w.tensor("direction.9", &[64], vec![1.0; 64]);
                }),
            ),
            Error("invalid", "past the model"),
        ),
        case(
            "a direction holding NaN",
            cv(
                "cv7.gguf",
                control_vector(|w| {
                    w.tensor("direction.1", &[64], vec![f32::NAN; 64]);
                }),
            ),
            Error("format", "NaN"),
        ),
        case(
            "a direction of zeros to ablate",
            s(&[
                "generate",
                "-m",
                &tiny,
                "-p",
                "hi",
                "--ablate",
                &file(
                    "cv8.gguf",
                    &control_vector(|w| {
                        w.tensor("direction.1", &[64], vec![0.0; 64]);
                    }),
                ),
            ]),
            Error("invalid", "is zero"),
        ),
    ]);

    // The command line itself
    let long = "hello world ".repeat(40);
    let out_exists = file("exists.safetensors", b"mine");
    cases.extend([
        case(
            "--top-p 0",
            s(&["generate", "-m", &tiny, "-p", "hi", "--top-p", "0"]),
            Error("invalid", "--top-p"),
        ),
        case(
            "--max-tokens not a number",
            s(&["generate", "-m", &tiny, "-p", "hi", "--max-tokens", "many"]),
            Usage,
        ),
        case("--device gpu", s(&["generate", "-m", &tiny, "-p", "hi", "--device", "gpu"]), Usage),
        case("an unknown subcommand", s(&["explode"]), Usage),
        case("an empty prompt", s(&["generate", "-m", &tiny, "-p", ""]), Error("invalid", "empty")),
        case(
            "a prompt past the context",
            s(&["generate", "-m", &tiny, "-p", &long]),
            Error("invalid", "context holds 64"),
        ),
        case(
            "a probe pattern matching nothing",
            s(&[
                "trace",
                "-m",
                &tiny,
                "-p",
                "hi",
                "-o",
                &d.join("t1.st").to_string_lossy(),
                "--points",
                "blocks.*.resid",
            ]),
            Error("invalid", "matches no point"),
        ),
        case(
            "--out that exists",
            s(&["trace", "-m", &tiny, "-p", "hi", "-o", &out_exists]),
            Error("invalid", "--force"),
        ),
        case(
            "--out in a missing directory",
            s(&["trace", "-m", &tiny, "-p", "hi", "-o", &d.join("no/dir/t.st").to_string_lossy()]),
            Error("invalid", "does not exist"),
        ),
        case(
            "a backwards layer range",
            s(&[
                "generate",
                "-m",
                &tiny,
                "-p",
                "hi",
                "--steer",
                &format!(
                    "{}@1-0",
                    file(
                        "cv9.gguf",
                        &control_vector(|w| {
                            w.tensor("direction.1", &[64], vec![1.0; 64]);
                        })
                    )
                ),
            ]),
            Error("invalid", "runs backwards"),
        ),
        case(
            "--position past the prompt",
            s(&["lens", "-m", &tiny, "-p", "hi", "--position", "40"]),
            Error("invalid", "--position 40"),
        ),
        case(
            "--layer past the model",
            s(&["neurons", "-m", &tiny, "-p", "hi", "--layer", "7"]),
            Error("invalid", "--layer 7"),
        ),
        case(
            "--neuron past the layer",
            s(&["neurons", "-m", &tiny, "-p", "hi", "--layer", "1", "--neuron", "96"]),
            Error("invalid", "--neuron 96"),
        ),
        case(
            "a --query word not in the prompt",
            s(&[
                "attention",
                "-m",
                &tiny,
                "-p",
                "hello world",
                "--find",
                "--query",
                "zebra",
                "--key",
                "hello",
            ]),
            Error("invalid", "zebra"),
        ),
        Case {
            env: vec![
                ("HF_HUB_OFFLINE".into(), "1".into()),
                ("HF_HOME".into(), d.join("hf").to_string_lossy().into_owned()),
            ],
            ..case(
                "a repo id offline and not cached",
                tok("nobody/nothing"),
                Error("not-found", "HF_HUB_OFFLINE"),
            )
        },
    ]);

    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let o = run(&args, &env);
        let ok = match &c.expect {
            Error(class, needle) => {
                o.code == 1
                    && o.stderr.contains(&format!("error[{class}]"))
                    && o.stderr.to_lowercase().contains(&needle.to_lowercase())
            }
            Usage => o.code == 2,
        } && !o.stderr.contains("panicked")
            && o.peak_rss_kib < c.max_mib * 1024;
        if !ok {
            failures.push(format!(
                "{}: exit {}, peak {} MiB, stderr: {}",
                c.name,
                o.code,
                o.peak_rss_kib / 1024,
                o.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
