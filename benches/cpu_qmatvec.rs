//! The CPU's stored-format matrix-vector kernels (decode's products) alone: for each block format,
//! a Llama-3.2-3B FFN matrix (8192 x 3072) times one x row, with exact f32 activations and with
//! int8 activations, on one thread and on all of rayon's. Reports the best of several runs (this
//! kernel is the whole of a decode step's matmul time) as G weights/s and GB/s of blocks read.
//! `cargo bench --bench cpu_qmatvec [-- --json]`; threads: RAYON_NUM_THREADS.

use std::time::Instant;

use scalpel::backend::cpu::qmatmul::{Activations, QMatrix, QType, int8_supported, matvec, set_activations};

const ROWS: usize = 8192;
const COLS: usize = 3072;

/// Random blocks with small f16 scales (bytes masked so that every f16 field is finite).
fn random_blocks(ty: QType) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..ty.row_bytes(COLS).unwrap() * ROWS)
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

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let x: Vec<f32> = (0..COLS).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; ROWS];
    let all = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    if !json {
        println!(
            "{:6} {:>7} {:>5} {:>10} {:>12} {:>8}",
            "type", "threads", "act", "ms", "Gweights/s", "GB/s"
        );
    }
    for ty in [QType::Q4_0, QType::Q4_1, QType::Q8_0, QType::Q4K, QType::Q6K, QType::Q5K, QType::BF16] {
        let data = random_blocks(ty);
        let w = QMatrix::new(ty, ROWS, COLS, &data).unwrap();
        let acts: &[Activations] =
            if int8_supported(ty) { &[Activations::F32, Activations::Int8] } else { &[Activations::F32] };
        for &act in acts {
            set_activations(act);
            for threads in [1, all] {
                let run = || matvec(&w, &x, &mut y).unwrap();
                let s =
                    if threads == 1 { one.install(|| best_seconds(20, run)) } else { best_seconds(20, run) };
                let (gw, gb) = ((ROWS * COLS) as f64 / s / 1e9, data.len() as f64 / s / 1e9);
                let act = format!("{act:?}").to_lowercase();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"type": ty.name(), "threads": threads, "activations": act,
                            "ms": s * 1e3, "gweights_per_s": gw, "gbytes_per_s": gb})
                    );
                } else {
                    println!("{:6} {threads:>7} {act:>5} {:>10.3} {gw:>12.2} {gb:>8.2}", ty.name(), s * 1e3);
                }
            }
        }
    }
    set_activations(Activations::F32);
}
