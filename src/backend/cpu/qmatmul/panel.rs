//! Prefill without AVX-512 (which takes f32_gemm.rs): out = X Wᵀ for many x rows. W is
//! dequantized a panel of rows at a time (sized to stay in L2 next to gemm's packing buffers) into
//! a per-task f32 buffer, and gemm multiplies X by each panel; an f32 copy of the whole W never
//! exists. Panels run in parallel, each writing its own columns of `out`.

use rayon::prelude::*;

use super::isa::Ready;
use super::{OutPtr, QMatrix};

/// Target size of one f32 panel: half of the 512 KiB L2 of current x86 cores, leaving room for
/// gemm's packed copies of the panel and of X.
const PANEL_BYTES: usize = 256 << 10;

/// Panel heights are multiples of this (whole gemm micro-tiles).
const PANEL_ALIGN: usize = 16;

/// Rows per panel for a W of `rows` x `cols` on `threads` threads.
fn panel_rows(rows: usize, cols: usize, threads: usize) -> usize {
    let by_cache = (PANEL_BYTES / (4 * cols)).max(1);
    // At least two panels per thread when W is short, for load balance.
    let by_balance = rows.div_ceil(2 * threads).max(1);
    by_cache.min(by_balance).next_multiple_of(PANEL_ALIGN).min(rows)
}

/// Sizes are checked by the caller: `x` is [m, cols], `out` is [m, rows], rows and cols > 0.
pub(super) fn matmul(ready: Ready, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let threads = rayon::current_num_threads().max(1);
    let pr = panel_rows(w.rows, w.cols, threads);
    let panels = w.rows.div_ceil(pr);
    // With fewer panels than threads, let gemm spread each panel's rows of X over the pool.
    let par = if panels < threads { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    let dst = OutPtr(out.as_mut_ptr());
    (0..panels).into_par_iter().for_each_init(Vec::new, |buf: &mut Vec<f32>, p| {
        let r0 = p * pr;
        let n = pr.min(w.rows - r0);
        buf.resize(n * w.cols, 0.0);
        super::dequant_rows(ready, w, r0, buf);
        // SAFETY: gemm writes out[i * rows + r0 + j] for i < m, j < n: inside `out` ([m, rows],
        // r0 + n <= rows), and disjoint from every other panel's columns r0..r0+n. It reads X as
        // [m, cols] row-major (column stride 1, row stride cols) and the panel `buf` ([n, cols]
        // row-major) as the [cols, n] matrix Wᵀ (row stride 1, column stride cols). All three
        // buffers stay alive and unaliased by references for the call.
        unsafe {
            gemm::gemm(
                m,
                n,
                w.cols,
                dst.at(r0),
                1,
                w.rows as isize,
                false,
                x.as_ptr(),
                1,
                w.cols as isize,
                buf.as_ptr(),
                w.cols as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    });
}
