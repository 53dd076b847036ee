//! AVX2 kernels of the int8-activation path (q8.rs): a chunk's codes as 32 bytes, multiplied with
//! the x bytes by `vpmaddubsw` (unsigned codes times signed x, pairs summed in i16: at most
//! 2 · 63 · 127, no saturation) and `vpmaddwd` (to i32), converted once and scaled once per chunk.
//! Q8_0's signed codes go through the sign trick (|w| times x with w's sign).

use std::arch::x86_64::*;

use super::avx2::{f16_pair, hsum8, load_u8x16};
use super::blocks::{self, CHUNK, arr};
use super::format::{QMatrix, QType};
use super::q8::{Q8Row, XBlock};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_x(q: &[i8], c: usize) -> __m256i {
    let b: &[i8; 32] = arr(q, CHUNK * c);
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// The 32 nibbles of 16 bytes as bytes, in chunk order (low nibbles are weights 0..16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibble_bytes(qs: &[u8; 16]) -> __m256i {
    let v = load_u8x16(qs);
    let m = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_one(b: &[u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(*b) as i32)))
}

/// Sums of code times x over each four consecutive bytes: lanes 0-3 cover weights 0..16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn udot(q: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1))
}

/// Calls `f(state, c, codes, s, off)` for chunk `c` of a row: `codes` 32 bytes (signed for
/// Q8_0, unsigned otherwise), weight `i` = `s[i / 16] · code + off[i / 16]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn walk<S, F: FnMut(S, usize, __m256i, [f32; 2], [f32; 2]) -> S>(
    ty: QType,
    row: &[u8],
    init: S,
    mut f: F,
) -> S {
    let mut state = init;
    let m4 = _mm256_set1_epi8(0x0f);
    match ty {
        QType::Q4_0 => {
            for (i, b) in row.chunks_exact(18).enumerate() {
                let d = f16_one(arr(b, 0));
                state = f(state, i, nibble_bytes(arr(b, 2)), [d; 2], [-8.0 * d; 2]);
            }
        }
        QType::Q4_1 => {
            for (i, b) in row.chunks_exact(20).enumerate() {
                let (d, m) = f16_pair(arr(b, 0));
                state = f(state, i, nibble_bytes(arr(b, 4)), [d; 2], [m; 2]);
            }
        }
        QType::Q8_0 => {
            for (i, b) in row.chunks_exact(34).enumerate() {
                state = f(state, i, load32(arr(b, 2)), [f16_one(arr(b, 0)); 2], [0.0; 2]);
            }
        }
        QType::Q4K => {
            for (s, b) in row.chunks_exact(144).enumerate() {
                let b: &[u8; 144] = arr(b, 0);
                let (d, dmin) = f16_pair(arr(b, 0));
                let (dl, ml) = blocks::k4_scales(d, dmin, arr(b, 4));
                for j in 0..4 {
                    let v = load32(arr(b, 16 + 32 * j));
                    let c = 2 * j;
                    state = f(state, 8 * s + c, _mm256_and_si256(v, m4), [dl[c]; 2], [-ml[c]; 2]);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    state = f(state, 8 * s + c + 1, hi, [dl[c + 1]; 2], [-ml[c + 1]; 2]);
                }
            }
        }
        QType::Q6K => {
            let m30 = _mm256_set1_epi8(0x30);
            for (s, b) in row.chunks_exact(210).enumerate() {
                let b: &[u8; 210] = arr(b, 0);
                let ds = blocks::k6_scales(f16_one(arr(b, 208)), arr(b, 192));
                for n in 0..2 {
                    let qa = load32(arr(b, 64 * n));
                    let qb = load32(arr(b, 64 * n + 32));
                    let qh = load32(arr(b, 128 + 32 * n));
                    // 16-bit shifts move bits across bytes; the masks keep each byte's own.
                    let codes = [
                        _mm256_or_si256(
                            _mm256_and_si256(qa, m4),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(qb, m4),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(qa, 4), m4),
                            _mm256_and_si256(qh, m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                        ),
                    ];
                    for (t, &q) in codes.iter().enumerate() {
                        let sc = [ds[8 * n + 2 * t], ds[8 * n + 2 * t + 1]];
                        state = f(state, 8 * s + 4 * n + t, q, sc, [-32.0 * sc[0], -32.0 * sc[1]]);
                    }
                }
            }
        }
        _ => unreachable!("{} has no int8 path", ty.name()),
    }
    state
}

/// `ys[i][r] = W[r0 + r] · xs[i]` (the x rows quantized) for the rows `ys` covers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_rows<const M: usize>(w: &QMatrix, r0: usize, xs: &[&Q8Row; M], ys: &mut [&mut [f32]; M]) {
    let signed = w.ty == QType::Q8_0;
    // Plain slices, so that the loop reads no Vec headers.
    let qs: [&[i8]; M] = std::array::from_fn(|i| &xs[i].q[..]);
    let xb: [&[XBlock]; M] = std::array::from_fn(|i| &xs[i].blocks[..]);
    for r in 0..ys[0].len() {
        let (acc, off) = walk(
            w.ty,
            w.row(r0 + r),
            ([_mm256_setzero_ps(); M], [0f32; M]),
            #[inline(always)]
            |(mut acc, mut off): ([__m256; M], [f32; M]), c, q, s: [f32; 2], o: [f32; 2]| {
                for i in 0..M {
                    let xq = load_x(qs[i], c);
                    let p = if signed {
                        udot(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q))
                    } else {
                        udot(q, xq)
                    };
                    let b = xb[i][c];
                    let sc = if s[0] == s[1] {
                        _mm256_set1_ps(b.d * s[0])
                    } else {
                        _mm256_set_m128(_mm_set1_ps(b.d * s[1]), _mm_set1_ps(b.d * s[0]))
                    };
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[i]);
                    off[i] = o[1].mul_add(b.dsum_hi, o[0].mul_add(b.dsum_lo, off[i]));
                }
                (acc, off)
            },
        );
        for i in 0..M {
            ys[i][r] = hsum8(acc[i]) + off[i];
        }
    }
}
