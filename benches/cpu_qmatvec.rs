//! The CPU's stored-format matrix-vector kernels (decode's products) alone: for each block format,
//! a Llama-3.2-3B FFN matrix (8192 x 3072) times one x row, with exact f32 activations and with
//! int8 activations, on one thread and on all of rayon's. Reports the best of several runs (this
//! kernel is the whole of a decode step's matmul time) as G weights/s and GB/s of blocks read.
//! `cargo bench --bench cpu_qmatvec [-- --json] [--rows N] [--types Q4_K,Q6_K]`; threads:
//! RAYON_NUM_THREADS. The default 8192 rows (14 MB of Q4_K) stay in a large last-level cache;
//! `--rows 131072` (226 MB of Q4_K) measures the kernels streaming from memory, as decode does;
//! `--split N` cuts the rows into N matrices multiplied one after the other, as a model's layers
//! are (each call then pays its own start-up: task hand-out, x preparation, streams restarting).
//! `--tokens M` multiplies M x rows at once instead (prefill's `matmul`: above `MATMUL_SMALL_M`
//! rows, the exact panels + gemm or the int8 GEMM) and reports G multiply-adds/s in the weights
//! column, and for exact activations their share of this machine's f32 FMA peak on as many
//! threads, measured at start (x86-64; the ceiling of an f32 GEMM: the seventh and eighth
//! sessions' machines gave 57.5-61 G multiply-adds/s per core, and a VM's vCPUs do not always
//! reach it together, so the peak is measured on all threads at once).

use std::time::Instant;

use scalpel::backend::cpu::qmatmul::{
    Activations, QMatrix, QType, int8_supported, matmul, matvec, set_activations,
};

const COLS: usize = 3072;

/// Random blocks with small f16 scales (bytes masked so that every f16 field is finite). The
/// float formats' values are drawn afresh as normal numbers: masked random bytes make many of
/// them subnormal, which some CPUs multiply an order of magnitude slower (12x on the Intel dev
/// machine).
fn random_blocks(ty: QType, rows: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = ty.row_bytes(COLS).unwrap() * rows;
    if ty == QType::BF16 {
        return (0..n / 2)
            .flat_map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect();
    }
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as u8) & 0x3b
        })
        .collect()
}

fn best_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// G multiply-adds/s of a loop of f32 FMAs on every thread of the current rayon pool at once:
/// twelve independent accumulators per thread (more than the FMA latency times the ports), in the
/// widest vectors the CPU has. None where no FMA unit is detected.
fn fma_peak() -> Option<f64> {
    const ITERS: u64 = 50_000_000;
    let lanes = fma::lanes()?;
    let t = Instant::now();
    rayon::broadcast(|_| std::hint::black_box(fma::run(std::hint::black_box(ITERS))));
    let macs = (rayon::current_num_threads() as u64 * ITERS * 12 * lanes) as f64;
    Some(macs / t.elapsed().as_secs_f64() / 1e9)
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// f32 lanes per FMA of the widest FMA this CPU has.
    pub fn lanes() -> Option<u64> {
        if is_x86_feature_detected!("avx512f") {
            Some(16)
        } else if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx") {
            Some(8)
        } else {
            None
        }
    }

    /// `iters` rounds of twelve independent FMAs (a fixed point near 0.1, so no subnormals).
    pub fn run(iters: u64) -> f32 {
        match lanes() {
            // SAFETY: AVX-512F was detected.
            Some(16) => unsafe { run512(iters) },
            // SAFETY: FMA and AVX were detected.
            Some(_) => unsafe { run256(iters) },
            None => 0.0,
        }
    }

    #[target_feature(enable = "avx512f")]
    fn run512(iters: u64) -> f32 {
        let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut a = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in &mut a {
                *v = _mm512_fmadd_ps(*v, b, c);
            }
        }
        a.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    #[target_feature(enable = "avx,fma")]
    fn run256(iters: u64) -> f32 {
        let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut a = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in &mut a {
                *v = _mm256_fmadd_ps(*v, b, c);
            }
        }
        let sum = a.iter().fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
        let mut out = [0f32; 8];
        // SAFETY: `out` is 8 writable floats; the store has no alignment requirement.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod fma {
    pub fn lanes() -> Option<u64> {
        None
    }

    pub fn run(_: u64) -> f32 {
        0.0
    }
}

fn main() {
    scalpel::backend::cpu::use_this_thread_in_pool().expect("the thread pool");
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let rows: usize = opt("--rows").map_or(8192, |s| s.parse().expect("--rows N"));
    let split: usize = opt("--split").map_or(1, |s| s.parse().expect("--split N"));
    assert!(split > 0 && rows.is_multiple_of(split), "--split must divide --rows");
    let tokens: usize = opt("--tokens").map_or(1, |s| s.parse().expect("--tokens M"));
    assert!(tokens > 0, "--tokens must be at least 1");
    let types: Vec<QType> = match opt("--types") {
        Some(list) => list
            .split(',')
            .map(|t| QType::ALL.into_iter().find(|q| q.name() == t).expect("--types: GGUF type names"))
            .collect(),
        None => vec![QType::Q4_0, QType::Q4_1, QType::Q8_0, QType::Q4K, QType::Q6K, QType::Q5K, QType::BF16],
    };
    let x: Vec<f32> = (0..COLS * tokens).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; rows * tokens];
    let all = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    // The f32 FMA peak on one thread and on all, for the GEMM rows' share of it.
    let peaks = if tokens > 1 { [one.install(fma_peak), fma_peak()] } else { [None, None] };
    if !json {
        if let [Some(p1), Some(pn)] = peaks {
            println!("f32 FMA peak: {p1:.1} G multiply-adds/s on one thread, {pn:.1} on {all}");
        }
        println!(
            "{:6} {:>7} {:>5} {:>10} {:>12} {:>8} {:>9}",
            "type", "threads", "act", "ms", "Gweights/s", "GB/s", "of peak"
        );
    }
    let runs = if tokens == 1 { 20 } else { 5 };
    for ty in types {
        let data = random_blocks(ty, rows);
        let part = data.len() / split;
        let ws: Vec<QMatrix> =
            data.chunks(part).map(|d| QMatrix::new(ty, rows / split, COLS, d).unwrap()).collect();
        let acts: &[Activations] =
            if int8_supported(ty) { &[Activations::F32, Activations::Int8] } else { &[Activations::F32] };
        for &act in acts {
            set_activations(act);
            for threads in [1, all] {
                let run = || {
                    for (w, y) in ws.iter().zip(y.chunks_mut(rows / split * tokens)) {
                        if tokens == 1 {
                            matvec(w, &x, y).unwrap()
                        } else {
                            matmul(w, &x, tokens, y).unwrap()
                        }
                    }
                };
                let s = if threads == 1 {
                    one.install(|| best_seconds(runs, run))
                } else {
                    best_seconds(runs, run)
                };
                let (gw, gb) = ((rows * COLS * tokens) as f64 / s / 1e9, data.len() as f64 / s / 1e9);
                // Exact products only: int8 ones are not bound by the f32 FMA rate.
                let peak = peaks[usize::from(threads != 1)].filter(|_| act == Activations::F32);
                let share = peak.map(|p| gw / p);
                let act = format!("{act:?}").to_lowercase();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"type": ty.name(), "threads": threads, "activations": act,
                            "ms": s * 1e3, "gweights_per_s": gw, "gbytes_per_s": gb,
                            "fraction_of_fma_peak": share})
                    );
                } else {
                    let share = share.map_or(String::new(), |f| format!("{:.0}%", 100.0 * f));
                    println!(
                        "{:6} {threads:>7} {act:>5} {:>10.3} {gw:>12.2} {gb:>8.2} {share:>9}",
                        ty.name(),
                        s * 1e3
                    );
                }
            }
        }
    }
    set_activations(Activations::F32);
}
