//! Prefill with int8 activations (opt-in, q8.rs): out = X Wᵀ for more than `MATMUL_SMALL_M` x
//! rows, on AVX-512 VNNI, whose `vpdpbusd` multiplies 64 byte pairs and adds them in fours to 16
//! int32 lanes in one instruction.
//!
//! Layout. The x rows ("tokens") are quantized as q8.rs does for decode (per 32 values: bytes, a
//! scale, sums) and packed sixteen to a tile: one 512-bit register holds four consecutive bytes of
//! each of 16 tokens. A weight row is unpacked once into unsigned code bytes, with a scale and an
//! offset per 16 weights (q8.rs's `IntChunk`: weight = s · code + off). Four codes of one row,
//! broadcast to every lane, times such a register add four products to each of the 16 tokens'
//! sums; `ROWS` weight rows share each x register. The integer sums are exact and are converted
//! and scaled once per 32 weights (per 16 for Q6_K, whose scales change every 16); the offsets
//! multiply the tokens' byte sums, one FMA per 32 (or 16) weights.
//!
//! No f32 or int8 copy of W exists: each task unpacks `ROWS` rows at a time into a buffer that
//! stays in L1/L2, and runs every token tile over it.
//!
//! Numerics: those of the int8 matrix-vector kernels (the products of the dequantized weights
//! with the quantized x, summed in another float order), so q8.rs's error bound holds.
//!
//! Only VNNI so far: without it the exact panels + gemm path stays. An AVX2 version (`vpmaddubsw`,
//! `vpmaddwd` and an add: three instructions for what `vpdpbusd` does in one, on half the width)
//! would gain less and is not written; nor is a NEON one (`sdot`).

use rayon::prelude::*;

use super::OutPtr;
use super::blocks::CHUNK;
use super::format::{QMatrix, QType};
use super::isa::{Isa, Ready};
use super::q8::{self, Q8Row};

/// Tokens per tile: the int32 lanes of one 512-bit register.
const TILE: usize = 16;

/// Weight rows multiplied with each x register: their sums and accumulators (2 · ROWS registers)
/// fit in the 32 vector registers beside the x register and the scales.
const ROWS: usize = 8;

/// Four-byte groups per 32-weight chunk.
const GROUPS: usize = CHUNK / 4;

/// Whether the int8 GEMM runs for `ty` with the kernels of `isa` on this CPU.
pub(super) fn runs(isa: Isa, ty: QType) -> bool {
    q8::int8_supported(ty) && vnni_available(isa)
}

fn vnni_available(isa: Isa) -> bool {
    isa == Isa::Avx512 && isa.is_available() && super::avx2_q8::vnni_available()
}

/// The x rows quantized and packed in tiles of `TILE` tokens (a partial last tile padded with
/// zero tokens, whose scale and sums are 0).
struct PackedX {
    tiles: usize,
    chunks: usize,
    /// [tile][group of four columns][token]: four bytes of one token as one little-endian i32.
    q: Vec<i32>,
    /// [tile][chunk][token]: the token's scale for the chunk.
    d: Vec<f32>,
    /// [tile][chunk][token]: d · the sum of the chunk's bytes.
    sum: Vec<f32>,
    /// [tile][half chunk][token]: d · the sum of the half's bytes.
    half_sum: Vec<f32>,
}

impl PackedX {
    /// `x` is [m, cols], cols a multiple of 32.
    fn pack(x: &[f32], m: usize, cols: usize) -> PackedX {
        let chunks = cols / CHUNK;
        let groups = cols / 4;
        let tiles = m.div_ceil(TILE);
        let mut p = PackedX {
            tiles,
            chunks,
            q: vec![0; tiles * groups * TILE],
            d: vec![0.0; tiles * chunks * TILE],
            sum: vec![0.0; tiles * chunks * TILE],
            half_sum: vec![0.0; tiles * 2 * chunks * TILE],
        };
        let parts =
            p.q.chunks_mut(groups * TILE)
                .zip(p.d.chunks_mut(chunks * TILE))
                .zip(p.sum.chunks_mut(chunks * TILE))
                .zip(p.half_sum.chunks_mut(2 * chunks * TILE));
        let rows: Vec<&[f32]> = x.chunks_exact(cols).collect();
        parts.enumerate().par_bridge().for_each(|(tile, (((q, d), sum), half_sum))| {
            for t in 0..TILE.min(m - tile * TILE) {
                let row = Q8Row::quantize(rows[tile * TILE + t]);
                for (g, b) in row.q.chunks_exact(4).enumerate() {
                    q[g * TILE + t] = i32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
                }
                for c in 0..chunks {
                    d[c * TILE + t] = row.d[c];
                    sum[c * TILE + t] = row.sum[c];
                }
                for h in 0..2 * chunks {
                    half_sum[h * TILE + t] = row.half_sum[h];
                }
            }
        });
        p
    }
}

/// `ROWS` weight rows unpacked: codes as unsigned bytes, row after row, and per 16 weights a
/// scale and an offset, interleaved by row (rows past the end of W are zeros).
struct Rows {
    cols: usize,
    /// [row][column].
    code: Vec<u8>,
    /// [half chunk][row].
    s: Vec<f32>,
    off: Vec<f32>,
}

impl Rows {
    fn new(cols: usize) -> Rows {
        Rows {
            cols,
            code: vec![0; ROWS * cols],
            s: vec![0.0; ROWS * cols / 16],
            off: vec![0.0; ROWS * cols / 16],
        }
    }
}

/// out = X Wᵀ. The caller checked the sizes (`x` [m, cols], `out` [m, rows], rows and cols > 0)
/// and `runs(ready.isa(), w.ty)`.
pub(super) fn matmul(ready: Ready, w: &QMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    debug_assert!(runs(ready.isa(), w.ty) && w.cols.is_multiple_of(CHUNK));
    let px = PackedX::pack(x, m, w.cols);
    let dst = OutPtr(out.as_mut_ptr());
    let passes = w.rows.div_ceil(ROWS);
    let (rows, split) = (w.rows, w.ty == QType::Q6K);
    (0..passes).into_par_iter().with_min_len(2).for_each_init(
        || Rows::new(w.cols),
        |buf, p| {
            let r0 = p * ROWS;
            // SAFETY: `runs` checked the AVX-512 family (so AVX2, FMA, F16C) on this CPU.
            unsafe { vnni::unpack(buf, w, r0) };
            let n = ROWS.min(rows - r0);
            for tile in 0..px.tiles {
                let mut acc = [[0f32; TILE]; ROWS];
                // SAFETY: `runs` checked AVX-512F and VNNI on this CPU.
                unsafe {
                    if split {
                        vnni::tile::<true>(&px, tile, buf, &mut acc)
                    } else {
                        vnni::tile::<false>(&px, tile, buf, &mut acc)
                    }
                }
                let tokens = TILE.min(m - tile * TILE);
                for (r, a) in acc.iter().enumerate().take(n) {
                    for (t, &v) in a.iter().enumerate().take(tokens) {
                        // SAFETY: token tile·16 + t < m and row r0 + r < rows: inside `out`
                        // ([m, rows]); only this task writes row r0 + r.
                        unsafe { *dst.at((tile * TILE + t) * rows + r0 + r) = v };
                    }
                }
            }
        },
    );
}

mod vnni {
    use std::arch::x86_64::*;

    use super::super::avx2_q8;
    use super::super::blocks::{CHUNK, arr, arr_mut};
    use super::super::format::QMatrix;
    use super::{GROUPS, PackedX, ROWS, Rows, TILE};

    /// Rows `r0..r0 + ROWS` of W (those that exist) into `rows`. AVX2 only, the features of the
    /// chunk walk, so that the per-chunk closure inlines into it.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn unpack(rows: &mut Rows, w: &QMatrix, r0: usize) {
        let cols = rows.cols;
        for r in 0..ROWS {
            let code = &mut rows.code[r * cols..(r + 1) * cols];
            if r0 + r >= w.rows {
                code.fill(0);
                rows.s.iter_mut().skip(r).step_by(ROWS).for_each(|v| *v = 0.0);
                rows.off.iter_mut().skip(r).step_by(ROWS).for_each(|v| *v = 0.0);
                continue;
            }
            let (s, off) = (&mut rows.s, &mut rows.off);
            avx2_q8::unsigned_chunks(
                w.ty,
                w.row(r0 + r),
                #[inline(always)]
                |c, q, cs, co| {
                    let dst: &mut [u8; CHUNK] = arr_mut(code, CHUNK * c);
                    // SAFETY: `dst` is 32 writable bytes; the store has no alignment requirement.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), q) };
                    for h in 0..2 {
                        s[(2 * c + h) * ROWS + r] = cs[h];
                        off[(2 * c + h) * ROWS + r] = co[h];
                    }
                },
            );
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn load_i32x16(v: &[i32; TILE]) -> __m512i {
        // SAFETY: `v` is 16 readable i32; the load has no alignment requirement.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn load_f32x16(v: &[f32; TILE]) -> __m512 {
        // SAFETY: `v` is 16 readable floats; the load has no alignment requirement.
        unsafe { _mm512_loadu_ps(v.as_ptr()) }
    }

    /// acc[r][t] = Σ over the columns of W row r (of `rows`) times token t of `tile`. With
    /// `SPLIT`, each 16-weight half has its own scale and offset (Q6_K); otherwise both halves
    /// share the first half's, and sums run over whole chunks.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) fn tile<const SPLIT: bool>(
        px: &PackedX,
        tile: usize,
        rows: &Rows,
        acc: &mut [[f32; TILE]; ROWS],
    ) {
        let chunks = px.chunks;
        let groups = chunks * GROUPS;
        let xq = &px.q[tile * groups * TILE..(tile + 1) * groups * TILE];
        let xd = &px.d[tile * chunks * TILE..(tile + 1) * chunks * TILE];
        let xsum = &px.sum[tile * chunks * TILE..(tile + 1) * chunks * TILE];
        let xhalf = &px.half_sum[tile * 2 * chunks * TILE..(tile + 1) * 2 * chunks * TILE];
        let mut a = [_mm512_setzero_ps(); ROWS];
        let cols = rows.cols;
        for c in 0..chunks {
            let wc: [&[u8; CHUNK]; ROWS] = std::array::from_fn(|r| arr(&rows.code, r * cols + CHUNK * c));
            // One integer sum per chunk, or per half chunk (SPLIT).
            for part in 0..if SPLIT { 2 } else { 1 } {
                let span = if SPLIT { GROUPS / 2 } else { GROUPS };
                let mut isum = [_mm512_setzero_si512(); ROWS];
                for g in part * span..(part + 1) * span {
                    let xv = load_i32x16(arr(xq, (c * GROUPS + g) * TILE));
                    for (s, wc) in isum.iter_mut().zip(wc) {
                        let four = i32::from_le_bytes(*arr(wc, 4 * g));
                        *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(four), xv);
                    }
                }
                let h = 2 * c + part;
                let d = load_f32x16(arr(xd, c * TILE));
                let xs =
                    if SPLIT { load_f32x16(arr(xhalf, h * TILE)) } else { load_f32x16(arr(xsum, c * TILE)) };
                let ws: &[f32; ROWS] = arr(&rows.s, h * ROWS);
                let wo: &[f32; ROWS] = arr(&rows.off, h * ROWS);
                for (((a, s), &ws), &wo) in a.iter_mut().zip(isum).zip(ws).zip(wo) {
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(ws));
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, *a);
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(wo), xs, *a);
                }
            }
        }
        for (o, v) in acc.iter_mut().zip(a) {
            // SAFETY: `o` is 16 writable floats; the store has no alignment requirement.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
        }
    }
}
