//! Matrix products on GGUF-stored weights, for the CPU.
//!
//! `matvec` (decode: batch 1) reads each stored block once and dequantizes it in registers; it
//! never writes f32 weights. `matvec_batch` does the same for a few x rows at once, reading W once
//! per group of four. `matmul` (prefill) dequantizes a few rows of W at a time into a buffer that
//! stays in L2 and multiplies them with X packed once (f32_gemm.rs, AVX-512), or hands L2-sized
//! panels to `gemm` (panel.rs: AVX2, NEON, portable).
//!
//! Numerics: every kernel dequantizes to exactly the f32 values of the reference dequantizers
//! (`crate::model::quant`), then sums products in f32. Results differ from
//! dequantize-then-multiply only by float summation order (and by fused multiply-adds in the
//! sums). No activation quantization by default; `set_activations(Activations::Int8)` opts the
//! products into int8 activations (q8.rs: llama.cpp's scheme, its error bound stated there): those
//! of up to `MATMUL_SMALL_M` rows on every family, larger ones (prefill) where AVX-512 VNNI runs
//! them (int8_gemm.rs).
//!
//! Kernels: `Isa::Portable` everywhere, `Isa::Avx2` / `Isa::Avx512` on x86-64, `Isa::Neon` on
//! AArch64; `default_isa()` picks the best at run time unless `set_default_isa` says otherwise,
//! and the `*_with` functions take one explicitly.
//!
//! Work is split over row ranges, run by the CPU backend's spin pool (`spin_pool.rs`: helpers
//! that stay awake between a decode step's ops); a one-thread rayon pool (`ThreadPool::install`)
//! keeps them on the caller. Prefill's panels run on rayon.

mod blocks;
mod format;
mod isa;
mod panel;
mod portable;
mod q8;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_q8;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod f32_gemm;
#[cfg(target_arch = "x86_64")]
mod int8_gemm;
#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(test)]
mod tests;

pub use format::{QError, QMatrix, QResult, QType};
pub use isa::{Isa, default_isa, default_isa_from_env, set_default_isa};
pub use q8::{Activations, activations, int8_supported, set_activations};

use format::invalid;
use isa::Ready;

/// Up to this many x rows, `matmul` runs the batched matrix-vector kernels (W read once per four
/// rows, no f32 copy of W); above it, rows of W are dequantized for a GEMM. gemm 0.19 is slow
/// for a few rows (on the 2-core dev machine, f32 gemm with m = 2..8 took 2-4x its m = 1 time),
/// and the batched kernels measured as fast or faster up to about 16 rows.
pub const MATMUL_SMALL_M: usize = 16;

/// At most this many x rows share one pass over W in `matvec_batch`: their accumulators must fit
/// in registers alongside a decoded chunk.
const BATCH_GROUP: usize = 4;

/// A task below this many weight bytes is not worth a rayon hand-off (a microsecond or two of
/// work). Lower than it need be for the product alone: a product kept on one thread leaves the
/// other workers idle long enough to fall asleep, and the next op pays to wake them (SmolLM2's
/// k and v projections, 69 KB, ran alone at 64 KB: 10.5 → 7 µs each when split, and the o and q
/// projections that follow them 34 → 29 µs).
const MIN_TASK_BYTES: usize = 16 << 10;

/// The output of a product shared by parallel tasks that each write their own elements (the
/// prefill paths: each task its own rows of W, so its own columns of `out`).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: the users (panel.rs, int8_gemm.rs) write disjoint elements from different tasks, and the
// buffer outlives their parallel loops.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, so that closures capture the whole wrapper (which is Send), not the raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// y = W x: `x` has `cols` elements, `y` has `rows`.
pub fn matvec(w: &QMatrix, x: &[f32], y: &mut [f32]) -> QResult<()> {
    matvec_with(default_isa(), w, x, y)
}

/// `matvec` with the kernels of `isa` (an error if this CPU cannot run them).
pub fn matvec_with(isa: Isa, w: &QMatrix, x: &[f32], y: &mut [f32]) -> QResult<()> {
    let ready = isa.ready()?;
    w.validate()?;
    check_len("x", x.len(), w.cols, "cols")?;
    check_len("y", y.len(), w.rows, "rows")?;
    batch(ready, activations(), w, x, 1, y);
    Ok(())
}

/// out = X Wᵀ for a few x rows: `x` is [m, cols] row-major, `out` is [m, rows]. W is read once per
/// group of up to four x rows, dequantized in registers.
pub fn matvec_batch(w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> QResult<()> {
    matvec_batch_with(default_isa(), w, x, m, out)
}

/// `matvec_batch` with the kernels of `isa`.
pub fn matvec_batch_with(isa: Isa, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> QResult<()> {
    let ready = isa.ready()?;
    check_batch(w, x, m, out)?;
    batch(ready, activations(), w, x, m, out);
    Ok(())
}

/// `matvec_batch` with int8 activations (q8.rs) where `int8_supported(w.ty)`, exact otherwise,
/// whatever the process-wide choice.
pub fn matvec_batch_int8_with(isa: Isa, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> QResult<()> {
    let ready = isa.ready()?;
    check_batch(w, x, m, out)?;
    batch(ready, Activations::Int8, w, x, m, out);
    Ok(())
}

/// out = X Wᵀ: `x` is [m, cols] row-major, `out` is [m, rows] row-major. Up to
/// `MATMUL_SMALL_M` rows go through `matvec_batch`; more go through a GEMM on dequantized rows.
pub fn matmul(w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> QResult<()> {
    matmul_with(default_isa(), w, x, m, out)
}

/// `matmul` with the kernels of `isa` (for the dequantization; `gemm` picks its own).
pub fn matmul_with(isa: Isa, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> QResult<()> {
    let ready = isa.ready()?;
    check_batch(w, x, m, out)?;
    product(ready, activations(), w, x, m, out);
    Ok(())
}

/// `matmul` with int8 activations where `int8_gemm_runs(isa, w.ty)` (more than `MATMUL_SMALL_M`
/// rows) or `int8_supported(w.ty)` (up to that many), exact otherwise, whatever the process-wide
/// choice.
pub fn matmul_int8_with(isa: Isa, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> QResult<()> {
    let ready = isa.ready()?;
    check_batch(w, x, m, out)?;
    product(ready, Activations::Int8, w, x, m, out);
    Ok(())
}

/// The choice behind `matmul`: up to `MATMUL_SMALL_M` rows the batched kernels (int8 where `act`
/// says and the type allows), above it the int8 GEMM where `act` says and it runs here, else the
/// exact GEMM (f32_gemm.rs on AVX-512, else gemm on panels). Sizes are checked.
fn product(ready: Ready, act: Activations, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    if m <= MATMUL_SMALL_M || w.cols == 0 || w.rows == 0 {
        batch(ready, act, w, x, m, out);
    } else if !x86_gemm(ready, act, w, x, m, out) {
        panel::matmul(ready, w, x, m, out);
    }
}

/// The x86 GEMMs for more than `MATMUL_SMALL_M` rows: int8 (int8_gemm.rs) where `act` says and
/// `int8_gemm_runs`, else the exact f32 one (f32_gemm.rs) where AVX-512 runs. False, with `out`
/// untouched, where neither runs: gemm on panels then (panel.rs).
fn x86_gemm(ready: Ready, act: Activations, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if act == Activations::Int8 && int8_gemm::runs(ready.isa(), w.ty) {
            int8_gemm::matmul(ready, w, x, m, out);
        } else if f32_gemm::runs(ready.isa()) {
            f32_gemm::matmul(ready, w, x, m, out);
        } else {
            return false;
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ready, act, w, x, m, out);
        false
    }
}

/// Whether products of more than `MATMUL_SMALL_M` rows take int8 activations (when chosen) with
/// the kernels of `isa` on this CPU: AVX-512 VNNI and a type `int8_supported` takes
/// (int8_gemm.rs). Elsewhere they stay exact (f32_gemm.rs on AVX-512, else panels + gemm).
pub fn int8_gemm_runs(isa: Isa, ty: QType) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        int8_gemm::runs(isa, ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, ty);
        false
    }
}

/// Dequantizes rows `first..first + out.len() / cols` of W into `out` (row-major f32), with the
/// same values as the reference dequantizers. `out.len()` must be a whole number of rows.
pub fn dequantize_rows(w: &QMatrix, first: usize, out: &mut [f32]) -> QResult<()> {
    dequantize_rows_with(default_isa(), w, first, out)
}

/// `dequantize_rows` with the kernels of `isa`.
pub fn dequantize_rows_with(isa: Isa, w: &QMatrix, first: usize, out: &mut [f32]) -> QResult<()> {
    let ready = isa.ready()?;
    w.validate()?;
    if w.cols == 0 {
        return if out.is_empty() { Ok(()) } else { invalid("dequantize_rows: W has no columns".into()) };
    }
    let n = out.len() / w.cols;
    if !out.len().is_multiple_of(w.cols) || first.checked_add(n).is_none_or(|end| end > w.rows) {
        return invalid(format!(
            "dequantize_rows: {} values from row {first} of a [{}, {}] matrix",
            out.len(),
            w.rows,
            w.cols
        ));
    }
    dequant_rows(ready, w, first, out);
    Ok(())
}

fn check_len(what: &str, got: usize, want: usize, of: &str) -> QResult<()> {
    if got == want { Ok(()) } else { invalid(format!("{what} has {got} elements, W has {want} {of}")) }
}

fn check_batch(w: &QMatrix, x: &[f32], m: usize, out: &[f32]) -> QResult<()> {
    w.validate()?;
    let xn = m.checked_mul(w.cols);
    let on = m.checked_mul(w.rows);
    if xn != Some(x.len()) || on != Some(out.len()) {
        return invalid(format!(
            "X with {} values and out with {} for {m} rows times a [{}, {}] W: need {m}x{} and {m}x{}",
            x.len(),
            out.len(),
            w.rows,
            w.cols,
            w.cols,
            w.rows
        ));
    }
    Ok(())
}

/// All x rows, in groups of up to `BATCH_GROUP` that each read W once. Sizes are checked.
fn batch(ready: Ready, act: Activations, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    if w.rows == 0 {
        return;
    }
    let int8 = act == Activations::Int8 && int8_supported(w.ty) && w.cols > 0;
    let q8: Vec<q8::Q8Row> =
        if int8 { x.chunks_exact(w.cols).map(q8::Q8Row::quantize).collect() } else { Vec::new() };
    let mut i = 0;
    while i < m {
        let g = (m - i).min(BATCH_GROUP);
        let xs = &x[i * w.cols..(i + g) * w.cols];
        let ys = &mut out[i * w.rows..(i + g) * w.rows];
        macro_rules! group {
            ($n:literal) => {
                if int8 {
                    let qs: [&q8::Q8Row; $n] = std::array::from_fn(|j| &q8[i + j]);
                    split_rows(w, rows_of_mut::<$n>(ys, w.rows), |r0, ys| {
                        dot_rows_int8(ready, w, r0, &qs, ys)
                    })
                } else {
                    let xs = rows_of::<$n>(xs, w.cols);
                    batch_group::<$n>(ready, w, &xs, rows_of_mut(ys, w.rows))
                }
            };
        }
        match g {
            1 => group!(1),
            2 => group!(2),
            3 => group!(3),
            _ => group!(4),
        }
        i += g;
    }
}

/// The M rows of `len` elements of `v` (which holds exactly M of them).
fn rows_of<const M: usize>(v: &[f32], len: usize) -> [&[f32]; M] {
    std::array::from_fn(|i| &v[i * len..(i + 1) * len])
}

fn rows_of_mut<const M: usize>(v: &mut [f32], len: usize) -> [&mut [f32]; M] {
    let mut rest = v;
    std::array::from_fn(|_| {
        let (row, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        row
    })
}

/// ys[i] = W xs[i] for M x rows.
fn batch_group<const M: usize>(ready: Ready, w: &QMatrix, xs: &[&[f32]; M], ys: [&mut [f32]; M]) {
    if w.cols == 0 {
        ys.into_iter().for_each(|y| y.fill(0.0));
        return;
    }
    split_rows(w, ys, |r0, ys| dot_rows(ready, w, r0, xs, ys));
}

/// Cuts the rows of W into ranges, one task each, and calls `f(r0, ys)` with every y cut to
/// the range's rows.
fn split_rows<const M: usize>(
    w: &QMatrix,
    ys: [&mut [f32]; M],
    f: impl Fn(usize, &mut [&mut [f32]; M]) + Sync,
) {
    if w.rows == 0 {
        return;
    }
    let tasks = row_tasks(w.rows, w.row_bytes());
    if tasks == 1 {
        let mut ys = ys;
        f(0, &mut ys);
        return;
    }
    let chunk = w.rows.div_ceil(tasks);
    // Cut every y into the same row ranges: task t gets rows t*chunk.. of each.
    let mut rest = ys;
    let mut parts = Vec::with_capacity(tasks);
    let mut r0 = 0;
    while r0 < w.rows {
        let len = chunk.min(w.rows - r0);
        let part: [&mut [f32]; M] = std::array::from_fn(|i| {
            let (head, tail) = std::mem::take(&mut rest[i]).split_at_mut(len);
            rest[i] = tail;
            head
        });
        parts.push((r0, part));
        r0 += len;
    }
    // The spin pool, not rayon: a decode step's products are too short to wake sleeping workers
    // for (spin_pool.rs).
    crate::backend::cpu::spin_pool::for_each_mut(&mut parts, &|_, (r0, ys)| f(*r0, ys));
}

/// How many rayon tasks a pass over `rows` rows of `row_bytes` should use: none below
/// `MIN_TASK_BYTES` each, up to four per thread for balance, a multiple of the thread count so
/// the last wave is full.
fn row_tasks(rows: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_size = rows.saturating_mul(row_bytes) / MIN_TASK_BYTES;
    let n = by_size.clamp(1, 4 * threads);
    if n == 1 { 1 } else { n.next_multiple_of(threads).min(rows) }
}

/// Dispatch of the row dot products. `Ready` proves the CPU runs the family.
fn dot_rows<const M: usize>(
    ready: Ready,
    w: &QMatrix,
    r0: usize,
    xs: &[&[f32]; M],
    ys: &mut [&mut [f32]; M],
) {
    match ready.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Ready` exists only for families whose CPU features were detected.
        Isa::Avx2 => unsafe { avx2::dot_rows(w, r0, xs, ys) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::dot_rows(w, r0, xs, ys) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { neon::dot_rows(w, r0, xs, ys) },
        // Portable, and the families this build lacks (which never become `Ready`).
        _ => portable::dot_rows(w, r0, xs, ys),
    }
}

/// Dispatch of the int8-activation row products: the AVX-512 family runs the 256-bit kernels
/// with VNNI where the CPU has it (AVX-512 VNNI + VL), the AVX2 ones otherwise (which every
/// AVX-512 CPU has); the AVX2 family runs those; portable otherwise.
fn dot_rows_int8<const M: usize>(
    ready: Ready,
    w: &QMatrix,
    r0: usize,
    xs: &[&q8::Q8Row; M],
    ys: &mut [&mut [f32]; M],
) {
    match ready.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `vnni_available` detected AVX-512F, VL and VNNI; `Ready` for AVX-512, AVX2, FMA, F16C.
        Isa::Avx512 if avx2_q8::vnni_available() => unsafe { avx2_q8::vnni::dot_rows(w, r0, xs, ys) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Ready` for AVX2 or AVX-512 means AVX2, FMA and F16C were detected.
        Isa::Avx2 | Isa::Avx512 => unsafe { avx2_q8::plain::dot_rows(w, r0, xs, ys) },
        _ => q8::dot_rows_portable(w, r0, xs, ys),
    }
}

/// Dispatch of row dequantization (`out` whole rows, `cols > 0`).
fn dequant_rows(ready: Ready, w: &QMatrix, r0: usize, out: &mut [f32]) {
    match ready.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Ready` exists only for families whose CPU features were detected.
        Isa::Avx2 => unsafe { avx2::dequant_rows(w, r0, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::dequant_rows(w, r0, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { neon::dequant_rows(w, r0, out) },
        _ => portable::dequant_rows(w, r0, out),
    }
}
