//! Every type on every kernel family this CPU runs, against the reference dequantizers (crate::model::quant):
//! dequantization bit for bit, products within float-reordering error.

use std::io::Write;
use std::sync::Once;

use super::*;

/// Relative tolerance of a product against the f64 sum of the reference weights times x, relative
/// to sum |w| |x| over the row.
const REL_TOL: f64 = 1e-5;

/// Values per x block of the int8-activation path (and per chunk of every kernel).
const CHUNK_ELEMS: usize = 32;

/// splitmix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    fn sign(&mut self) -> f32 {
        if self.next() & 1 == 0 { 1.0 } else { -1.0 }
    }
    fn bytes(&mut self, out: &mut [u8]) {
        out.iter_mut().for_each(|b| *b = self.next() as u8);
    }
    /// Any finite f16 (subnormals, zeros and the extremes included).
    fn finite_f16(&mut self) -> u16 {
        loop {
            let h = self.next() as u16;
            if h & 0x7c00 != 0x7c00 {
                return h;
            }
        }
    }
}

/// How block scales are drawn.
#[derive(Clone, Copy, Debug)]
enum Scales {
    /// Magnitudes as in real models: d around 1e-3..5e-2 (K-quant super-scales smaller), either sign
    /// where ggml allows it.
    Realistic,
    /// Any finite f16, to stress exactness of dequantization (not used for sums).
    AnyFinite,
}

fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// A random [rows, cols] matrix of `ty`: random quant bytes, scales per `scales`, finite floats.
fn random_matrix(ty: QType, rows: usize, cols: usize, scales: Scales, rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
    let scale = |rng: &mut Rng, lo: f32, hi: f32, signed: bool| -> [u8; 2] {
        match scales {
            Scales::Realistic => f16_bits(rng.range(lo, hi) * if signed { rng.sign() } else { 1.0 }),
            Scales::AnyFinite => rng.finite_f16().to_le_bytes(),
        }
    };
    let bb = ty.block_bytes();
    for b in data.chunks_exact_mut(bb) {
        match ty {
            QType::F32 => {
                let v = match scales {
                    Scales::Realistic => rng.range(0.0, 2.0) * rng.sign(),
                    // Any finite f32 whose products with |x| <= 1 stay far from overflow.
                    Scales::AnyFinite => rng.range(-1.0, 1.0) * 2f32.powi((rng.next() % 200) as i32 - 100),
                };
                b.copy_from_slice(&v.to_le_bytes());
            }
            QType::F16 => b.copy_from_slice(&scale(rng, 0.0, 2.0, true)),
            QType::BF16 => {
                let v = match scales {
                    Scales::Realistic => rng.range(0.0, 2.0) * rng.sign(),
                    Scales::AnyFinite => rng.range(-1.0, 1.0) * 2f32.powi((rng.next() % 200) as i32 - 100),
                };
                b.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
            _ => {
                rng.bytes(b);
                match ty {
                    QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => {
                        b[0..2].copy_from_slice(&scale(rng, 1e-3, 5e-2, true))
                    }
                    QType::Q4_1 | QType::Q5_1 => {
                        b[0..2].copy_from_slice(&scale(rng, 1e-3, 5e-2, true));
                        b[2..4].copy_from_slice(&scale(rng, 0.0, 0.2, true));
                    }
                    QType::Q4K | QType::Q5K => {
                        b[0..2].copy_from_slice(&scale(rng, 1e-4, 2e-3, false));
                        b[2..4].copy_from_slice(&scale(rng, 1e-4, 2e-3, false));
                    }
                    QType::Q6K => b[208..210].copy_from_slice(&scale(rng, 1e-4, 2e-3, false)),
                    _ => unreachable!(),
                }
            }
        }
    }
    data
}

fn random_x(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
}

fn reference_weights(w: &QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; w.rows * w.cols];
    crate::model::quant::dequantize_into(w.ty.ggml(), w.data, &mut out).expect("a type the reference reads");
    out
}

/// Whether `got` is within `REL_TOL` of `want` relative to `scale` (= sum |w||x|). NaN or an
/// infinity never passes.
fn close(got: f32, want: f64, scale: f64) -> bool {
    got.is_finite() && want.is_finite() && (got as f64 - want).abs() <= REL_TOL * scale
}

/// Checks `out` ([m, rows]) against the reference product of `x` ([m, cols]) with `deq`.
fn check_product(what: &str, w: &QMatrix, deq: &[f32], x: &[f32], m: usize, out: &[f32]) {
    for i in 0..m {
        let xi = &x[i * w.cols..(i + 1) * w.cols];
        for r in 0..w.rows {
            let wr = &deq[r * w.cols..(r + 1) * w.cols];
            let want: f64 = wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = wr.iter().zip(xi).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            let got = out[i * w.rows + r];
            assert!(
                close(got, want, scale),
                "{what}: {} [{}, {}] x-row {i} out-row {r}: got {got}, want {want} (|w||x| sum {scale})",
                w.ty.name(),
                w.rows,
                w.cols
            );
        }
    }
}

/// The families this CPU runs. Families compiled in but not runnable here are reported once per
/// test process on stderr directly (not the captured `eprintln!`), so a skip is always visible.
fn isas() -> Vec<Isa> {
    static REPORT: Once = Once::new();
    REPORT.call_once(|| {
        let ran: Vec<_> = Isa::available().iter().map(|i| i.name()).collect();
        let mut msg = format!("\nqmatmul tests: kernel families tested: {}\n", ran.join(", "));
        for isa in Isa::ALL.into_iter().filter(|i| i.is_compiled() && !i.is_available()) {
            msg += &format!(
                "qmatmul tests: SKIPPED {}: this CPU lacks its features (compiled, not run)\n",
                isa.name()
            );
        }
        // One write, so that the lines do not interleave with the harness's own output.
        let _ = std::io::stderr().write_all(msg.as_bytes());
    });
    Isa::available()
}

/// (rows, cols in blocks) shapes for matvec; cols in elements for the float types.
fn shapes(ty: QType) -> Vec<(usize, usize)> {
    let be = ty.block_elems();
    if be == 1 {
        // Columns below, at and above a 32-weight chunk, and not multiples of it.
        vec![(1, 1), (1, 7), (3, 32), (5, 33), (7, 100), (33, 576), (130, 31), (1001, 200)]
    } else {
        let many = if be == 256 { 8 } else { 64 };
        // One row, odd counts, counts not multiples of any SIMD width; 1001 and 2053 rows are
        // large enough for several rayon tasks with uneven ends.
        vec![(1, 1), (1, many), (3, 1), (7, 5), (33, 2), (1001, 1), (2053, 2), (17, many)]
            .into_iter()
            .map(|(r, b)| (r, b * be))
            .collect()
    }
}

#[test]
fn comparison_rejects_nan_and_infinity() {
    assert!(close(1.0, 1.0, 1.0));
    assert!(!close(f32::NAN, 1.0, 1.0));
    assert!(!close(1.0, f64::NAN, 1.0));
    assert!(!close(1.0, 1.0, f64::NAN));
    assert!(!close(f32::INFINITY, f64::INFINITY, 1.0));
    assert!(!close(1.0, 1.1, 1.0));
}

#[test]
fn f16_conversion_matches_half_on_every_input() {
    for h in 0..=u16::MAX {
        let want = half::f16::from_bits(h).to_f32();
        let got = blocks::f16_to_f32(h);
        assert_eq!(got.to_bits(), want.to_bits(), "f16 {h:#06x}: {got} vs {want}");
    }
}

/// Every f16 bit pattern as F16 weights (vector conversion) and as a Q8_0 scale (scalar
/// conversion) on every family: same bits as the reference, NaN for NaN.
#[test]
fn every_f16_pattern_dequantizes_exactly() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let f16w = QMatrix::new(QType::F16, 1, 1 << 16, &all).unwrap();
    let mut q8 = Vec::with_capacity(34 << 16);
    for h in 0..=u16::MAX {
        q8.extend_from_slice(&h.to_le_bytes());
        q8.extend((0..32).map(|i| (i as u8).wrapping_mul(37).wrapping_add(h as u8)));
    }
    let q8w = QMatrix::new(QType::Q8_0, 1 << 11, 1 << 10, &q8).unwrap();
    for w in [f16w, q8w] {
        let want = reference_weights(&w);
        for isa in isas() {
            let mut got = vec![0f32; want.len()];
            dequantize_rows_with(isa, &w, 0, &mut got).unwrap();
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                let same = if r.is_nan() { g.is_nan() } else { g.to_bits() == r.to_bits() };
                assert!(same, "{} {}: element {i}: {g:e} vs reference {r:e}", isa.name(), w.ty.name());
            }
        }
    }
}

#[test]
fn dequantize_rows_is_bit_exact() {
    let mut rng = Rng(1);
    for ty in QType::ALL {
        for scales in [Scales::Realistic, Scales::AnyFinite] {
            let cols = if ty.block_elems() == 1 { 77 } else { 3 * ty.block_elems() };
            let rows = 5;
            let data = random_matrix(ty, rows, cols, scales, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let want = reference_weights(&w);
            assert!(want.iter().all(|v| v.is_finite()));
            for isa in isas() {
                // All rows, then rows 2..4 alone (an offset start).
                let mut got = vec![f32::NAN; want.len()];
                dequantize_rows_with(isa, &w, 0, &mut got).unwrap();
                let mut part = vec![f32::NAN; 2 * cols];
                dequantize_rows_with(isa, &w, 2, &mut part).unwrap();
                for (i, (g, r)) in
                    got.iter().chain(&part).zip(want.iter().chain(&want[2 * cols..4 * cols])).enumerate()
                {
                    assert_eq!(
                        g.to_bits(),
                        r.to_bits(),
                        "{} {} {scales:?}: element {i}: {g:e} vs reference {r:e}",
                        isa.name(),
                        ty.name()
                    );
                }
            }
        }
    }
}

#[test]
fn matvec_matches_dequantize_then_dot() {
    let mut rng = Rng(2);
    let mut cases = 0;
    for ty in QType::ALL {
        for (rows, cols) in shapes(ty) {
            let data = random_matrix(ty, rows, cols, Scales::Realistic, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let deq = reference_weights(&w);
            let x = random_x(cols, &mut rng);
            for isa in isas() {
                let mut y = vec![f32::NAN; rows];
                matvec_with(isa, &w, &x, &mut y).unwrap();
                check_product(&format!("matvec {}", isa.name()), &w, &deq, &x, 1, &y);
                cases += 1;
            }
        }
    }
    assert!(cases >= QType::ALL.len() * 8);
}

/// A three-thread pool: row ranges that do not split evenly over the threads.
#[test]
fn matvec_on_an_odd_thread_count() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let mut rng = Rng(3);
    for ty in [QType::Q4_0, QType::Q6K, QType::F16] {
        let cols = if ty.block_elems() == 1 { 300 } else { 2 * ty.block_elems() };
        let rows = 2047;
        let data = random_matrix(ty, rows, cols, Scales::Realistic, &mut rng);
        let w = QMatrix::new(ty, rows, cols, &data).unwrap();
        let deq = reference_weights(&w);
        let x = random_x(cols, &mut rng);
        for isa in isas() {
            let mut y = vec![f32::NAN; rows];
            pool.install(|| matvec_with(isa, &w, &x, &mut y)).unwrap();
            check_product(&format!("matvec 3 threads {}", isa.name()), &w, &deq, &x, 1, &y);
        }
    }
}

#[test]
fn matvec_batch_matches_for_every_group_size() {
    let mut rng = Rng(4);
    for ty in QType::ALL {
        let cols = if ty.block_elems() == 1 { 45 } else { 2 * ty.block_elems() };
        for rows in [1, 13, 1003] {
            let data = random_matrix(ty, rows, cols, Scales::Realistic, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let deq = reference_weights(&w);
            // 1..=9: one, partial and several groups of four.
            for m in 1..=9 {
                let x = random_x(m * cols, &mut rng);
                for isa in isas() {
                    let mut out = vec![f32::NAN; m * rows];
                    matvec_batch_with(isa, &w, &x, m, &mut out).unwrap();
                    check_product(&format!("matvec_batch m={m} {}", isa.name()), &w, &deq, &x, m, &out);
                }
            }
        }
    }
}

#[test]
fn matmul_matches_dequantize_then_gemm() {
    let mut rng = Rng(5);
    for ty in QType::ALL {
        // 300 rows: several panels, the last one short. Float types: columns off the chunk size.
        let float = ty.block_elems() == 1;
        let shapes = [(300, if float { 100 } else { 512 }), (5, if float { 33 } else { ty.block_elems() })];
        for (rows, cols) in shapes {
            let data = random_matrix(ty, rows, cols, Scales::Realistic, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let deq = reference_weights(&w);
            // Up to MATMUL_SMALL_M rows go through the batched kernels, above through the panels.
            for m in [1, 2, 7, MATMUL_SMALL_M + 1, 33, 130] {
                let x = random_x(m * cols, &mut rng);
                for isa in isas() {
                    let mut out = vec![f32::NAN; m * rows];
                    matmul_with(isa, &w, &x, m, &mut out).unwrap();
                    check_product(&format!("matmul m={m} {}", isa.name()), &w, &deq, &x, m, &out);
                }
            }
        }
    }
}

#[test]
fn default_isa_is_settable() {
    let best = Isa::detect();
    assert_eq!(default_isa(), best);
    set_default_isa(Some(Isa::Portable)).unwrap();
    assert_eq!(default_isa(), Isa::Portable);
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        assert!(set_default_isa(Some(isa)).is_err());
        assert_eq!(default_isa(), Isa::Portable);
    }
    set_default_isa(None).unwrap();
    assert_eq!(default_isa(), best);
    assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
}

#[test]
fn bad_sizes_are_errors() {
    let data = vec![0u8; 18 * 4];
    // Data length, and columns that are not whole blocks.
    assert!(QMatrix::new(QType::Q4_0, 2, 64, &data[..71]).is_err());
    assert!(QMatrix::new(QType::Q4_0, 2, 48, &data).is_err());
    assert!(QMatrix::new(QType::Q4_0, usize::MAX, 64, &data).is_err());
    let w = QMatrix::new(QType::Q4_0, 2, 64, &data).unwrap();
    // A hand-built view with wrong fields.
    let bad = QMatrix { rows: 3, ..w };
    let x = vec![0f32; 64];
    let mut y = vec![0f32; 2];
    assert!(matvec(&bad, &x, &mut [0.0; 3]).is_err());
    assert!(matvec(&w, &x[..63], &mut y).is_err());
    assert!(matvec(&w, &x, &mut y[..1]).is_err());
    assert!(matvec_batch(&w, &x, 2, &mut [0.0; 4]).is_err());
    assert!(matmul(&w, &x, 1, &mut [0.0; 3]).is_err());
    assert!(matmul(&w, &x, usize::MAX, &mut y).is_err());
    assert!(dequantize_rows(&w, 1, &mut [0.0; 128]).is_err());
    assert!(dequantize_rows(&w, usize::MAX, &mut [0.0; 64]).is_err());
    assert!(dequantize_rows(&w, 0, &mut [0.0; 65]).is_err());
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let err = matvec_with(isa, &w, &x, &mut y).unwrap_err();
        assert!(err.to_string().contains(isa.name()), "{err}");
    }
    // Empty matrices are fine: no rows, or no columns (all-zero products).
    let empty = QMatrix::new(QType::Q4K, 0, 256, &[]).unwrap();
    matvec(&empty, &[0.0; 256], &mut []).unwrap();
    let no_cols = QMatrix::new(QType::Q8_0, 3, 0, &[]).unwrap();
    let mut y = vec![f32::NAN; 3];
    matvec(&no_cols, &[], &mut y).unwrap();
    assert_eq!(y, [0.0; 3]);
    let mut out = vec![f32::NAN; 21];
    matmul(&no_cols, &[], 7, &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
}

/// The int8-activation path: for the types it takes, the product of the dequantized weights with
/// the quantized x (`d · q`) within float error, and within the stated rounding bound of the exact
/// product; for the others, exactly the f32 path's products. Every family this CPU runs, 1 to 5
/// x rows (the groups of four and a remainder), x blocks of very different sizes and an all-zero
/// block (scale 0).
#[test]
fn int8_activations_multiply_the_quantized_x() {
    let mut rng = Rng(9);
    let mut int8_cases = 0;
    for ty in QType::ALL {
        for (rows, cols) in shapes(ty).into_iter().filter(|&(_, c)| c % CHUNK_ELEMS == 0).take(6) {
            let data = random_matrix(ty, rows, cols, Scales::Realistic, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let deq = reference_weights(&w);
            for m in 1..=5 {
                let mut x = random_x(m * cols, &mut rng);
                for (b, xb) in x.chunks_mut(CHUNK_ELEMS).enumerate() {
                    let f = [1.0, 30.0, 0.01, 0.0][b % 4];
                    xb.iter_mut().for_each(|v| *v *= f);
                }
                let xq: Vec<f32> = if int8_supported(ty) {
                    x.chunks(cols).flat_map(|r| q8::Q8Row::quantize(r).dequantized()).collect()
                } else {
                    x.clone()
                };
                for isa in isas() {
                    let mut out = vec![f32::NAN; m * rows];
                    matvec_batch_int8_with(isa, &w, &x, m, &mut out).unwrap();
                    let what = format!("int8 {} m={m}", isa.name());
                    check_product(&what, &w, &deq, &xq, m, &out);
                    if !int8_supported(ty) {
                        continue;
                    }
                    int8_cases += 1;
                    check_int8_bound(&what, &w, &deq, &x, m, &out);
                }
            }
        }
    }
    assert!(int8_cases >= 5 * 5 * 3, "{int8_cases} int8 cases");
}

/// The int8 rounding bound against the exact product of `x` ([m, cols]) with `deq`:
/// |x - d q| ≤ max|x|_block / 254 per value.
fn check_int8_bound(what: &str, w: &QMatrix, deq: &[f32], x: &[f32], m: usize, out: &[f32]) {
    let (rows, cols) = (w.rows, w.cols);
    for i in 0..m {
        let xi = &x[i * cols..(i + 1) * cols];
        let amax: Vec<f64> =
            xi.chunks(CHUNK_ELEMS).map(|b| b.iter().fold(0f64, |a, v| a.max(v.abs() as f64))).collect();
        for r in 0..rows {
            let wr = &deq[r * cols..(r + 1) * cols];
            let exact: f64 = wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
            let bound: f64 = wr
                .iter()
                .enumerate()
                .map(|(k, &a)| (a as f64).abs() * amax[k / CHUNK_ELEMS] / 254.0)
                .sum::<f64>();
            let scale: f64 = wr.iter().zip(xi).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            let got = out[i * rows + r] as f64;
            assert!(
                (got - exact).abs() <= bound * 1.0001 + REL_TOL * scale,
                "{what} {}: x-row {i} row {r}: {got} vs exact {exact}, bound {bound}",
                w.ty.name()
            );
        }
    }
}

/// Prefill with int8 activations: more than `MATMUL_SMALL_M` x rows, so partial token tiles of 16
/// (17, 31, 40 rows) and row counts off the kernel's eight rows per pass. Where the int8 GEMM runs
/// (AVX-512 VNNI, a type int8 takes), the product of the dequantized weights with the quantized x
/// within float error and within the rounding bound of the exact product; elsewhere the exact
/// product. Blocks of x of very different sizes and all-zero blocks, as for decode.
#[test]
fn int8_prefill_multiplies_the_quantized_x() {
    let mut rng = Rng(11);
    let mut gemm_cases = 0;
    for ty in QType::ALL.into_iter().filter(|t| t.block_elems() > 1) {
        let be = ty.block_elems();
        for (rows, blocks) in [(1, 2), (9, 1), (21, 3), (300, 1)] {
            let cols = blocks * be.max(64);
            let data = random_matrix(ty, rows, cols, Scales::Realistic, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let deq = reference_weights(&w);
            for m in [MATMUL_SMALL_M + 1, 31, 40] {
                let mut x = random_x(m * cols, &mut rng);
                for (b, xb) in x.chunks_mut(CHUNK_ELEMS).enumerate() {
                    let f = [1.0, 30.0, 0.01, 0.0, 1.0][b % 5];
                    xb.iter_mut().for_each(|v| *v *= f);
                }
                for isa in isas() {
                    let mut out = vec![f32::NAN; m * rows];
                    matmul_int8_with(isa, &w, &x, m, &mut out).unwrap();
                    let what = format!("int8 prefill {} m={m}", isa.name());
                    if !int8_gemm_runs(isa, ty) {
                        check_product(&what, &w, &deq, &x, m, &out);
                        continue;
                    }
                    gemm_cases += 1;
                    let xq: Vec<f32> =
                        x.chunks(cols).flat_map(|r| q8::Q8Row::quantize(r).dequantized()).collect();
                    check_product(&what, &w, &deq, &xq, m, &out);
                    check_int8_bound(&what, &w, &deq, &x, m, &out);
                }
            }
        }
    }
    if gemm_cases == 0 {
        // Written directly, so that the skip shows even when the harness captures output.
        let _ =
            std::io::stderr().write_all(b"\nqmatmul tests: SKIPPED the int8 GEMM: no AVX-512 VNNI here\n");
    } else {
        assert_eq!(gemm_cases, 5 * 4 * 3, "every int8 type, shape and row count on the GEMM");
    }
}

/// The activation quantizer: every value within half a step of `d · q`, the block's largest value
/// on ±127, an all-zero block all zeros with scale 0, and the block sums as the products use them.
#[test]
fn int8_quantizer_rounds_to_the_nearest_step() {
    let mut rng = Rng(10);
    let mut x = random_x(4 * CHUNK_ELEMS, &mut rng);
    x[CHUNK_ELEMS..2 * CHUNK_ELEMS].iter_mut().for_each(|v| *v = 0.0);
    x[2 * CHUNK_ELEMS..3 * CHUNK_ELEMS].iter_mut().for_each(|v| *v *= 1e-3);
    let q = q8::Q8Row::quantize(&x);
    let back = q.dequantized();
    for (b, xb) in x.chunks(CHUNK_ELEMS).enumerate() {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let qb = &q.q[b * CHUNK_ELEMS..(b + 1) * CHUNK_ELEMS];
        let d = q.d[b];
        assert_eq!(d, amax / 127.0);
        if amax > 0.0 {
            assert_eq!(qb.iter().map(|v| v.unsigned_abs()).max(), Some(127), "block {b}");
        } else {
            assert!(qb.iter().all(|&v| v == 0));
        }
        for (i, (&v, &r)) in xb.iter().zip(&back[b * CHUNK_ELEMS..]).enumerate() {
            assert!((v - r).abs() <= d * (0.5 + 1e-6), "block {b} value {i}: {v} vs {r}");
        }
        let lo: i32 = qb[..CHUNK_ELEMS / 2].iter().map(|&v| v as i32).sum();
        let hi: i32 = qb[CHUNK_ELEMS / 2..].iter().map(|&v| v as i32).sum();
        assert_eq!((q.half_sum[2 * b], q.half_sum[2 * b + 1]), (d * lo as f32, d * hi as f32));
        assert_eq!(q.sum[b], d * (lo + hi) as f32);
    }
}
