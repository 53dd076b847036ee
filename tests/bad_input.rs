//! Bad input gets a clear error and exit code 1, never a panic: malformed and lying model files,
//! unknown architectures and tensor types, missing tokenizers, bad prompts and paths.

mod common;

use std::path::{Path, PathBuf};

use common::tiny::Tiny;
use common::{assert_clean_failure, known_model, scalpel, stderr};
use scalpel::model::gguf::GgufHeader;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// Byte offset of tensor `name`'s info record fields: (type id offset, data offset offset).
fn tensor_field_offsets(bytes: &[u8], name: &str) -> (usize, usize) {
    let needle = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("tensor name in header");
    let dims_at = at + needle.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    let type_at = dims_at + 4 + 8 * n_dims;
    (type_at, type_at + 4)
}

fn tiny_file(dir: &Path) -> String {
    write(dir, "tiny.gguf", &Tiny::default().gguf())
}

#[test]
fn the_tiny_fixture_itself_runs() {
    let dir = tempfile::tempdir().unwrap();
    let o = scalpel(&["generate", "-m", &tiny_file(dir.path()), "-p", "hello world", "-n", "4", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn missing_paths_and_names() {
    let o = scalpel(&["tokenize", "-m", "/no/such/model.gguf", "x"]);
    assert_clean_failure(&o, "not-found", "no such file");
    let o = scalpel(&["tokenize", "-m", "", "x"]);
    assert_clean_failure(&o, "invalid", "empty");
}

#[test]
fn not_a_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "fake.gguf", b"this is not a model file at all");
    assert_clean_failure(&scalpel(&["params", "-m", &p]), "format", "magic");
    let p = write(dir.path(), "notes.txt", b"hello");
    assert_clean_failure(&scalpel(&["params", "-m", &p]), "unsupported", "not a GGUF");
}

#[test]
fn truncated_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(known_model("smollm2-135m")).unwrap();
    // Cut inside the metadata (the vocabulary), then inside the tensor data.
    let p = write(dir.path(), "head.gguf", &full[..1 << 20]);
    assert_clean_failure(&scalpel(&["params", "-m", &p]), "format", "truncated");
    let p = write(dir.path(), "body.gguf", &full[..full.len() / 2]);
    let o = scalpel(&["params", "-m", &p]);
    assert_clean_failure(&o, "format", "past the end of the file");
    assert!(stderr(&o).contains("blk."), "names the tensor: {}", stderr(&o));
}

#[test]
fn a_tensor_whose_offset_lies() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Tiny::default().gguf();
    let (_, off) = tensor_field_offsets(&bytes, "blk.1.ffn_up.weight");
    bytes[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let p = write(dir.path(), "lying.gguf", &bytes);
    let o = scalpel(&["params", "-m", &p]);
    assert_clean_failure(&o, "format", "blk.1.ffn_up.weight");
}

#[test]
fn overlapping_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Tiny::default().gguf();
    let (_, off) = tensor_field_offsets(&bytes, "blk.0.attn_norm.weight");
    bytes[off..off + 8].copy_from_slice(&0u64.to_le_bytes()); // onto token_embd's bytes
    let p = write(dir.path(), "overlap.gguf", &bytes);
    assert_clean_failure(&scalpel(&["params", "-m", &p]), "format", "overlaps");
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny { arch: "rwkv6", ..Default::default() };
    let p = write(dir.path(), "rwkv.gguf", &t.gguf());
    assert_clean_failure(
        &scalpel(&["generate", "-m", &p, "-p", "hi"]),
        "unsupported",
        "architecture \"rwkv6\"",
    );
}

#[test]
fn unknown_and_unsupported_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Tiny::default().gguf();
    let (ty, _) = tensor_field_offsets(&bytes, "blk.0.ffn_gate.weight");
    bytes[ty..ty + 4].copy_from_slice(&99u32.to_le_bytes());
    let p = write(dir.path(), "unknown-type.gguf", &bytes);
    assert_clean_failure(&scalpel(&["params", "-m", &p]), "unsupported", "type id 99");

    // Q2_K is a real type without a dequantizer: the header parses, loading the tensor fails.
    let t = Tiny { hidden: 256, heads: 4, kv_heads: 4, ffn: 256, ..Default::default() };
    let mut bytes = t.gguf();
    let (ty, _) = tensor_field_offsets(&bytes, "blk.1.attn_q.weight");
    bytes[ty..ty + 4].copy_from_slice(&10u32.to_le_bytes());
    let p = write(dir.path(), "q2k.gguf", &bytes);
    let o = scalpel(&["params", "-m", &p]);
    assert!(o.status.success(), "listing works: {}", stderr(&o));
    assert_clean_failure(&scalpel(&["generate", "-m", &p, "-p", "hi"]), "unsupported", "Q2_K");
}

#[test]
fn missing_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::default();
    let full = t.gguf();
    let h = GgufHeader::parse(&full, Path::new("x")).unwrap();
    // Rebuild the file without any tokenizer.* key.
    let mut w = scalpel::model::gguf::GgufWriter::new();
    for (k, v) in &h.metadata {
        if !k.starts_with("tokenizer.") {
            w.meta(k, v.clone());
        }
    }
    t.add_tensors(&mut w, 1);
    let p = write(dir.path(), "no-tok.gguf", &w.to_bytes());
    assert_clean_failure(&scalpel(&["tokenize", "-m", &p, "hi"]), "tokenizer", "tokenizer.ggml.model");
}

#[test]
fn shapes_that_contradict_the_config_and_missing_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::default();
    let mut w = Tiny { ffn: 80, ..Default::default() }.writer(); // the tensors say 96
    t.add_tensors(&mut w, 1);
    let p = write(dir.path(), "shape.gguf", &w.to_bytes());
    assert_clean_failure(&scalpel(&["generate", "-m", &p, "-p", "hi"]), "format", "contradicts the config");

    let full = t.gguf();
    let h = GgufHeader::parse(&full, Path::new("x")).unwrap();
    let mut w = scalpel::model::gguf::GgufWriter::new();
    for (k, v) in &h.metadata {
        w.meta(k, v.clone());
    }
    // Same metadata, tensors of layer 0 only.
    let mut r = common::tiny::Lcg(3);
    let (d, f, v, hd) = (t.hidden, t.ffn, t.vocab_size(), t.head_dim());
    w.tensor("token_embd.weight", &[v, d], r.vec(v * d, 1.0));
    w.tensor("output_norm.weight", &[d], r.vec(d, 1.0));
    for (n, s) in [
        ("attn_norm", vec![d]),
        ("attn_q", vec![t.heads * hd, d]),
        ("attn_k", vec![t.kv_heads * hd, d]),
        ("attn_v", vec![t.kv_heads * hd, d]),
        ("attn_output", vec![d, t.heads * hd]),
        ("ffn_norm", vec![d]),
        ("ffn_gate", vec![f, d]),
        ("ffn_up", vec![f, d]),
        ("ffn_down", vec![d, f]),
    ] {
        let n_el = s.iter().product();
        w.tensor(&format!("blk.0.{n}.weight"), &s, r.vec(n_el, 0.1));
    }
    let p = write(dir.path(), "missing.gguf", &w.to_bytes());
    assert_clean_failure(&scalpel(&["generate", "-m", &p, "-p", "hi"]), "format", "blk.1.attn_norm.weight");
}

#[test]
fn bad_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_file(dir.path());
    assert_clean_failure(&scalpel(&["generate", "-m", &tiny, "-p", ""]), "invalid", "empty");
    // The tiny model's context holds 64 tokens.
    let long = "a b c d e f g h ".repeat(10);
    assert_clean_failure(&scalpel(&["generate", "-m", &tiny, "-p", &long]), "invalid", "context holds 64");
    assert_clean_failure(
        &scalpel(&[
            "trace",
            "-m",
            &tiny,
            "-p",
            &long,
            "-o",
            dir.path().join("t.safetensors").to_str().unwrap(),
        ]),
        "invalid",
        "context",
    );
    // No chat template in the tiny model.
    assert_clean_failure(
        &scalpel(&["generate", "-m", &tiny, "-p", "hi", "--chat"]),
        "invalid",
        "no chat template",
    );
}

#[test]
fn bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_file(dir.path());
    assert_clean_failure(
        &scalpel(&["generate", "-m", &tiny, "-p", "hi", "--top-p", "1.5"]),
        "invalid",
        "--top-p",
    );
    assert_clean_failure(
        &scalpel(&["generate", "-m", &tiny, "-p", "hi", "--temperature=-1"]),
        "invalid",
        "--temperature",
    );
    let out = dir.path().join("t.safetensors");
    assert_clean_failure(
        &scalpel(&[
            "trace",
            "-m",
            &tiny,
            "-p",
            "hi",
            "-o",
            out.to_str().unwrap(),
            "--points",
            "blocks.9.resid_post",
        ]),
        "invalid",
        "layers 0..1",
    );
    assert_clean_failure(
        &scalpel(&["trace", "-m", &tiny, "-p", "hi", "-o", out.to_str().unwrap(), "--points", "resid"]),
        "invalid",
        "matches no point",
    );
    assert!(!out.exists());
    // clap's own errors exit with 2.
    assert_eq!(scalpel(&["generate", "--max-tokens", "many", "-p", "x"]).status.code(), Some(2));
}

#[test]
fn unwritable_output() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_file(dir.path());
    let out: PathBuf = dir.path().join("no/such/dir/out.safetensors");
    assert_clean_failure(
        &scalpel(&["trace", "-m", &tiny, "-p", "hi", "-o", out.to_str().unwrap()]),
        "invalid",
        "does not exist",
    );
    let o = scalpel(&["trace", "-m", &tiny, "-p", "hi", "-o", dir.path().to_str().unwrap()]);
    assert_clean_failure(&o, "invalid", "exists");
}

#[test]
fn safetensors_directories_with_problems() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    assert_clean_failure(&scalpel(&["params", "-m", d.to_str().unwrap()]), "format", "config.json");
    std::fs::write(d.join("config.json"), r#"{"model_type": "mamba", "hidden_size": 8}"#).unwrap();
    assert_clean_failure(&scalpel(&["params", "-m", d.to_str().unwrap()]), "unsupported", "mamba");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 262}"#,
    )
    .unwrap();
    assert_clean_failure(&scalpel(&["params", "-m", d.to_str().unwrap()]), "tokenizer", "tokenizer.json");
    std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
    assert_clean_failure(&scalpel(&["params", "-m", d.to_str().unwrap()]), "format", "tokenizer");
    // A truncated safetensors file.
    let src = tempfile::tempdir().unwrap();
    let gguf = write(src.path(), "tiny.gguf", &Tiny::default().gguf());
    let files = scalpel::model::ModelFiles::open(Some(&gguf)).unwrap();
    common::hf::write_hf_dir(&files, d, common::hf::Storage::F32, 1);
    let st = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &st[..st.len() - 100]).unwrap();
    assert_clean_failure(&scalpel(&["params", "-m", d.to_str().unwrap()]), "format", "safetensors header");
}

#[test]
fn cuda_requests_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_file(dir.path());
    let o = scalpel(&["generate", "-m", &tiny, "-p", "hi", "--device", "cuda"]);
    // Without a GPU (or without the CUDA backend) the answer is a device error, not a crash.
    if !o.status.success() {
        assert_clean_failure(&o, "device", "cuda");
    }
}

/// A tokenizer may know more ids than the embedding table has rows (added tokens); the forward pass
/// refuses them before any backend gathers rows, since a GPU gather would read past the table.
#[test]
fn token_ids_past_the_embedding_table_are_an_error() {
    use scalpel::forward::{Logits, Model};
    use scalpel::probe::Probes;
    let dir = tempfile::tempdir().unwrap();
    let files = scalpel::model::ModelFiles::open(Some(&tiny_file(dir.path()))).unwrap();
    let model = Model::load(scalpel::backend::cpu::Cpu, &files).unwrap();
    let vocab = files.config.vocab_size as u32;
    let mut cache = model.new_cache(4).unwrap();
    let err = model.forward(&[1, vocab, 2], 0, &mut cache, &mut Probes::none(), Logits::Last).unwrap_err();
    assert_eq!(err.class(), "invalid");
    assert!(
        err.to_string().contains(&format!("token id {vocab} is outside the vocabulary of {vocab}")),
        "{err}"
    );
    assert!(model.forward(&[1, vocab - 1], 0, &mut cache, &mut Probes::none(), Logits::Last).is_ok());
}
