//! Hugging Face directories and repo ids: the same weights through safetensors give the same
//! results as through GGUF; sharded checkpoints, bf16 storage, the local HF cache, and Llama 3's
//! RoPE scaling read from config.json.

mod common;

use common::hf::{Storage, write_hf_dir};
use common::tiny::Tiny;
use common::{golden_dir, open_known, scalpel_env, stderr, stdout};
use scalpel::backend::cpu::Cpu;
use scalpel::forward::{Logits, Model};
use scalpel::model::{Config, ModelFiles};
use scalpel::probe::Probes;

fn logits(files: &ModelFiles, ids: &[u32]) -> Vec<f32> {
    let model = Model::load(Cpu, files).unwrap();
    let mut cache = model.new_cache(ids.len()).unwrap();
    model.forward(ids, 0, &mut cache, &mut Probes::none(), Logits::All).unwrap().data
}

#[test]
fn default_model_as_safetensors_matches_the_gguf_exactly() {
    let gguf = open_known("smollm2-135m");
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(&gguf, dir.path(), Storage::F32, 1);
    let hf = ModelFiles::open(Some(dir.path().to_str().unwrap())).unwrap();
    assert_eq!(hf.weights.format_name(), "safetensors");
    for text in ["The capital of France is", "中国的首都是"] {
        assert_eq!(hf.tokenizer.encode(text).unwrap(), gguf.tokenizer.encode(text).unwrap());
    }
    assert_eq!(
        hf.tokenizer.apply_chat_template("hi").unwrap(),
        gguf.tokenizer.apply_chat_template("hi").unwrap()
    );
    assert_eq!(hf.config.eos_token_ids, gguf.config.eos_token_ids);
    let ids = gguf.tokenizer.encode("The capital of France is").unwrap();
    // Same f32 weights in the same layout: bit-identical logits.
    assert_eq!(logits(&hf, &ids), logits(&gguf, &ids));
}

#[test]
fn sharded_bf16_checkpoint_loads() {
    let dir = tempfile::tempdir().unwrap();
    let gguf_path = dir.path().join("tiny.gguf");
    std::fs::write(&gguf_path, Tiny::default().gguf()).unwrap();
    let gguf = ModelFiles::open(Some(gguf_path.to_str().unwrap())).unwrap();
    let hf_dir = dir.path().join("hf");
    std::fs::create_dir(&hf_dir).unwrap();
    write_hf_dir(&gguf, &hf_dir, Storage::Bf16, 3);
    assert!(hf_dir.join("model-00003-of-00003.safetensors").is_file());
    let hf = ModelFiles::open(Some(hf_dir.to_str().unwrap())).unwrap();
    assert_eq!(hf.weights.params().len(), gguf.weights.params().len());
    let ids = gguf.tokenizer.encode("hello world").unwrap();
    let (a, b) = (logits(&hf, &ids), logits(&gguf, &ids));
    let vocab = gguf.config.vocab_size;
    // bf16 storage rounds every weight to 8 bits of mantissa: close, not equal.
    common::assert_rows_close("bf16 logits", &a, &b, vocab, 2e-2);
    assert_ne!(a, b);
}

#[test]
fn repo_ids_resolve_from_the_local_hf_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gguf_path = dir.path().join("tiny.gguf");
    std::fs::write(&gguf_path, Tiny::default().gguf()).unwrap();
    let gguf = ModelFiles::open(Some(gguf_path.to_str().unwrap())).unwrap();
    let repo = home.path().join("hub/models--test-org--tiny-llama");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    write_hf_dir(&gguf, &snap, Storage::F32, 1);
    let env = [("HF_HOME", home.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let o = scalpel_env(
        &["generate", "-m", "test-org/tiny-llama", "-p", "hello", "-n", "3", "--json", "-q"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"generated_ids\""));

    std::fs::remove_file(snap.join("tokenizer.json")).unwrap();
    let o = scalpel_env(&["tokenize", "-m", "test-org/tiny-llama", "hello"], &env);
    common::assert_clean_failure(&o, "not-found", "tokenizer.json");
    let o = scalpel_env(&["tokenize", "-m", "nobody/nothing", "hello"], &env);
    common::assert_clean_failure(&o, "not-found", "HF_HUB_OFFLINE");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    let text = std::fs::read_to_string(golden_dir().join("rope_llama3.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: Vec<f32> =
        golden["inv_freq"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": { "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192 },
        "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]
    });
    let c = Config::from_hf(std::path::Path::new("config.json"), &config, None).unwrap();
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    let got = &c.rope_inv_freq[0];
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-6 * b.abs(), "inv_freq[{i}]: {a} vs {b}");
    }
    // The scaling really changed the low frequencies.
    assert!(want.last().unwrap() < &(1.0 / 500000f32.powf(126.0 / 128.0)));
}
