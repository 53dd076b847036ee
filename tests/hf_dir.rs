//! Hugging Face directories and repo ids: the same weights through safetensors give the same
//! results as through GGUF; sharded checkpoints, bf16 storage, the local HF cache, and Llama 3's
//! RoPE scaling read from config.json, and repo ids downloaded from a (local, mock) hub.

mod common;

use common::hf::{Storage, write_hf_dir};
use common::tiny::Tiny;
use common::{golden_dir, open_known, scalpel, scalpel_env, stderr, stdout};
use scalpel::backend::cpu::Cpu;
use scalpel::forward::{Logits, Model, WeightMode};
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
    // The GGUF's weights kept as stored (Q4_1, Q8_0) give the dequantized products up to summation
    // order; dequantized on load they are the same f32 weights in the same layout as the
    // safetensors copy: bit-identical logits.
    let stored = logits(&gguf, &ids);
    let mut gguf = gguf;
    gguf.weight_mode = WeightMode::F32;
    let (a, b) = (logits(&hf, &ids), logits(&gguf, &ids));
    assert_eq!(a, b);
    common::assert_rows_close("stored vs f32 weights", &stored, &b, gguf.config.vocab_size, 1e-5);
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

/// A stand-in for the Hugging Face Hub's file endpoint (`/{repo}/resolve/main/{file}`), speaking
/// just enough HTTP for hf-hub: ranged GETs answered with etag, x-repo-commit and Content-Range.
mod mock_hub {
    use std::collections::{HashMap, HashSet};
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    pub const COMMIT: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b";

    #[derive(Clone, Debug)]
    pub struct Request {
        pub path: String,
        pub authorization: Option<String>,
    }

    pub struct Hub {
        pub url: String,
        pub requests: Arc<Mutex<Vec<Request>>>,
    }

    /// Serves `files` for `repo`; names in `broken` answer 500.
    pub fn serve(repo: &str, files: HashMap<String, Vec<u8>>, broken: HashSet<String>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let prefix = format!("/{repo}/resolve/main/");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, &prefix, &files, &broken, &log);
            }
        });
        Hub { url, requests }
    }

    fn answer(
        mut stream: TcpStream,
        prefix: &str,
        files: &HashMap<String, Vec<u8>>,
        broken: &HashSet<String>,
        log: &Mutex<Vec<Request>>,
    ) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut range, mut authorization) = (None, None);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            match name.to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_string()),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
        log.lock().unwrap().push(Request { path: path.clone(), authorization });
        let name = path.strip_prefix(prefix).unwrap_or("");
        let reply = |status: &str, headers: String, body: &[u8]| {
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                body.len()
            );
            let mut out = head.into_bytes();
            out.extend_from_slice(body);
            let _ = (&stream).write_all(&out);
        };
        if broken.contains(name) {
            return reply("500 Internal Server Error", String::new(), b"upstream exploded");
        }
        let Some(data) = files.get(name) else {
            return reply("404 Not Found", "X-Error-Code: EntryNotFound\r\n".into(), b"not found");
        };
        // "bytes=S-" or "bytes=S-E"; hf-hub always sends one.
        let spec = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).unwrap_or("0-");
        let (s, e) = spec.split_once('-').unwrap();
        let start: usize = s.parse().unwrap();
        let end = if e.is_empty() { data.len() - 1 } else { e.parse::<usize>().unwrap().min(data.len() - 1) };
        let etag = format!("{:016x}{:08x}", fnv1a(name.as_bytes()) ^ fnv1a(data), data.len());
        let headers = format!(
            "ETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{end}/{}\r\n",
            data.len()
        );
        reply("206 Partial Content", headers, &data[start..=end]);
        stream.flush().ok();
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf29ce484222325, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    }
}

/// Runs scalpel against a hub, with no proxy in the way and the cache in `home`.
fn scalpel_hub(args: &[&str], home: &std::path::Path, endpoint: &str) -> std::process::Output {
    let mut cmd = common::scalpel_command(args);
    for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(proxy);
    }
    cmd.env_remove("HF_HUB_OFFLINE").env_remove("HF_HUB_CACHE");
    cmd.env("HF_HOME", home).env("HF_ENDPOINT", endpoint).env("HF_TOKEN", "hf_test_token");
    cmd.output().expect("scalpel runs")
}

#[test]
fn repo_ids_download_into_the_hf_cache_and_then_work_offline() {
    let dir = tempfile::tempdir().unwrap();
    let gguf_path = dir.path().join("tiny.gguf");
    std::fs::write(&gguf_path, Tiny::default().gguf()).unwrap();
    let gguf = ModelFiles::open(Some(gguf_path.to_str().unwrap())).unwrap();
    let src = dir.path().join("hf");
    std::fs::create_dir(&src).unwrap();
    write_hf_dir(&gguf, &src, Storage::F32, 2);
    let files: std::collections::HashMap<String, Vec<u8>> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    assert!(files.contains_key("model.safetensors.index.json"), "{:?}", files.keys());
    let args = ["generate", "-m", "test-org/tiny-llama", "-p", "hello", "-n", "4", "--json", "-q"];
    let local = scalpel(&["generate", "-m", src.to_str().unwrap(), "-p", "hello", "-n", "4", "--json", "-q"]);
    assert!(local.status.success(), "{}", stderr(&local));
    let ids = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&stdout(o)).unwrap()["generated_ids"].clone()
    };

    let hub = mock_hub::serve("test-org/tiny-llama", files.clone(), Default::default());
    let home = tempfile::tempdir().unwrap();
    let o = scalpel_hub(&args, home.path(), &hub.url);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&o), ids(&local), "the downloaded model generates what the directory does");
    let requests = hub.requests.lock().unwrap().clone();
    for name in files.keys() {
        assert!(requests.iter().any(|r| r.path.ends_with(&format!("/{name}"))), "{name} never fetched");
    }
    assert!(
        requests.iter().all(|r| r.authorization.as_deref() == Some("Bearer hf_test_token")),
        "{requests:?}"
    );
    let snapshot = home.path().join("hub/models--test-org--tiny-llama/snapshots").join(mock_hub::COMMIT);
    for (name, data) in &files {
        assert_eq!(&std::fs::read(snapshot.join(name)).unwrap(), data, "{name} in the cache");
    }

    // Everything is cached now: no network needed (nothing listens on port 1).
    let o = scalpel_hub(&args, home.path(), "http://127.0.0.1:1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&o), ids(&local));

    // A shard the hub cannot serve: a clear error naming it, and no half-written snapshot file.
    let shard = "model-00002-of-00002.safetensors".to_string();
    assert!(files.contains_key(&shard));
    let hub = mock_hub::serve("test-org/tiny-llama", files, [shard.clone()].into());
    let home = tempfile::tempdir().unwrap();
    let o = scalpel_hub(&args, home.path(), &hub.url);
    common::assert_clean_failure(&o, "not-found", &shard);
    assert!(stderr(&o).contains("500"), "{}", stderr(&o));
    let snapshot = home.path().join("hub/models--test-org--tiny-llama/snapshots").join(mock_hub::COMMIT);
    assert!(!snapshot.join(&shard).exists());

    // No hub at all and nothing cached: the error says what could not be fetched.
    let o = scalpel_hub(&["tokenize", "-m", "nobody/nothing", "hi"], home.path(), "http://127.0.0.1:1");
    common::assert_clean_failure(&o, "not-found", "config.json");
}
