//! Per-kernel speed on the GPU, against the two ceilings measured first: device-to-device copy
//! bandwidth (memory-bound kernels report GB/s and its fraction) and the cuBLAS bf16 matrix rate
//! (tensor-core kernels report TFLOP/s). Shapes are Llama-3.2-3B's. `cargo bench --bench gpu_kernels`.

#[cfg(feature = "cuda")]
fn main() {
    use scalpel::backend::cuda::{AttnKernel, Cuda};
    use scalpel::backend::{AttnParams, Backend};
    use scalpel::model::config::{Activation, NormKind};
    use scalpel::model::stored::Stored;
    use scalpel::sample::SamplingParams;

    if !Cuda::available() {
        println!("gpu_kernels: SKIPPED — no CUDA driver or GPU here");
        return;
    }
    let gpu = Cuda::new(0).expect("GPU");
    println!("gpu_kernels on {}", gpu.describe());
    let rand = |n: usize, s: u64| -> Vec<f32> {
        (0..n).map(|i| (((i as u64).wrapping_mul(2654435761) ^ s) % 2001) as f32 / 1000.0 - 1.0).collect()
    };
    let copy = gpu.copy_bandwidth(1 << 30).unwrap();
    // The matrix ceiling: a large bf16 product through the same path the model uses.
    let (m, k, n) = (8192, 8192, 8192);
    let x = gpu
        .rms_norm(
            &gpu.upload(&rand(m * k, 1), &[m, k]).unwrap(),
            &gpu.weight(Stored::from_f32(vec![1.0; k], &[k])).unwrap(),
            1e-5,
            NormKind::Plain,
        )
        .unwrap();
    let w = gpu.weight(Stored::from_f32(rand(n * k, 2), &[n, k])).unwrap();
    let ms = gpu.time_ms(10, || gpu.matmul(&x, &w).map(|_| ())).unwrap();
    let peak = 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
    println!("ceilings: copy {copy:.0} GB/s (read + write), cuBLAS bf16 {peak:.0} TFLOP/s ({m}×{k}×{n})");
    println!("{:<44} {:>10} {:>12} {:>8}", "kernel (Llama-3.2-3B shapes)", "µs", "rate", "of peak");
    let report = |name: &str, ms: f64, bytes: f64, flops: f64| {
        let us = ms * 1e3;
        if flops > 0.0 {
            let t = flops / (ms * 1e-3) / 1e12;
            println!("{name:<44} {us:>10.1} {t:>8.1} TF/s {:>7.1}%", 100.0 * t / peak);
        } else {
            let g = bytes / (ms * 1e-3) / 1e9;
            println!("{name:<44} {us:>10.1} {g:>8.0} GB/s {:>7.1}%", 100.0 * g / copy);
        }
    };
    let d = 3072;
    for t in [1usize, 2048] {
        let xs = gpu.upload(&rand(t * d, 3), &[t, d]).unwrap();
        let wn = gpu.weight(Stored::from_f32(rand(d, 4), &[d])).unwrap();
        let ms = gpu.time_ms(50, || gpu.rms_norm(&xs, &wn, 1e-5, NormKind::Plain).map(|_| ())).unwrap();
        report(&format!("rms_norm [{t}×{d}]"), ms, (t * d * 6) as f64, 0.0);
    }
    for (rows, kk, nn) in [(1usize, 3072usize, 8192usize * 2), (1, 8192, 3072), (1, 3072, 128256)] {
        let xb = gpu
            .rms_norm(
                &gpu.upload(&rand(rows * kk, 5), &[rows, kk]).unwrap(),
                &gpu.weight(Stored::from_f32(vec![1.0; kk], &[kk])).unwrap(),
                1e-5,
                NormKind::Plain,
            )
            .unwrap();
        let wm = gpu.weight(Stored::from_f32(rand(nn * kk, 6), &[nn, kk])).unwrap();
        let ms = gpu.time_ms(50, || gpu.matmul(&xb, &wm).map(|_| ())).unwrap();
        report(&format!("matmul decode [1×{kk}]·[{nn}×{kk}]ᵀ"), ms, (nn * kk * 2) as f64, 0.0);
    }
    {
        let t = 2048usize;
        let xb = gpu
            .rms_norm(
                &gpu.upload(&rand(t * d, 7), &[t, d]).unwrap(),
                &gpu.weight(Stored::from_f32(vec![1.0; d], &[d])).unwrap(),
                1e-5,
                NormKind::Plain,
            )
            .unwrap();
        let wm = gpu.weight(Stored::from_f32(rand(8192 * d, 8), &[8192, d])).unwrap();
        let ms = gpu.time_ms(20, || gpu.matmul(&xb, &wm).map(|_| ())).unwrap();
        report(&format!("matmul prefill [{t}×{d}]·[8192×{d}]ᵀ"), ms, 0.0, 2.0 * (t * d * 8192) as f64);
    }
    let f = 8192;
    let (g, u) = (gpu.upload(&rand(f, 9), &[1, f]).unwrap(), gpu.upload(&rand(f, 10), &[1, f]).unwrap());
    let ms = gpu.time_ms(50, || gpu.glu(&g, &u, Activation::Silu).map(|_| ())).unwrap();
    report("glu [1×8192]", ms, (f * 10) as f64, 0.0);
    let (h, kvh, hd) = (24usize, 8usize, 128usize);
    let p = AttnParams {
        n_heads: h,
        n_kv_heads: kvh,
        head_dim: hd,
        scale: 1.0 / (hd as f32).sqrt(),
        window: None,
        softcap: None,
    };
    for s in [512usize, 4096, 32768] {
        let mut cache = gpu.new_cache(1, kvh, hd, s).unwrap();
        gpu.write_cache(&mut cache, 0, &rand(s * kvh * hd, 11), &rand(s * kvh * hd, 12)).unwrap();
        let q = gpu.upload(&rand(h * hd, 13), &[1, h * hd]).unwrap();
        let step = gpu.step(&[0], s - 1).unwrap();
        let ms = gpu.time_ms(50, || gpu.attention(&q, &cache, 0, &step, &p).map(|_| ())).unwrap();
        report(&format!("attention decode, {s} keys (KV read)"), ms, (2 * s * kvh * hd * 2) as f64, 0.0);
    }
    for (t, kern) in [(2048usize, AttnKernel::TensorCores), (2048, AttnKernel::Rows)] {
        let mut cache = gpu.new_cache(1, kvh, hd, t).unwrap();
        gpu.write_cache(&mut cache, 0, &rand(t * kvh * hd, 14), &rand(t * kvh * hd, 15)).unwrap();
        let q = gpu.upload(&rand(t * h * hd, 16), &[t, h * hd]).unwrap();
        let step = gpu.step(&vec![0; t], 0).unwrap();
        let ms = gpu.time_ms(10, || gpu.attention_with(kern, &q, &cache, 0, &step, &p).map(|_| ())).unwrap();
        // Causal: half of the T×T score and output products, 2 flops per multiply-add.
        let flops = 2.0 * 2.0 * (t * t / 2) as f64 * (h * hd) as f64;
        report(&format!("attention prefill {t} tokens ({kern:?})"), ms, 0.0, flops);
    }
    let logits = gpu.upload(&rand(128256, 17), &[1, 128256]).unwrap();
    let sp = SamplingParams { temperature: 0.8, top_k: Some(50), top_p: Some(0.9), ..Default::default() };
    let ms = gpu.time_ms(20, || gpu.sample(&logits, &sp, 0.5).map(|_| ())).unwrap();
    report("sample top-k 50, top-p 0.9 (vocab 128256)", ms, (128256 * 4 * 36) as f64, 0.0);
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!("gpu_kernels: SKIPPED — built without the cuda feature");
}
