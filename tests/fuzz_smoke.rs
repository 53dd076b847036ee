//! A short, deterministic fuzz run on stable Rust (the long runs use cargo-fuzz, see fuzz/): every
//! fuzz entry point gets its seeds — real default-model headers, the tiny fixture, control vectors,
//! chat templates, tokenizer.json, a safetensors directory — and thousands of mutations of them
//! (truncations, bit flips, huge length fields, spliced bytes), and must never panic. Inputs that
//! once crashed live in tests/fuzz_regressions/<target>/ and are replayed first.
//!
//! SCALPEL_WRITE_SEEDS=DIR writes the seeds as cargo-fuzz corpora (DIR/<target>/seed-N).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use common::tiny::{Lcg, Tiny};
use common::{known_model, repo_root};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("gguf_header", scalpel::fuzz::gguf_header),
    ("gguf_model", scalpel::fuzz::gguf_model),
    ("control_vector", scalpel::fuzz::control_vector),
    ("safetensors_dir", scalpel::fuzz::safetensors_dir),
    ("chat_template", scalpel::fuzz::chat_template),
    ("tokenizer_json", scalpel::fuzz::tokenizer_json),
];

fn head(path: &Path, n: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[..n.min(bytes.len())].to_vec()
}

/// Length-prefixed parts, as scalpel::fuzz::safetensors_dir splits its input.
fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &parts[..parts.len() - 1] {
        out.extend_from_slice(&(p.len() as u16).to_le_bytes());
        out.extend_from_slice(p);
    }
    out.extend_from_slice(parts[parts.len() - 1]);
    out
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let smol = known_model("smollm2-135m");
    let tiny = Tiny { hidden: 32, heads: 2, kv_heads: 1, ffn: 48, layers: 1, ..Default::default() }.gguf();
    match target {
        "gguf_header" | "gguf_model" => vec![tiny, head(&smol, 4096), head(&smol, 1 << 16)],
        "control_vector" => {
            let mut w = scalpel::model::gguf::GgufWriter::new();
            w.meta("general.architecture", scalpel::model::gguf::Value::Str("controlvector".into()))
                .tensor("direction.1", &[8], vec![0.5; 8])
                .tensor("direction.2", &[8], vec![-0.25; 8]);
            vec![w.to_bytes()]
        }
        "safetensors_dir" => {
            let config = br#"{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"vocab_size":4}"#;
            let index = br#"{"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors","model.norm.weight":"model-00002-of-00002.safetensors"}}"#;
            let shard = |name: &str, shape: Vec<usize>| {
                let n: usize = shape.iter().product();
                let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &data).unwrap();
                safetensors::serialize(vec![(name.to_string(), view)], None).unwrap()
            };
            let a = shard("model.embed_tokens.weight", vec![4, 8]);
            let b = shard("model.norm.weight", vec![8]);
            vec![framed(&[config, index, &a, &b])]
        }
        "chat_template" => {
            let files = common::open_known("smollm2-135m");
            vec![
                files.tokenizer.chat_template().unwrap().as_bytes().to_vec(),
                scalpel::model::tokenizer::GEMMA_CHAT_TEMPLATE.as_bytes().to_vec(),
                b"{% for i in range(100000000) %}{{ i }}{% endfor %}".to_vec(),
                b"{{ 'x' * 100000 }}{% raise_exception('no') %}".to_vec(),
            ]
        }
        "tokenizer_json" => {
            let files = common::open_known("smollm2-135m");
            let json = files.tokenizer.inner().to_string(false).unwrap();
            vec![
                json.as_bytes()[..json.len().min(200_000)].to_vec(),
                br#"{"model":{"type":"BPE","vocab":{},"merges":[]}}"#.to_vec(),
            ]
        }
        _ => unreachable!(),
    }
}

fn mutate(seed: &[u8], r: &mut Lcg) -> Vec<u8> {
    let mut v = seed.to_vec();
    let pick = |r: &mut Lcg, n: usize| ((r.next_f32() + 1.0) * 0.5 * n as f32) as usize % n.max(1);
    match pick(r, 5) {
        0 => v.truncate(pick(r, v.len() + 1)),
        1 => {
            for _ in 0..1 + pick(r, 8) {
                if !v.is_empty() {
                    let i = pick(r, v.len());
                    v[i] ^= 1 << pick(r, 8);
                }
            }
        }
        2 => {
            // A length or count field claiming far more than is there.
            if v.len() >= 8 {
                let i = pick(r, v.len() - 7);
                let huge = [u64::MAX, 1 << 40, 1 << 33, 0x7fff_ffff, 0][pick(r, 5)];
                v[i..i + 8].copy_from_slice(&huge.to_le_bytes());
            }
        }
        3 => {
            if !v.is_empty() {
                let (a, b) = (pick(r, v.len()), pick(r, v.len()));
                let chunk = v[a.min(b)..a.max(b)].to_vec();
                let at = pick(r, v.len());
                v.splice(at..at, chunk);
            }
        }
        _ => {
            if !v.is_empty() {
                let i = pick(r, v.len());
                v[i] = [0, 0xff, b'{', b'}', b'"', 0x80][pick(r, 6)];
            }
        }
    }
    v
}

fn run(name: &str, f: Target, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let dir = std::env::temp_dir().join("scalpel-fuzz-crashes");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}", input.len()));
        std::fs::write(&path, input).unwrap();
        panic!(
            "{name} panicked on an input of {} bytes (saved to {}); add it to tests/fuzz_regressions/{name}/",
            input.len(),
            path.display()
        );
    }
}

#[test]
fn regressions_stay_fixed() {
    for (name, f) in TARGETS {
        let dir = repo_root().join("tests/fuzz_regressions").join(name);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries {
                let p = e.unwrap().path();
                run(name, f, &std::fs::read(&p).unwrap());
            }
        }
    }
}

#[test]
fn mutated_seeds_never_panic() {
    let budget = Duration::from_secs(
        std::env::var("SCALPEL_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4),
    );
    for (name, f) in TARGETS {
        let seeds = seeds(name);
        if let Ok(dir) = std::env::var("SCALPEL_WRITE_SEEDS") {
            let d = Path::new(&dir).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
            }
        }
        let mut r = Lcg(0x05ca_19e1 ^ name.len() as u64);
        let start = Instant::now();
        let mut runs = 0;
        for s in &seeds {
            run(name, f, s);
            runs += 1;
        }
        while start.elapsed() < budget {
            let s = &seeds[runs % seeds.len()];
            let m = mutate(s, &mut r);
            run(name, f, &m);
            runs += 1;
        }
        eprintln!("{name}: {runs} inputs in {:.1}s", start.elapsed().as_secs_f64());
        assert!(runs > seeds.len(), "{name}: no mutation ran");
    }
}
