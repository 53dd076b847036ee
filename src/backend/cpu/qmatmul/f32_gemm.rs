//! Exact prefill on AVX-512: out = X Wᵀ for more than `MATMUL_SMALL_M` x rows, in f32, on the
//! reference's dequantized weights — the int8 GEMM's layout (int8_gemm.rs) with floats.
//!
//! Layout. The x rows ("tokens") are packed sixteen to a tile, transposed: one 512-bit register
//! holds column k of 16 tokens. Each task dequantizes `ROWS` rows of W (avx512.rs's kernels, the
//! reference's values bit for bit) into a buffer that stays in L2, and runs every pair of token
//! tiles over it: per column, a weight broadcast to every lane times the two x registers adds a
//! product to each of 32 tokens' sums for that row. 2 · `ROWS` accumulators, one FMA each per
//! column and no other arithmetic, so the loop runs at the FMA ports' rate.
//!
//! Why not gemm (panel.rs, which AVX2 and NEON still take): gemm packs X again for every panel it
//! is handed, and the panels must be small to stay in cache, so for a 64-token prompt on
//! Llama-3.2-3B's shapes it spent as long packing as multiplying. Here X is packed once per
//! product.
//!
//! Numerics: every product is a dequantized weight times an x value, summed over the columns in
//! order with one rounding per FMA — dequantize-then-multiply up to summation order.

use rayon::prelude::*;

use super::OutPtr;
use super::format::QMatrix;
use super::isa::{Isa, Ready};

/// Tokens per x register.
const TILE: usize = 16;

/// Weight rows per task and per kernel call: with two x registers, 2 · ROWS accumulators, the two
/// x registers and a broadcast weight fit in the 32 vector registers.
const ROWS: usize = 12;

/// Whether this GEMM runs with the kernels of `isa` on this CPU.
pub(super) fn runs(isa: Isa) -> bool {
    isa == Isa::Avx512 && isa.is_available()
}

/// The x rows transposed in tiles of `TILE` tokens: [tile][column][token], a partial last tile
/// padded with zeros.
fn pack(x: &[f32], m: usize, cols: usize) -> Vec<f32> {
    let tiles = m.div_ceil(TILE);
    let mut p = vec![0f32; tiles * cols * TILE];
    p.par_chunks_mut(cols * TILE).enumerate().for_each(|(tile, dst)| {
        for t in 0..TILE.min(m - tile * TILE) {
            let row = &x[(tile * TILE + t) * cols..(tile * TILE + t + 1) * cols];
            for (k, &v) in row.iter().enumerate() {
                dst[k * TILE + t] = v;
            }
        }
    });
    p
}

/// out = X Wᵀ. The caller checked the sizes (`x` [m, cols], `out` [m, rows], rows and cols > 0)
/// and `runs(ready.isa())`.
pub(super) fn matmul(ready: Ready, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    debug_assert!(runs(ready.isa()));
    let cols = w.cols;
    let px = pack(x, m, cols);
    let tiles = m.div_ceil(TILE);
    let dst = OutPtr(out.as_mut_ptr());
    let rows = w.rows;
    let passes = rows.div_ceil(ROWS);
    (0..passes).into_par_iter().for_each_init(
        || vec![0f32; ROWS * cols],
        |buf, p| {
            let r0 = p * ROWS;
            let n = ROWS.min(rows - r0);
            // Rows past the end of W (the last pass): their sums are computed and dropped; zeros
            // keep a previous pass's weights, denormals perhaps, out of that arithmetic.
            buf[n * cols..].fill(0.0);
            super::dequant_rows(ready, w, r0, &mut buf[..n * cols]);
            let mut t0 = 0;
            while t0 < tiles {
                let pair = (tiles - t0).min(2);
                let mut acc = [[0f32; 2 * TILE]; ROWS];
                let xs = &px[t0 * cols * TILE..(t0 + pair) * cols * TILE];
                // SAFETY: `runs` checked the AVX-512 family on this CPU.
                unsafe {
                    if pair == 2 {
                        avx512::tiles::<2>(xs, buf, cols, &mut acc)
                    } else {
                        avx512::tiles::<1>(xs, buf, cols, &mut acc)
                    }
                }
                let tokens = (2 * TILE).min(m - t0 * TILE);
                for (r, a) in acc.iter().enumerate().take(n) {
                    for (t, &v) in a.iter().enumerate().take(tokens) {
                        // SAFETY: token t0·16 + t < m and row r0 + r < rows: inside `out`
                        // ([m, rows]); only this task writes row r0 + r.
                        unsafe { *dst.at((t0 * TILE + t) * rows + r0 + r) = v };
                    }
                }
                t0 += pair;
            }
        },
    );
}

mod avx512 {
    use std::arch::x86_64::*;

    use super::super::blocks::arr_mut;
    use super::{ROWS, TILE};

    /// acc[r][16j + t] = Σ_k w[r][k] · x[j][k][t] for the `T` (1 or 2) token tiles in `xs`
    /// ([tile][column][token]) and the `ROWS` rows of `w` ([row][column]).
    #[target_feature(enable = "avx512f")]
    pub(super) fn tiles<const T: usize>(
        xs: &[f32],
        w: &[f32],
        cols: usize,
        acc: &mut [[f32; 2 * TILE]; ROWS],
    ) {
        // Slices built outside the target-feature code (no SIMD in them); the loop below uses
        // plain loops only, which unroll over the const sizes and keep `a` in registers.
        let wr: [&[f32]; ROWS] = std::array::from_fn(|r| &w[r * cols..][..cols]);
        let xt: [&[f32]; T] = std::array::from_fn(|j| &xs[j * cols * TILE..][..cols * TILE]);
        let mut a = [[_mm512_setzero_ps(); T]; ROWS];
        for k in 0..cols {
            let mut xv = [_mm512_setzero_ps(); T];
            for (v, xt) in xv.iter_mut().zip(&xt) {
                // SAFETY: k < cols and `xt` holds cols · 16 floats, so the 16 from k · 16 are in
                // it; the load has no alignment requirement.
                *v = unsafe { _mm512_loadu_ps(xt.as_ptr().add(k * TILE)) };
            }
            for (ar, wr) in a.iter_mut().zip(&wr) {
                // SAFETY: k < cols = wr.len(). Unchecked: twelve bounds checks per column cost
                // as many instructions as the broadcasts they guard.
                let b = _mm512_set1_ps(unsafe { *wr.get_unchecked(k) });
                for (aj, &x) in ar.iter_mut().zip(&xv) {
                    *aj = _mm512_fmadd_ps(b, x, *aj);
                }
            }
        }
        for (o, ar) in acc.iter_mut().zip(&a) {
            for (j, &v) in ar.iter().enumerate() {
                let d: &mut [f32; TILE] = arr_mut(o, j * TILE);
                // SAFETY: `d` is 16 writable floats; the store has no alignment requirement.
                unsafe { _mm512_storeu_ps(d.as_mut_ptr(), v) };
            }
        }
    }
}
