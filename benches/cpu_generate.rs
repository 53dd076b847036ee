//! CPU prefill and decode speed, with peak resident memory against the model file and the KV
//! cache. `cargo bench --bench cpu_generate [-- OPTIONS]`:
//!
//!   --model PATH          a GGUF or model directory (default: the default model)
//!   --prompt-tokens N     time a prompt of N fixed token ids (the ids scripts/bench/llamacpp_run.py
//!                         gives llama.cpp) instead of the printing-press text
//!   --decode N            decode steps (default 64)
//!   --weights stored|f32  how the weights are held (default stored)
//!   --activations f32|int8  the decode products' activations (default f32, exact)
//!   --json                one JSON line
//!
//! scripts/bench_cpu_vs_hf.sh puts transformers beside it, scripts/bench_cpu_vs_llamacpp.sh
//! llama.cpp; threads: RAYON_NUM_THREADS.

use std::time::Instant;

use scalpel::backend::cpu::Cpu;
use scalpel::backend::cpu::qmatmul::{Activations, set_activations};
use scalpel::forward::{Logits, Model, WeightMode};
use scalpel::generate::{GenerateOptions, generate};
use scalpel::model::{DEFAULT_MODEL, ModelFiles, models_dir};
use scalpel::probe::Probes;
use scalpel::sample::SamplingParams;

/// The prompt both engines time (also in scripts/bench_hf_cpu.py).
pub const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when Johannes \
Gutenberg combined movable metal type, oil-based ink and a wooden screw press into a system that could \
produce books far faster than scribes. Within fifty years, presses were running in more than two hundred \
European cities, and the";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    scalpel::backend::cpu::use_this_thread_in_pool().expect("the thread pool");
    let json = std::env::args().any(|a| a == "--json");
    let path =
        arg("--model").map(std::path::PathBuf::from).unwrap_or_else(|| models_dir().join(DEFAULT_MODEL.file));
    let decode_tokens: usize = arg("--decode").map_or(64, |s| s.parse().expect("--decode N"));
    let mut files =
        ModelFiles::open(Some(path.to_str().expect("utf-8 path"))).expect("the model (run scripts/setup.sh)");
    files.weight_mode = match arg("--weights").as_deref() {
        None | Some("stored") => WeightMode::Stored,
        Some("f32") => WeightMode::F32,
        Some(other) => panic!("--weights {other}: stored or f32"),
    };
    let activations = match arg("--activations").as_deref() {
        None | Some("f32") => Activations::F32,
        Some("int8") => Activations::Int8,
        Some(other) => panic!("--activations {other}: f32 or int8"),
    };
    set_activations(activations);
    let model = Model::load(Cpu, &files).expect("loads");
    let ids: Vec<u32> = match arg("--prompt-tokens") {
        Some(n) => {
            let n: usize = n.parse().expect("--prompt-tokens N");
            (0..n).map(|i| ((i * 7919 + 13) % files.config.vocab_size) as u32).collect()
        }
        None => files.tokenizer.encode(PROMPT).unwrap(),
    };
    let threads = rayon::current_num_threads();
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let c = &files.config;
    let kv_bytes = 2 * c.n_layers * (ids.len() + decode_tokens + 1) * c.kv_dim() * 4;

    // Warm up once, then time the prefill several times.
    let mut prefill = Vec::new();
    for i in 0..6 {
        let mut cache = model.new_cache(ids.len()).unwrap();
        let t = Instant::now();
        model.forward(&ids, 0, &mut cache, &mut Probes::none(), Logits::Last).unwrap();
        if i > 0 {
            prefill.push(ids.len() as f64 / t.elapsed().as_secs_f64());
        }
    }
    let opts = GenerateOptions {
        max_tokens: decode_tokens + 1,
        sampling: SamplingParams::default(),
        stop_at_eos: false,
    };
    let mut decode = Vec::new();
    for _ in 0..3 {
        let g = generate(&model, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap();
        decode.push(g.decode_tokens_per_second());
    }
    let rss = scalpel::mem::peak_rss_bytes().unwrap_or(0);
    let (p, d) = (median(prefill), median(decode));
    let label = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let bound = 1.15 * (file_bytes + kv_bytes as u64) as f64 + 64.0 * 1048576.0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "engine": "scalpel", "device": "cpu", "threads": threads, "model": label,
                "weights": format!("{:?}", files.weight_mode).to_lowercase(),
                "activations": format!("{activations:?}").to_lowercase(),
                "prompt_tokens": ids.len(), "decode_tokens": decode_tokens,
                "prefill_tokens_per_second": p, "decode_tokens_per_second": d,
                "weights_bytes": model.parameter_count() * 4, "file_bytes": file_bytes, "kv_cache_bytes": kv_bytes,
                "peak_rss_bytes": rss,
            })
        );
    } else {
        println!(
            "scalpel cpu ({threads} threads), {label}, weights {:?}, activations {activations:?}:",
            files.weight_mode
        );
        println!("  prefill {:>4} tokens: {p:8.1} tok/s (median of 5)", ids.len());
        println!("  decode  {decode_tokens:>4} tokens: {d:8.1} tok/s (median of 3)");
        println!(
            "  peak RSS {:.0} MiB; file {:.0} MiB + KV cache {:.1} MiB; bound 1.15 x (file + KV) + 64 MiB = {:.0} MiB",
            rss as f64 / 1048576.0,
            file_bytes as f64 / 1048576.0,
            kv_bytes as f64 / 1048576.0,
            bound / 1048576.0
        );
    }
}
