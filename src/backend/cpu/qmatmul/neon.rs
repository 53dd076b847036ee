//! AArch64 NEON kernels: a 32-weight chunk is dequantized in eight `float32x4_t` registers (codes
//! assembled in 16-byte vectors, widened to i32, converted, scaled) and multiplied into f32
//! accumulators. NEON is part of every AArch64 CPU (and of the baseline target); the functions
//! still carry `#[target_feature(enable = "neon")]`, which makes the intrinsics safe to call, and
//! the dispatcher calls in after `Isa::Neon.is_available()` like for the x86 families. Exactness argument as in avx2.rs: exact code conversion, exact scale
//! products, and FMA only where the product is exact.

use std::arch::aarch64::*;

use super::blocks::{self, CHUNK, arr, arr_mut, lanes, walk_float_row};
use super::format::{QMatrix, QType};

/// Weights `4g..4g + 4` of a chunk in register `g`.
type Chunk = [float32x4_t; 8];

/// Quarter of a chunk: 16 weights.
type Half = [float32x4_t; 4];

/// Bit `i % 8` in lane `i`: selects the bit of a byte that belongs to each lane (Q5_0/Q5_1).
const LANE_BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

#[inline]
#[target_feature(enable = "neon")]
fn load_u8x16(b: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `b` is 16 readable bytes; NEON loads have no alignment requirement.
    unsafe { vld1q_u8(b.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn load_f32x4(x: &[f32; 4]) -> float32x4_t {
    // SAFETY: `x` is 4 readable floats.
    unsafe { vld1q_f32(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn store_f32x4(o: &mut [f32; 4], v: float32x4_t) {
    // SAFETY: `o` is 4 writable floats.
    unsafe { vst1q_f32(o.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "neon")]
fn cat(a: Half, b: Half) -> Chunk {
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// 16 signed codes to 16 floats (exact).
#[inline]
#[target_feature(enable = "neon")]
fn widen_s8(v: int8x16_t) -> Half {
    let lo = vmovl_s8(vget_low_s8(v));
    let hi = vmovl_high_s8(v);
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
        vcvtq_f32_s32(vmovl_high_s16(lo)),
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
        vcvtq_f32_s32(vmovl_high_s16(hi)),
    ]
}

/// 16 unsigned codes to 16 floats (exact).
#[inline]
#[target_feature(enable = "neon")]
fn widen_u8(v: uint8x16_t) -> Half {
    let lo = vmovl_u8(vget_low_u8(v));
    let hi = vmovl_high_u8(v);
    [
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
        vcvtq_f32_u32(vmovl_high_u16(lo)),
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
        vcvtq_f32_u32(vmovl_high_u16(hi)),
    ]
}

/// Unsigned codes minus an offset, as signed bytes (all codes here are below 64, so no wrap).
#[inline]
#[target_feature(enable = "neon")]
fn minus(v: uint8x16_t, off: i8) -> int8x16_t {
    vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(off))
}

/// Signed codes times the scale: exact, as in the reference `code as f32 * d`.
#[inline]
#[target_feature(enable = "neon")]
fn scaled(q: int8x16_t, d: f32) -> Half {
    let f = widen_s8(q);
    lanes!(g in 4 => vmulq_n_f32(f[g], d))
}

/// `q * d + m` with one rounding, as the reference (the product is exact).
#[inline]
#[target_feature(enable = "neon")]
fn scaled_plus(q: uint8x16_t, d: f32, m: f32) -> Half {
    let (f, mv) = (widen_u8(q), vdupq_n_f32(m));
    lanes!(g in 4 => vfmaq_n_f32(mv, f[g], d))
}

/// `dl * q - ml` with one rounding, as the reference (the product is exact).
#[inline]
#[target_feature(enable = "neon")]
fn k_half(q: uint8x16_t, dl: f32, ml: f32) -> Half {
    let (f, neg) = (widen_u8(q), vdupq_n_f32(-ml));
    lanes!(g in 4 => vfmaq_n_f32(neg, f[g], dl))
}

/// 0x10 in lane `i` where bit `i` of `bits` is set (the fifth bits of 16 Q5_0/Q5_1 weights).
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(bits: u16) -> uint8x16_t {
    let b = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
    vandq_u8(vtstq_u8(b, load_u8x16(&LANE_BIT)), vdupq_n_u8(0x10))
}

/// 0x10 in lane `l` where bit `c` of `qh[l]` is set (the fifth bits of Q5_K chunk `c`).
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bit_k(qh: uint8x16_t, c: usize) -> uint8x16_t {
    vandq_u8(vtstq_u8(qh, vdupq_n_u8(1 << c)), vdupq_n_u8(0x10))
}

/// Q6_K codes of chunk `t` (0..4) of a half super-block, from `ql[l]` (`qa`), `ql[l + 32]` (`qb`)
/// and `qh[l]`: low bits from qa (t = 0, 2) or qb (t = 1, 3), low nibble for t < 2; bits 2t, 2t+1
/// of qh moved to bits 4, 5.
#[inline]
#[target_feature(enable = "neon")]
fn q6k_codes(t: usize, qa: uint8x16_t, qb: uint8x16_t, qh: uint8x16_t) -> uint8x16_t {
    let low = vdupq_n_u8(0x0f);
    match t {
        0 => vorrq_u8(vandq_u8(qa, low), vshlq_n_u8::<4>(vandq_u8(qh, vdupq_n_u8(0x03)))),
        1 => vorrq_u8(vandq_u8(qb, low), vshlq_n_u8::<2>(vandq_u8(qh, vdupq_n_u8(0x0c)))),
        2 => vorrq_u8(vshrq_n_u8::<4>(qa), vandq_u8(qh, vdupq_n_u8(0x30))),
        _ => vorrq_u8(vshrq_n_u8::<4>(qb), vshrq_n_u8::<2>(vandq_u8(qh, vdupq_n_u8(0xc0)))),
    }
}

/// Four halves (IEEE binary16) to floats, exactly, with `blocks::f16_to_f32`'s method: the bits
/// shifted into a float and scaled by 2^112 (exact; subnormals are not flushed under Linux's
/// default FPCR), infinities and NaNs (quieted) rebuilt with an all-ones exponent.
#[inline]
#[target_feature(enable = "neon")]
fn f16x4(h: uint16x4_t) -> float32x4_t {
    let w = vmovl_u16(h);
    let sign = vshlq_n_u32::<16>(vandq_u32(w, vdupq_n_u32(0x8000)));
    let mag = vshlq_n_u32::<13>(vandq_u32(w, vdupq_n_u32(0x7fff)));
    let scaled = vmulq_f32(vreinterpretq_f32_u32(mag), vdupq_n_f32(f32::from_bits(0x7780_0000)));
    let special = vceqq_u32(vandq_u32(w, vdupq_n_u32(0x7c00)), vdupq_n_u32(0x7c00));
    let nan = vandq_u32(special, vtstq_u32(w, vdupq_n_u32(0x03ff)));
    let inf_nan =
        vorrq_u32(vorrq_u32(mag, vdupq_n_u32(0x7f80_0000)), vandq_u32(nan, vdupq_n_u32(0x0040_0000)));
    vreinterpretq_f32_u32(vorrq_u32(sign, vbslq_u32(special, inf_nan, vreinterpretq_u32_f32(scaled))))
}

/// Eight halves (F16 weights) from 16 bytes.
#[inline]
#[target_feature(enable = "neon")]
fn f16x8(b: &[u8; 16]) -> [float32x4_t; 2] {
    let v = vreinterpretq_u16_u8(load_u8x16(b));
    [f16x4(vget_low_u16(v)), f16x4(vget_high_u16(v))]
}

/// Eight BF16 weights from 16 bytes: each the top half of an f32.
#[inline]
#[target_feature(enable = "neon")]
fn bf16x8(b: &[u8; 16]) -> [float32x4_t; 2] {
    let v = vreinterpretq_u16_u8(load_u8x16(b));
    [
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)),
    ]
}

#[inline]
#[target_feature(enable = "neon")]
fn q4_0(b: &[u8; 18]) -> Chunk {
    let d = blocks::f16_at(b, 0);
    let v = load_u8x16(arr(b, 2));
    let lo = vandq_u8(v, vdupq_n_u8(0x0f));
    let hi = vshrq_n_u8::<4>(v);
    cat(scaled(minus(lo, 8), d), scaled(minus(hi, 8), d))
}

#[inline]
#[target_feature(enable = "neon")]
fn q4_1(b: &[u8; 20]) -> Chunk {
    let (d, m) = (blocks::f16_at(b, 0), blocks::f16_at(b, 2));
    let v = load_u8x16(arr(b, 4));
    cat(scaled_plus(vandq_u8(v, vdupq_n_u8(0x0f)), d, m), scaled_plus(vshrq_n_u8::<4>(v), d, m))
}

#[inline]
#[target_feature(enable = "neon")]
fn q5_0(b: &[u8; 22]) -> Chunk {
    let d = blocks::f16_at(b, 0);
    let qh = u32::from_le_bytes(*arr(b, 2));
    let v = load_u8x16(arr(b, 6));
    let lo = vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0f)), fifth_bits(qh as u16));
    let hi = vorrq_u8(vshrq_n_u8::<4>(v), fifth_bits((qh >> 16) as u16));
    cat(scaled(minus(lo, 16), d), scaled(minus(hi, 16), d))
}

#[inline]
#[target_feature(enable = "neon")]
fn q5_1(b: &[u8; 24]) -> Chunk {
    let (d, m) = (blocks::f16_at(b, 0), blocks::f16_at(b, 2));
    let qh = u32::from_le_bytes(*arr(b, 4));
    let v = load_u8x16(arr(b, 8));
    let lo = vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0f)), fifth_bits(qh as u16));
    let hi = vorrq_u8(vshrq_n_u8::<4>(v), fifth_bits((qh >> 16) as u16));
    cat(scaled_plus(lo, d, m), scaled_plus(hi, d, m))
}

#[inline]
#[target_feature(enable = "neon")]
fn q8_0(b: &[u8; 34]) -> Chunk {
    let d = blocks::f16_at(b, 0);
    let lo = vreinterpretq_s8_u8(load_u8x16(arr(b, 2)));
    let hi = vreinterpretq_s8_u8(load_u8x16(arr(b, 18)));
    cat(scaled(lo, d), scaled(hi, d))
}

/// Calls `f(k, len, chunk)` for each chunk of a row (see blocks.rs for the chunk order). `f` is
/// the caller's `#[inline(always)]` consumer; everything else here is plain calls and macros, so
/// the whole walk compiles as one loop nest with this function's target features.
#[inline]
#[target_feature(enable = "neon")]
fn walk_row<S, F: FnMut(S, usize, usize, &Chunk) -> S>(ty: QType, row: &[u8], init: S, mut f: F) -> S {
    let mut state = init;
    // Hands a chunk to the consumer, threading its state (the accumulators) through this
    // function's locals, so that it stays in registers even where this function is not inlined.
    macro_rules! emit {
        ($k:expr, $len:expr, $chunk:expr) => {
            state = f(state, $k, $len, &$chunk)
        };
    }
    let low = vdupq_n_u8(0x0f);
    match ty {
        QType::F32 => walk_float_row!(row, 4, emit, |c| {
            let c: &[u8; 128] = arr(c, 0);
            let v: [[uint8x16_t; 4]; 2] =
                lanes!(i in 2 => lanes!(g in 4 => load_u8x16(arr(c, 64 * i + 16 * g))));
            [
                vreinterpretq_f32_u8(v[0][0]),
                vreinterpretq_f32_u8(v[0][1]),
                vreinterpretq_f32_u8(v[0][2]),
                vreinterpretq_f32_u8(v[0][3]),
                vreinterpretq_f32_u8(v[1][0]),
                vreinterpretq_f32_u8(v[1][1]),
                vreinterpretq_f32_u8(v[1][2]),
                vreinterpretq_f32_u8(v[1][3]),
            ]
        }),
        QType::F16 => walk_float_row!(row, 2, emit, |c| {
            let c: &[u8; 64] = arr(c, 0);
            let v: [[float32x4_t; 2]; 4] = lanes!(g in 4 => f16x8(arr(c, 16 * g)));
            [v[0][0], v[0][1], v[1][0], v[1][1], v[2][0], v[2][1], v[3][0], v[3][1]]
        }),
        QType::BF16 => walk_float_row!(row, 2, emit, |c| {
            let c: &[u8; 64] = arr(c, 0);
            let v: [[float32x4_t; 2]; 4] = lanes!(g in 4 => bf16x8(arr(c, 16 * g)));
            [v[0][0], v[0][1], v[1][0], v[1][1], v[2][0], v[2][1], v[3][0], v[3][1]]
        }),
        QType::Q4_0 => {
            for (i, b) in row.chunks_exact(18).enumerate() {
                emit!(i * CHUNK, CHUNK, q4_0(arr(b, 0)));
            }
        }
        QType::Q4_1 => {
            for (i, b) in row.chunks_exact(20).enumerate() {
                emit!(i * CHUNK, CHUNK, q4_1(arr(b, 0)));
            }
        }
        QType::Q5_0 => {
            for (i, b) in row.chunks_exact(22).enumerate() {
                emit!(i * CHUNK, CHUNK, q5_0(arr(b, 0)));
            }
        }
        QType::Q5_1 => {
            for (i, b) in row.chunks_exact(24).enumerate() {
                emit!(i * CHUNK, CHUNK, q5_1(arr(b, 0)));
            }
        }
        QType::Q8_0 => {
            for (i, b) in row.chunks_exact(34).enumerate() {
                emit!(i * CHUNK, CHUNK, q8_0(arr(b, 0)));
            }
        }
        QType::Q4K => {
            for (s, b) in row.chunks_exact(144).enumerate() {
                let b: &[u8; 144] = arr(b, 0);
                let (dl, ml) = blocks::k4_scales(blocks::f16_at(b, 0), blocks::f16_at(b, 2), arr(b, 4));
                // Bytes 32j..32j+32 hold chunk 2j in their low nibbles and chunk 2j+1 in the high.
                for j in 0..4 {
                    let q: [uint8x16_t; 2] = lanes!(h in 2 => load_u8x16(arr(b, 16 + 32 * j + 16 * h)));
                    let k = 256 * s + 64 * j;
                    let (c, d) = (2 * j, 2 * j + 1);
                    let lo: [Half; 2] = lanes!(h in 2 => k_half(vandq_u8(q[h], low), dl[c], ml[c]));
                    emit!(k, CHUNK, cat(lo[0], lo[1]));
                    let hi: [Half; 2] = lanes!(h in 2 => k_half(vshrq_n_u8::<4>(q[h]), dl[d], ml[d]));
                    emit!(k + CHUNK, CHUNK, cat(hi[0], hi[1]));
                }
            }
        }
        QType::Q5K => {
            for (s, b) in row.chunks_exact(176).enumerate() {
                let b: &[u8; 176] = arr(b, 0);
                let (dl, ml) = blocks::k4_scales(blocks::f16_at(b, 0), blocks::f16_at(b, 2), arr(b, 4));
                // qh byte l carries the fifth bit of weight l of chunk c in bit c.
                let qh: [uint8x16_t; 2] = lanes!(h in 2 => load_u8x16(arr(b, 16 + 16 * h)));
                for j in 0..4 {
                    let q: [uint8x16_t; 2] = lanes!(h in 2 => load_u8x16(arr(b, 48 + 32 * j + 16 * h)));
                    let k = 256 * s + 64 * j;
                    let (c, d) = (2 * j, 2 * j + 1);
                    let lo: [Half; 2] = lanes!(h in 2 => k_half(vorrq_u8(vandq_u8(q[h], low), fifth_bit_k(qh[h], c)), dl[c], ml[c]));
                    emit!(k, CHUNK, cat(lo[0], lo[1]));
                    let hi: [Half; 2] = lanes!(h in 2 => k_half(vorrq_u8(vshrq_n_u8::<4>(q[h]), fifth_bit_k(qh[h], d)), dl[d], ml[d]));
                    emit!(k + CHUNK, CHUNK, cat(hi[0], hi[1]));
                }
            }
        }
        QType::Q6K => {
            for (s, b) in row.chunks_exact(210).enumerate() {
                let b: &[u8; 210] = arr(b, 0);
                let ds = blocks::k6_scales(blocks::f16_at(b, 208), arr(b, 192));
                for n in 0..2 {
                    // Vector h covers weights 16h..16h+16 of each chunk: ql[l], ql[l + 32], qh[l].
                    let qa: [uint8x16_t; 2] = lanes!(h in 2 => load_u8x16(arr(b, 64 * n + 16 * h)));
                    let qb: [uint8x16_t; 2] = lanes!(h in 2 => load_u8x16(arr(b, 64 * n + 32 + 16 * h)));
                    let qh: [uint8x16_t; 2] = lanes!(h in 2 => load_u8x16(arr(b, 128 + 32 * n + 16 * h)));
                    // Vector h uses scale 8n + h + 2t. (The loop unrolls and the match in
                    // q6k_codes folds.)
                    for t in 0..4 {
                        let part: [Half; 2] = lanes!(h in 2 => scaled(
                            minus(q6k_codes(t, qa[h], qb[h], qh[h]), 32),
                            ds[8 * n + h + 2 * t]
                        ));
                        emit!(256 * s + 128 * n + CHUNK * t, CHUNK, cat(part[0], part[1]));
                    }
                }
            }
        }
    }
    state
}

/// `ys[i][r] = W[r0 + r] · xs[i]` for the rows `ys` covers. The caller guarantees
/// `xs[i].len() == w.cols` and `r0 + ys[i].len() <= w.rows` (all `ys[i]` the same length).
#[target_feature(enable = "neon")]
pub(super) fn dot_rows<const M: usize>(w: &QMatrix, r0: usize, xs: &[&[f32]; M], ys: &mut [&mut [f32]; M]) {
    // Four accumulators per x row cover the FMA latency; with 32 registers, four x rows' worth
    // plus a decoded chunk fit.
    let chains = 4;
    for r in 0..ys[0].len() {
        let acc = walk_row(
            w.ty,
            w.row(r0 + r),
            [[vdupq_n_f32(0.0); 4]; M],
            // Inlined at every chunk site of the walk; the accumulators are its fold state.
            #[inline(always)]
            |mut acc: [[float32x4_t; 4]; M], k, len, c| {
                for (a, x) in acc.iter_mut().zip(xs) {
                    let mut pad = [0f32; CHUNK];
                    let xc: &[f32; CHUNK] = if len == CHUNK {
                        arr(x, k)
                    } else {
                        pad[..len].copy_from_slice(&x[k..k + len]);
                        &pad
                    };
                    for (g, &wv) in c.iter().enumerate() {
                        let xv = load_f32x4(arr(xc, 4 * g));
                        a[g % chains] = vfmaq_f32(a[g % chains], wv, xv);
                    }
                }
                acc
            },
        );
        for (y, a) in ys.iter_mut().zip(&acc) {
            y[r] = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
        }
    }
}

/// Dequantizes rows `r0..r0 + out.len() / cols` into `out` (row-major, `cols > 0`).
#[target_feature(enable = "neon")]
pub(super) fn dequant_rows(w: &QMatrix, r0: usize, out: &mut [f32]) {
    for (r, o) in out.chunks_exact_mut(w.cols).enumerate() {
        walk_row(
            w.ty,
            w.row(r0 + r),
            (),
            #[inline(always)]
            |(), k, len, c| {
                let mut tmp = [0f32; CHUNK];
                let dst: &mut [f32; CHUNK] = if len == CHUNK { arr_mut(o, k) } else { &mut tmp };
                for (g, &v) in c.iter().enumerate() {
                    store_f32x4(arr_mut(dst, 4 * g), v);
                }
                if len < CHUNK {
                    o[k..k + len].copy_from_slice(&tmp[..len]);
                }
            },
        );
    }
}
