//! Aggregate decode throughput of a batch on the CPU: n sequences decoding together through the
//! scheduler (one forward pass per step for all of them), against the same engine at batch 1.
//! `cargo bench --bench cpu_batch [-- OPTIONS]`:
//!
//!   --model PATH      a GGUF or model directory (default: the default model)
//!   --batches LIST    batch sizes, comma-separated (default 1,4,16,64)
//!   --prompt-tokens N prompt length of every sequence (default 64; ids differ per sequence)
//!   --decode N        tokens each sequence generates (default 32, EOS ignored)
//!   --json            one JSON line per batch size
//!
//! Decode throughput counts the steps in which every running sequence brought one token (the
//! prompt steps are timed apart as prefill). Threads: RAYON_NUM_THREADS.

use std::time::Instant;

use scalpel::backend::cpu::Cpu;
use scalpel::backend::pages_for;
use scalpel::forward::Model;
use scalpel::generate::GenerateOptions;
use scalpel::model::{DEFAULT_MODEL, ModelFiles, models_dir};
use scalpel::sample::SamplingParams;
use scalpel::schedule::{Request, Scheduler, SchedulerOptions};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    scalpel::backend::cpu::use_this_thread_in_pool().expect("the thread pool");
    let json = std::env::args().any(|a| a == "--json");
    let path =
        arg("--model").map(std::path::PathBuf::from).unwrap_or_else(|| models_dir().join(DEFAULT_MODEL.file));
    let batches: Vec<usize> = arg("--batches")
        .unwrap_or_else(|| "1,4,16,64".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--batches 1,4,16"))
        .collect();
    let prompt_tokens: usize = arg("--prompt-tokens").map_or(64, |s| s.parse().expect("--prompt-tokens N"));
    let decode: usize = arg("--decode").map_or(32, |s| s.parse().expect("--decode N"));
    let files =
        ModelFiles::open(Some(path.to_str().expect("utf-8 path"))).expect("the model (run scripts/setup.sh)");
    let model = Model::load(Cpu, &files).expect("loads");
    let vocab = files.config.vocab_size;
    let threads = rayon::current_num_threads();
    let mut base = None;
    for &n in &batches {
        // Every prompt in the first step, so the decode steps all run at batch n.
        let options = SchedulerOptions { token_budget: n * prompt_tokens, max_seqs: n, graphs: false };
        let pages = n * pages_for(prompt_tokens + decode);
        let mut sched = Scheduler::new(&model, pages, options).expect("a scheduler");
        for s in 0..n {
            let ids: Vec<u32> =
                (0..prompt_tokens).map(|i| ((i * 7919 + 13 + s * 104_729) % vocab) as u32).collect();
            let opts = GenerateOptions {
                max_tokens: decode,
                sampling: SamplingParams { temperature: 0.0, ..Default::default() },
                stop_at_eos: false,
            };
            sched.add(Request::new(ids, opts)).expect("a request");
        }
        let (mut prefill_s, mut decode_s, mut decode_tokens, mut steps) = (0.0, 0.0, 0usize, 0usize);
        while !sched.is_idle() {
            let decoding = sched.waiting() == 0 && sched.running() > 0;
            let before = sched.running();
            let t = Instant::now();
            let tokens = sched.step().expect("a step");
            let dt = t.elapsed().as_secs_f64();
            if decoding && tokens == before {
                decode_s += dt;
                decode_tokens += tokens;
                steps += 1;
            } else {
                prefill_s += dt;
            }
        }
        let tps = decode_tokens as f64 / decode_s.max(1e-9);
        let b1 = *base.get_or_insert(tps);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "model": files.label, "threads": threads, "batch": n, "prompt_tokens": prompt_tokens,
                    "decode_steps": steps, "decode_tokens_per_second": tps, "vs_batch_1": tps / b1,
                    "prefill_tokens_per_second": (n * prompt_tokens) as f64 / prefill_s.max(1e-9),
                })
            );
        } else {
            println!(
                "{}: batch {n:>3}: decode {tps:>8.1} tok/s aggregate ({:.2}× batch 1) over {steps} steps; prefill {:.1} tok/s ({threads} threads)",
                files.label,
                tps / b1,
                (n * prompt_tokens) as f64 / prefill_s.max(1e-9)
            );
        }
    }
}
