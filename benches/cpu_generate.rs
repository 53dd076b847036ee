//! CPU prefill and decode speed on the default model, with peak memory against the size of the
//! dequantized weights. `cargo bench --bench cpu_generate [-- --json]`;
//! scripts/bench_cpu_vs_hf.sh puts transformers beside it on the same machine and prompt.

use std::time::Instant;

use scalpel::backend::cpu::Cpu;
use scalpel::forward::{Logits, Model};
use scalpel::generate::{GenerateOptions, generate};
use scalpel::model::{DEFAULT_MODEL, ModelFiles, models_dir};
use scalpel::probe::Probes;
use scalpel::sample::SamplingParams;

/// The prompt both engines time (also in scripts/bench_hf_cpu.py).
pub const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when Johannes \
Gutenberg combined movable metal type, oil-based ink and a wooden screw press into a system that could \
produce books far faster than scribes. Within fifty years, presses were running in more than two hundred \
European cities, and the";
const DECODE_TOKENS: usize = 64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let path = models_dir().join(DEFAULT_MODEL.file);
    let files = ModelFiles::open(Some(path.to_str().expect("utf-8 path")))
        .expect("default model (run scripts/setup.sh)");
    let model = Model::load(Cpu, &files).expect("loads");
    let ids = files.tokenizer.encode(PROMPT).unwrap();
    let threads = rayon::current_num_threads();

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
        max_tokens: DECODE_TOKENS + 1,
        sampling: SamplingParams::default(),
        stop_at_eos: false,
    };
    let mut decode = Vec::new();
    for _ in 0..3 {
        let g = generate(&model, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap();
        decode.push(g.decode_tokens_per_second());
    }
    let weights = model.parameter_count() * 4;
    let rss = scalpel::mem::peak_rss_bytes().unwrap_or(0);
    let (p, d) = (median(prefill), median(decode));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "engine": "scalpel", "device": "cpu", "threads": threads, "model": DEFAULT_MODEL.file,
                "prompt_tokens": ids.len(), "decode_tokens": DECODE_TOKENS,
                "prefill_tokens_per_second": p, "decode_tokens_per_second": d,
                "weights_bytes": weights, "peak_rss_bytes": rss,
            })
        );
    } else {
        println!("scalpel cpu ({threads} threads), {}:", DEFAULT_MODEL.file);
        println!("  prefill {:>4} tokens: {p:8.1} tok/s (median of 5)", ids.len());
        println!("  decode  {DECODE_TOKENS:>4} tokens: {d:8.1} tok/s (median of 3)");
        println!(
            "  peak RSS {:.0} MiB = {:.2}× the f32 weights ({:.0} MiB)",
            rss as f64 / 1048576.0,
            rss as f64 / weights as f64,
            weights as f64 / 1048576.0
        );
    }
}
