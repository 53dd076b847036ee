//! End-to-end speed on the GPU: prefill of 2048 tokens (TFLOP/s, against the measured cuBLAS bf16
//! rate) and batch-1 decode (tokens/s, and bytes read per token over time per token against the
//! measured copy bandwidth), with peak device memory against weights + KV cache. Models: the
//! default model when present, and random-weight models of Llama-3.2-3B's and Gemma-3-4B's exact
//! shapes. `cargo bench --bench gpu_generate [-- --json]`.

mod common;

#[cfg(feature = "cuda")]
fn main() {
    use scalpel::backend::cuda::Cuda;
    use scalpel::backend::{Backend, Device};
    use scalpel::forward::{Logits, Model};
    use scalpel::generate::{GenerateOptions, generate};
    use scalpel::model::stored::Stored;
    use scalpel::model::weights::{Weight, layer_weights};
    use scalpel::model::{Config, DEFAULT_MODEL, ModelFiles, models_dir};
    use scalpel::probe::Probes;
    use scalpel::sample::SamplingParams;

    const PREFILL: usize = 2048;
    const PROMPT: usize = 512;
    const DECODE: usize = 128;

    if !Cuda::available() {
        println!("gpu_generate: SKIPPED — no CUDA driver or GPU here");
        return;
    }
    let json = std::env::args().any(|a| a == "--json");
    let probe = Cuda::new(0).expect("GPU");
    println!("gpu_generate on {}", probe.describe());
    let copy = probe.copy_bandwidth(1 << 30).unwrap();
    let peak_tflops = {
        use scalpel::model::config::NormKind;
        let n = 8192;
        let x = probe
            .rms_norm(
                &probe.upload(&vec![0.5; n * n], &[n, n]).unwrap(),
                &probe.weight(Stored::from_f32(vec![1.0; n], &[n])).unwrap(),
                1e-5,
                NormKind::Plain,
            )
            .unwrap();
        let w = probe
            .weight(Stored::from_f32((0..n * n).map(|i| ((i % 97) as f32 - 48.0) / 500.0).collect(), &[n, n]))
            .unwrap();
        let ms = probe.time_ms(10, || probe.matmul(&x, &w).map(|_| ())).unwrap();
        2.0 * (n * n * n) as f64 / (ms * 1e-3) / 1e12
    };
    drop(probe);
    println!("ceilings: copy {copy:.0} GB/s, cuBLAS bf16 {peak_tflops:.0} TFLOP/s");

    // Bytes the device stores for the weights: bf16 matrices, f32 vectors.
    let weight_bytes = |c: &Config| -> usize {
        let mut ws = vec![Weight::Embed, Weight::FinalNorm];
        if !c.tie_embeddings {
            ws.push(Weight::LmHead);
        }
        for l in 0..c.n_layers {
            ws.extend(layer_weights(c).into_iter().map(|w| Weight::Layer(l, w)));
        }
        ws.iter()
            .map(|w| {
                let s = w.shape(c);
                s.iter().product::<usize>() * if s.len() == 1 { 4 } else { 2 }
            })
            .sum()
    };
    let matmul_params = |c: &Config| -> usize {
        let per = c.hidden_size * (c.q_dim() + 2 * c.kv_dim())
            + c.q_dim() * c.hidden_size
            + 3 * c.hidden_size * c.intermediate_size;
        c.n_layers * per + c.vocab_size * c.hidden_size
    };
    let run = |name: &str, model: Model<Cuda>| {
        let c = model.config.clone();
        let ids: Vec<u32> = (0..PREFILL).map(|i| ((i * 7919 + 13) % c.vocab_size) as u32).collect();
        // Prefill: the last row's logits only, as generation does.
        let mut times = Vec::new();
        for _ in 0..3 {
            let mut cache = model.new_cache(PREFILL).unwrap();
            let t = std::time::Instant::now();
            let out = model.forward(&ids, 0, &mut cache, &mut Probes::none(), Logits::Last).unwrap();
            model.backend.download(&out).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let pre = times[1];
        let attn_flops: f64 = c
            .layers
            .iter()
            .map(|l| {
                let keys = l.window.map_or(PREFILL as f64 / 2.0, |w| (w.min(PREFILL)) as f64);
                4.0 * PREFILL as f64 * keys * c.q_dim() as f64
            })
            .sum();
        let flops = 2.0 * matmul_params(&c) as f64 * PREFILL as f64
            - 2.0 * (c.vocab_size * c.hidden_size) as f64 * (PREFILL - 1) as f64
            + attn_flops;
        let tflops = flops / pre / 1e12;
        // Decode: 128 greedy steps after a 512-token prompt.
        let opts = GenerateOptions {
            max_tokens: DECODE + 1,
            sampling: SamplingParams::default(),
            stop_at_eos: false,
        };
        let g = generate(&model, &ids[..PROMPT], &opts, &mut Probes::none(), |_| Ok(true)).unwrap();
        let tok_s = g.decode_tokens_per_second();
        let avg_keys: f64 = c
            .layers
            .iter()
            .map(|l| {
                let mean_pos = PROMPT as f64 + DECODE as f64 / 2.0;
                l.window.map_or(mean_pos, |w| mean_pos.min(w as f64))
            })
            .sum();
        let bytes = weight_bytes(&c) as f64 + 2.0 * avg_keys * c.kv_dim() as f64 * 2.0;
        let gbs = bytes * tok_s / 1e9;
        let (_, peak) = model.backend.device_memory().unwrap_or((0, 0));
        let kv = 2 * c.n_layers * (PROMPT + DECODE + 1) * c.kv_dim() * 2;
        let budget = (weight_bytes(&c) + kv) as f64;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "model": name, "prefill_tokens": PREFILL, "prefill_tokens_per_second": PREFILL as f64 / pre,
                    "prefill_tflops": tflops, "prefill_fraction_of_cublas": tflops / peak_tflops,
                    "decode_tokens_per_second": tok_s, "decode_gb_per_second": gbs, "decode_fraction_of_copy": gbs / copy,
                    "peak_device_bytes": peak, "weights_plus_kv_bytes": budget,
                })
            );
        } else {
            println!("{name}:");
            println!(
                "  prefill {PREFILL}: {:8.0} tok/s  {tflops:6.1} TFLOP/s = {:5.1}% of cuBLAS (goal ≥ 50%)",
                PREFILL as f64 / pre,
                100.0 * tflops / peak_tflops
            );
            println!(
                "  decode:       {tok_s:8.1} tok/s  {gbs:6.0} GB/s   = {:5.1}% of copy (goal ≥ 85%)",
                100.0 * gbs / copy
            );
            println!(
                "  peak device memory {:.2} GiB = {:.3}× weights + KV cache (goal ≤ 1.10)",
                peak as f64 / 1073741824.0,
                peak as f64 / budget
            );
        }
    };
    let default = models_dir().join(DEFAULT_MODEL.file);
    if default.is_file() {
        let files = ModelFiles::open(Some(default.to_str().unwrap())).unwrap();
        run(DEFAULT_MODEL.file, Model::load(Cuda::new(0).unwrap(), &files).unwrap());
    } else {
        println!("(the default model is not at {}: skipped)", default.display());
    }
    run(
        "Llama-3.2-3B shapes (random weights)",
        Model::random(Cuda::new(0).unwrap(), common::shapes::llama_3_2_3b(), 1).unwrap(),
    );
    run(
        "Gemma-3-4B shapes (random weights)",
        Model::random(Cuda::new(0).unwrap(), common::shapes::gemma_3_4b(), 2).unwrap(),
    );
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!("gpu_generate: SKIPPED — built without the cuda feature");
}
