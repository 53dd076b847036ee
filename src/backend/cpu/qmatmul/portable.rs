//! Portable kernels: scalar chunk decoding (blocks.rs) and dot products written so the compiler
//! can vectorize them with whatever the baseline target offers. The fallback for any CPU, and the
//! simplest statement of what the SIMD kernels compute.

use super::blocks::{self, CHUNK, ChunkF32, arr, walk_float_row};
use super::format::{QMatrix, QType};

/// Folds `f(state, k, len, chunk)` over the chunks of a row: chunk = weights `k..k + len` of the
/// row, dequantized.
#[inline(always)]
fn walk_row<S, F: FnMut(S, usize, usize, &ChunkF32) -> S>(ty: QType, row: &[u8], init: S, mut f: F) -> S {
    let mut state = init;
    // Hands a chunk to the consumer, threading its state (the accumulators) through this
    // function's locals, so that it stays in registers even where this function is not inlined.
    macro_rules! emit {
        ($k:expr, $len:expr, $chunk:expr) => {
            state = f(state, $k, $len, &$chunk)
        };
    }
    match ty {
        QType::F32 => walk_float_row!(row, 4, emit, |c| blocks::f32s(c)),
        QType::F16 => walk_float_row!(row, 2, emit, |c| blocks::f16s(c)),
        QType::BF16 => walk_float_row!(row, 2, emit, |c| blocks::bf16s(c)),
        QType::Q4_0 => {
            for (i, b) in row.chunks_exact(18).enumerate() {
                emit!(i * CHUNK, CHUNK, blocks::q4_0(arr(b, 0)));
            }
        }
        QType::Q4_1 => {
            for (i, b) in row.chunks_exact(20).enumerate() {
                emit!(i * CHUNK, CHUNK, blocks::q4_1(arr(b, 0)));
            }
        }
        QType::Q5_0 => {
            for (i, b) in row.chunks_exact(22).enumerate() {
                emit!(i * CHUNK, CHUNK, blocks::q5_0(arr(b, 0)));
            }
        }
        QType::Q5_1 => {
            for (i, b) in row.chunks_exact(24).enumerate() {
                emit!(i * CHUNK, CHUNK, blocks::q5_1(arr(b, 0)));
            }
        }
        QType::Q8_0 => {
            for (i, b) in row.chunks_exact(34).enumerate() {
                emit!(i * CHUNK, CHUNK, blocks::q8_0(arr(b, 0)));
            }
        }
        QType::Q4K => {
            for (s, b) in row.chunks_exact(144).enumerate() {
                let b: &[u8; 144] = arr(b, 0);
                let (dl, ml) = blocks::k4_scales(blocks::f16_at(b, 0), blocks::f16_at(b, 2), arr(b, 4));
                for c in 0..8 {
                    emit!(256 * s + CHUNK * c, CHUNK, blocks::q4k(b, c, dl[c], ml[c]));
                }
            }
        }
        QType::Q5K => {
            for (s, b) in row.chunks_exact(176).enumerate() {
                let b: &[u8; 176] = arr(b, 0);
                let (dl, ml) = blocks::k4_scales(blocks::f16_at(b, 0), blocks::f16_at(b, 2), arr(b, 4));
                for c in 0..8 {
                    emit!(256 * s + CHUNK * c, CHUNK, blocks::q5k(b, c, dl[c], ml[c]));
                }
            }
        }
        QType::Q6K => {
            for (s, b) in row.chunks_exact(210).enumerate() {
                let b: &[u8; 210] = arr(b, 0);
                let ds = blocks::k6_scales(blocks::f16_at(b, 208), arr(b, 192));
                for c in 0..8 {
                    emit!(256 * s + CHUNK * c, CHUNK, blocks::q6k(b, c, &ds));
                }
            }
        }
    }
    state
}

/// `ys[i][r] = W[r0 + r] · xs[i]` for the rows `ys` covers. Eight partial sums per x row in
/// separate slots keep the adds independent (and vectorizable).
pub(super) fn dot_rows<const M: usize>(w: &QMatrix, r0: usize, xs: &[&[f32]; M], ys: &mut [&mut [f32]; M]) {
    for r in 0..ys[0].len() {
        let acc = walk_row(
            w.ty,
            w.row(r0 + r),
            [[0f32; 8]; M],
            #[inline(always)]
            |mut acc: [[f32; 8]; M], k, len, c| {
                for (a, x) in acc.iter_mut().zip(xs) {
                    for (e, (wv, xv)) in c.iter().zip(&x[k..k + len]).enumerate() {
                        a[e % 8] += wv * xv;
                    }
                }
                acc
            },
        );
        for (y, a) in ys.iter_mut().zip(&acc) {
            y[r] = a.iter().sum();
        }
    }
}

/// Dequantizes rows `r0..r0 + out.len() / cols` into `out` (row-major).
pub(super) fn dequant_rows(w: &QMatrix, r0: usize, out: &mut [f32]) {
    for (r, o) in out.chunks_exact_mut(w.cols).enumerate() {
        walk_row(w.ty, w.row(r0 + r), (), |(), k, len, c| o[k..k + len].copy_from_slice(&c[..len]));
    }
}
