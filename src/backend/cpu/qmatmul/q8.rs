//! Opt-in int8 activations for the matrix-vector products (decode), as llama.cpp computes them:
//! each x row is quantized to 8 bits per 32 values (`x ≈ d · q`, `d = max |x| / 127`), and each
//! chunk of weights is multiplied as integer codes times those bytes, summed exactly in integers,
//! scaled once per chunk. A few operations per 32 weights instead of two or three per weight.
//!
//! The cost is the activation rounding: each x value moves by at most `d / 2` = its block's
//! `max |x| / 254`, so a product moves by at most `Σ |w_i| · max|x|_block(i) / 254` (the tests
//! check exactly that bound). The default stays `Activations::F32` (exact products); this path is
//! chosen with `set_activations` (the CLI's `--activations int8`). Block formats whose codes fit a
//! byte with one offset per 16 weights take it (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K); the others and the
//! float formats stay exact. Products of more than `MATMUL_SMALL_M` rows (prefill) take it on
//! CPUs with AVX-512 VNNI (int8_gemm.rs, same quantization of x, same bound) and stay exact
//! (panels + gemm) elsewhere.

use std::sync::atomic::{AtomicU8, Ordering};

use super::blocks::{self, CHUNK, arr};
use super::format::{QMatrix, QType};

/// How the matrix-vector products treat the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Activations {
    /// Exact: the products of the dequantized weights with the f32 activations.
    #[default]
    F32,
    /// Activations quantized to int8 per 32 values (faster decode; error bounded as above).
    Int8,
}

static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// The process-wide choice for `matvec`, `matvec_batch` and `matmul` (above `MATMUL_SMALL_M`
/// rows only where `int8_gemm_runs`).
pub fn activations() -> Activations {
    if DEFAULT.load(Ordering::Relaxed) == 1 { Activations::Int8 } else { Activations::F32 }
}

/// Sets the process-wide choice.
pub fn set_activations(a: Activations) {
    DEFAULT.store(matches!(a, Activations::Int8) as u8, Ordering::Relaxed);
}

/// Whether the int8 path multiplies this type (the others stay exact under `Activations::Int8`).
pub fn int8_supported(ty: QType) -> bool {
    matches!(ty, QType::Q4_0 | QType::Q4_1 | QType::Q8_0 | QType::Q4K | QType::Q6K)
}

/// 1.5 · 2^23: a float of this size has no fraction bits, so adding it rounds to an integer.
const ROUND: f32 = 12_582_912.0;

/// An x row quantized per 32 values: the bytes `q`, and per chunk its scale `d` and the sums of
/// its bytes times `d` (for the weight formats' offsets), over the whole chunk (`sum`) and over
/// each 16-value half (`half_sum`, two per chunk). One array per quantity, so that the kernels
/// load eight chunks' values into one register.
pub(super) struct Q8Row {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub sum: Vec<f32>,
    pub half_sum: Vec<f32>,
}

impl Q8Row {
    /// `x.len()` must be a multiple of 32 (every supported format's rows are).
    pub fn quantize(x: &[f32]) -> Q8Row {
        let chunks = x.len() / CHUNK;
        let mut row = Q8Row {
            q: vec![0i8; x.len()],
            d: Vec::with_capacity(chunks),
            sum: Vec::with_capacity(chunks),
            half_sum: Vec::with_capacity(2 * chunks),
        };
        for (xc, qc) in x.chunks_exact(CHUNK).zip(row.q.chunks_exact_mut(CHUNK)) {
            // max |x| on the bit patterns (an integer maximum vectorizes; a float fold does not).
            let amax = f32::from_bits(xc.iter().map(|v| v.to_bits() & 0x7fff_ffff).fold(0, u32::max));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut codes = [0i32; CHUNK];
            for (o, &v) in codes.iter_mut().zip(xc) {
                // Nearest, ties to even, by adding and taking away 1.5 · 2^23 (exact for |v · id|
                // ≤ 127): `round` is a libm call per value on baseline x86-64, this vectorizes. The
                // clamp keeps a last-bit overshoot of |v · id| over 127 in range.
                *o = ((v * id + ROUND) - ROUND).clamp(-127.0, 127.0) as i32;
            }
            let mut sum = [0i32; 2];
            for (i, (&c, q)) in codes.iter().zip(qc.iter_mut()).enumerate() {
                *q = c as i8;
                sum[i / 16] += c;
            }
            row.d.push(d);
            row.sum.push(d * (sum[0] + sum[1]) as f32);
            row.half_sum.extend([d * sum[0] as f32, d * sum[1] as f32]);
        }
        row
    }

    /// The values the products see: `d · q` (for the tests' references).
    #[cfg(test)]
    pub fn dequantized(&self) -> Vec<f32> {
        self.q.iter().enumerate().map(|(i, &q)| self.d[i / CHUNK] * q as f32).collect()
    }
}

/// A chunk of a supported format as integer codes with, per 16-weight half, a scale and an
/// offset: weight `i` = `s[i / 16] · code[i] + off[i / 16]`.
pub(super) struct IntChunk {
    pub code: [i16; CHUNK],
    pub s: [f32; 2],
    pub off: [f32; 2],
}

/// Calls `f(c, chunk)` for every chunk of a row of a supported format.
#[inline(always)]
pub(super) fn walk_int_row(ty: QType, row: &[u8], mut f: impl FnMut(usize, &IntChunk)) {
    let mut ch = IntChunk { code: [0; CHUNK], s: [0.0; 2], off: [0.0; 2] };
    match ty {
        QType::Q4_0 | QType::Q4_1 => {
            let (bytes, at) = if ty == QType::Q4_0 { (18, 2) } else { (20, 4) };
            for (i, b) in row.chunks_exact(bytes).enumerate() {
                let d = blocks::f16_at(b, 0);
                let qs: &[u8; 16] = arr(b, at);
                for (j, &q) in qs.iter().enumerate() {
                    ch.code[j] = (q & 0x0f) as i16;
                    ch.code[j + 16] = (q >> 4) as i16;
                }
                let off = if ty == QType::Q4_0 { -8.0 * d } else { blocks::f16_at(b, 2) };
                (ch.s, ch.off) = ([d; 2], [off; 2]);
                f(i, &ch);
            }
        }
        QType::Q8_0 => {
            for (i, b) in row.chunks_exact(34).enumerate() {
                let qs: &[u8; 32] = arr(b, 2);
                for (c, &q) in ch.code.iter_mut().zip(qs) {
                    *c = (q as i8) as i16;
                }
                (ch.s, ch.off) = ([blocks::f16_at(b, 0); 2], [0.0; 2]);
                f(i, &ch);
            }
        }
        QType::Q4K => {
            for (s, b) in row.chunks_exact(144).enumerate() {
                let b: &[u8; 144] = arr(b, 0);
                let (dl, ml) = blocks::k4_scales(blocks::f16_at(b, 0), blocks::f16_at(b, 2), arr(b, 4));
                for c in 0..8 {
                    let q: &[u8; 32] = arr(b, 16 + 32 * (c / 2));
                    for (o, &v) in ch.code.iter_mut().zip(q) {
                        *o = ((v >> (4 * (c % 2))) & 0x0f) as i16;
                    }
                    (ch.s, ch.off) = ([dl[c]; 2], [-ml[c]; 2]);
                    f(8 * s + c, &ch);
                }
            }
        }
        QType::Q6K => {
            for (s, b) in row.chunks_exact(210).enumerate() {
                let b: &[u8; 210] = arr(b, 0);
                let ds = blocks::k6_scales(blocks::f16_at(b, 208), arr(b, 192));
                for c in 0..8 {
                    let (n, t) = (c / 4, c % 4);
                    let ql: &[u8; 32] = arr(b, 64 * n + 32 * (t % 2));
                    let qh: &[u8; 32] = arr(b, 128 + 32 * n);
                    for (o, (&l, &h)) in ch.code.iter_mut().zip(ql.iter().zip(qh)) {
                        *o = (((l >> (4 * (t / 2))) & 0x0f) | (((h >> (2 * t)) & 3) << 4)) as i16;
                    }
                    ch.s = [ds[8 * n + 2 * t], ds[8 * n + 2 * t + 1]];
                    ch.off = [-32.0 * ch.s[0], -32.0 * ch.s[1]];
                    f(8 * s + c, &ch);
                }
            }
        }
        _ => unreachable!("{} has no int8 path", ty.name()),
    }
}

/// The portable int8 kernel: `ys[i][r] = W[r0 + r] · xs[i]`, integer sums per half chunk.
pub(super) fn dot_rows_portable<const M: usize>(
    w: &QMatrix,
    r0: usize,
    xs: &[&Q8Row; M],
    ys: &mut [&mut [f32]; M],
) {
    for r in 0..ys[0].len() {
        let mut acc = [0f32; M];
        walk_int_row(w.ty, w.row(r0 + r), |c, ch| {
            for (a, x) in acc.iter_mut().zip(xs) {
                let q = &x.q[CHUNK * c..CHUNK * (c + 1)];
                let mut h = [0i32; 2];
                for (i, (&code, &v)) in ch.code.iter().zip(q).enumerate() {
                    h[i / 16] += code as i32 * v as i32;
                }
                *a += x.d[c] * (ch.s[0] * h[0] as f32 + ch.s[1] * h[1] as f32)
                    + ch.off[0] * x.half_sum[2 * c]
                    + ch.off[1] * x.half_sum[2 * c + 1];
            }
        });
        for (y, a) in ys.iter_mut().zip(acc) {
            y[r] = a;
        }
    }
}
