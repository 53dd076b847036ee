//! AVX2 kernels of the int8-activation path (q8.rs): a chunk's codes as 32 bytes, multiplied with
//! the x bytes by `vpmaddubsw` (unsigned codes times signed x, pairs summed in i16: at most
//! 2 · 63 · 127, no saturation) and `vpmaddwd` (to i32), converted once and scaled once per chunk.
//! Q8_0's signed codes go through the sign trick (|w| times x with w's sign).
//!
//! The K-quants have their own loops: per super-block, the eight (Q4_K) or sixteen (Q6_K) scales
//! are unpacked and multiplied by the x chunks' scales in two vector operations, and the offset
//! term (mins times x sums) is one vector FMA per super-block into its own accumulator. Done per
//! chunk in scalar code, these cost as much as the integer products, and their chain of dependent
//! scalar FMAs held Q4_K to half the memory bandwidth.

use std::arch::x86_64::*;

use super::avx2::{f16_pair, hsum8, load_f32x8, load_u8x16, prefetch, store_f32x8};
use super::blocks::{self, CHUNK, arr};
use super::format::QType;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Eight unsigned bytes (little-endian in `v`) as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn u8x8_f32(v: u64) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)))
}

/// Eight signed bytes as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn i8x8_f32(b: &[u8; 8]) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*b))))
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

/// `udot` in one instruction: `vpdpbusd` adds the four products of each 32-bit lane to it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn udot_vnni(q: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, x)
}

/// The codes of chunks `4n..4n + 4` of a Q6_K super-block, one register each: four low bits
/// from `ql`, two high bits from `qh`. 16-bit shifts move bits across bytes; the masks keep each
/// byte's own.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_codes(b: &[u8; 210], n: usize) -> [__m256i; 4] {
    let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let qa = load32(arr(b, 64 * n));
    let qb = load32(arr(b, 64 * n + 32));
    let qh = load32(arr(b, 128 + 32 * n));
    [
        _mm256_or_si256(_mm256_and_si256(qa, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
        _mm256_or_si256(_mm256_and_si256(qb, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4), _mm256_and_si256(qh, m30)),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
        ),
    ]
}

/// Calls `f(c, codes, s, off)` for every chunk `c` of a row of a type `q8::int8_supported` takes:
/// `codes` the chunk's 32 codes as unsigned bytes (Q8_0's signed ones plus 128), weight `i` of
/// half `h` = `s[h] · code + off[h]` (for the int8 GEMM's unpacking, once per row per product).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn unsigned_chunks(ty: QType, row: &[u8], mut f: impl FnMut(usize, __m256i, [f32; 2], [f32; 2])) {
    let m4 = _mm256_set1_epi8(0x0f);
    match ty {
        QType::Q4_0 | QType::Q4_1 | QType::Q8_0 => plain::walk(
            ty,
            row,
            (),
            #[inline(always)]
            |(), c, q, s, o| {
                if ty == QType::Q8_0 {
                    // code + 128 in bytes is the sign bit flipped; the offset takes 128 · s back (a
                    // power of two times s: exact).
                    f(c, _mm256_xor_si256(q, _mm256_set1_epi8(-128)), [s; 2], [-128.0 * s; 2])
                } else {
                    f(c, q, [s; 2], [o; 2])
                }
            },
        ),
        QType::Q4K => {
            for (s, b) in row.chunks_exact(144).enumerate() {
                prefetch(b);
                let b: &[u8; 144] = arr(b, 0);
                let (dl, ml) = blocks::k4_scales(blocks::f16_at(b, 0), blocks::f16_at(b, 2), arr(b, 4));
                for j in 0..4 {
                    let v = load32(arr(b, 16 + 32 * j));
                    f(8 * s + 2 * j, _mm256_and_si256(v, m4), [dl[2 * j]; 2], [-ml[2 * j]; 2]);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    f(8 * s + 2 * j + 1, hi, [dl[2 * j + 1]; 2], [-ml[2 * j + 1]; 2]);
                }
            }
        }
        QType::Q6K => {
            for (s, b) in row.chunks_exact(210).enumerate() {
                prefetch(b);
                let b: &[u8; 210] = arr(b, 0);
                let ds = blocks::k6_scales(blocks::f16_at(b, 208), arr(b, 192));
                for n in 0..2 {
                    let codes = q6k_codes(b, n);
                    for (t, &q) in codes.iter().enumerate() {
                        let k = 8 * n + 2 * t;
                        f(8 * s + 4 * n + t, q, [ds[k], ds[k + 1]], [-32.0 * ds[k], -32.0 * ds[k + 1]]);
                    }
                }
            }
        }
        _ => unreachable!("{} has no int8 path", ty.name()),
    }
}

/// The matrix-vector kernels, written once and compiled twice (`plain`: AVX2's `vpmaddubsw` +
/// `vpmaddwd` per 32 byte products; `vnni`: AVX-512 VNNI's `vpdpbusd` on 256-bit registers, one
/// instruction), each with its own target features so that every helper and closure inlines
/// into it. The integer sums are exact either way: both compute the same results.
macro_rules! int8_kernels {
    ($features:literal, $udot:ident) => {
        use std::arch::x86_64::*;

        use super::super::blocks::{self, arr, arr_mut};
        use super::super::format::{QMatrix, QType};
        use super::super::q8::Q8Row;
        use super::*;

        /// Calls `f(state, c, codes, s, off)` for chunk `c` of a row of a 32-weight block format:
        /// `codes` 32 bytes (signed for Q8_0, unsigned otherwise), weight `i` = `s · code + off`.
        #[inline]
        #[target_feature(enable = $features)]
        pub(super) fn walk<S, F: FnMut(S, usize, __m256i, f32, f32) -> S>(
            ty: QType,
            row: &[u8],
            init: S,
            mut f: F,
        ) -> S {
            let mut state = init;
            match ty {
                QType::Q4_0 => {
                    for (i, b) in row.chunks_exact(18).enumerate() {
                        prefetch(b);
                        let d = f16_one(arr(b, 0));
                        state = f(state, i, nibble_bytes(arr(b, 2)), d, -8.0 * d);
                    }
                }
                QType::Q4_1 => {
                    for (i, b) in row.chunks_exact(20).enumerate() {
                        prefetch(b);
                        let (d, m) = f16_pair(arr(b, 0));
                        state = f(state, i, nibble_bytes(arr(b, 4)), d, m);
                    }
                }
                QType::Q8_0 => {
                    for (i, b) in row.chunks_exact(34).enumerate() {
                        prefetch(b);
                        state = f(state, i, load32(arr(b, 2)), f16_one(arr(b, 0)), 0.0);
                    }
                }
                _ => unreachable!("{} has no 32-weight int8 path", ty.name()),
            }
            state
        }

        /// Independent accumulators per x row: two for one row (the FMA latency), one when several rows
        /// share the registers.
        const fn chains(m: usize) -> usize {
            if m == 1 { 2 } else { 1 }
        }

        /// `ys[i][r] = W[r0 + r] · xs[i]` (the x rows quantized) for the rows `ys` covers.
        #[target_feature(enable = $features)]
        pub(in super::super) fn dot_rows<const M: usize>(
            w: &QMatrix,
            r0: usize,
            xs: &[&Q8Row; M],
            ys: &mut [&mut [f32]; M],
        ) {
            match w.ty {
                QType::Q4K => return dot_rows_q4k(w, r0, xs, ys),
                QType::Q6K => return dot_rows_q6k(w, r0, xs, ys),
                _ => {}
            }
            let signed = w.ty == QType::Q8_0;
            // Plain slices, so that the loop reads no Vec headers.
            let qs: [&[i8]; M] = std::array::from_fn(|i| &xs[i].q[..]);
            let ds: [&[f32]; M] = std::array::from_fn(|i| &xs[i].d[..]);
            let sums: [&[f32]; M] = std::array::from_fn(|i| &xs[i].sum[..]);
            for r in 0..ys[0].len() {
                // One accumulator per x row: the closure's state is threaded through every chunk, and a
                // second one per row measured slower (Q4_1, one thread: 5.5 against 9.6 G weights/s).
                let (acc, off) = walk(
                    w.ty,
                    w.row(r0 + r),
                    ([_mm256_setzero_ps(); M], [0f32; M]),
                    #[inline(always)]
                    |(mut acc, mut off): ([__m256; M], [f32; M]), c, q, s: f32, o: f32| {
                        for i in 0..M {
                            let xq = load_x(qs[i], c);
                            let p = if signed {
                                $udot(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q))
                            } else {
                                $udot(q, xq)
                            };
                            acc[i] =
                                _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ds[i][c] * s), acc[i]);
                            off[i] = o.mul_add(sums[i][c], off[i]);
                        }
                        (acc, off)
                    },
                );
                for i in 0..M {
                    ys[i][r] = hsum8(acc[i]) + off[i];
                }
            }
        }

        /// Q4_K: weight = `d·sc_j · code − dmin·m_j` per 32-weight sub-block `j`.
        #[inline]
        #[target_feature(enable = $features)]
        fn dot_rows_q4k<const M: usize>(w: &QMatrix, r0: usize, xs: &[&Q8Row; M], ys: &mut [&mut [f32]; M]) {
            let m4 = _mm256_set1_epi8(0x0f);
            let h = chains(M);
            for r in 0..ys[0].len() {
                let mut acc = [[_mm256_setzero_ps(); 2]; M];
                let mut off = [_mm256_setzero_ps(); M];
                for (s, b) in w.row(r0 + r).chunks_exact(144).enumerate() {
                    prefetch(b);
                    let b: &[u8; 144] = arr(b, 0);
                    let (d, dmin) = f16_pair(arr(b, 0));
                    let (sc, mn) = blocks::k4_scale_bytes(arr(b, 4));
                    let dl = _mm256_mul_ps(_mm256_set1_ps(d), u8x8_f32(sc));
                    let ml = _mm256_mul_ps(_mm256_set1_ps(dmin), u8x8_f32(mn));
                    // Per x row, the eight chunks' scales (weight scale times x scale), and the mins
                    // against the x chunks' sums.
                    let mut scale = [[0f32; 8]; M];
                    for i in 0..M {
                        store_f32x8(
                            arr_mut(&mut scale[i], 0),
                            _mm256_mul_ps(dl, load_f32x8(arr(&xs[i].d, 8 * s))),
                        );
                        off[i] = _mm256_fmadd_ps(ml, load_f32x8(arr(&xs[i].sum, 8 * s)), off[i]);
                    }
                    // Bytes 32j..32j+32 hold chunk 2j in their low nibbles and chunk 2j+1 in the high.
                    for j in 0..4 {
                        let v = load32(arr(b, 16 + 32 * j));
                        let codes = [_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)];
                        for (t, &q) in codes.iter().enumerate() {
                            let c = 2 * j + t;
                            for i in 0..M {
                                let p = $udot(q, load_x(&xs[i].q, 8 * s + c));
                                let a = &mut acc[i][t % h];
                                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale[i][c]), *a);
                            }
                        }
                    }
                }
                for i in 0..M {
                    ys[i][r] = hsum8(_mm256_add_ps(acc[i][0], acc[i][1])) - hsum8(off[i]);
                }
            }
        }

        /// Q6_K: weight = `d·sc_h · (code − 32)` per 16-weight half `h`; the −32 goes into the offset.
        #[inline]
        #[target_feature(enable = $features)]
        fn dot_rows_q6k<const M: usize>(w: &QMatrix, r0: usize, xs: &[&Q8Row; M], ys: &mut [&mut [f32]; M]) {
            // Chunk c's x scale for halves 2c and 2c + 1.
            let (first4, last4) =
                (_mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
            let h = chains(M);
            for r in 0..ys[0].len() {
                let mut acc = [[_mm256_setzero_ps(); 2]; M];
                let mut off = [_mm256_setzero_ps(); M];
                for (s, b) in w.row(r0 + r).chunks_exact(210).enumerate() {
                    prefetch(b);
                    let b: &[u8; 210] = arr(b, 0);
                    let d = _mm256_set1_ps(f16_one(arr(b, 208)));
                    let ds =
                        [_mm256_mul_ps(d, i8x8_f32(arr(b, 192))), _mm256_mul_ps(d, i8x8_f32(arr(b, 200)))];
                    let mut scale = [[0f32; 16]; M];
                    for i in 0..M {
                        let xd = load_f32x8(arr(&xs[i].d, 8 * s));
                        store_f32x8(
                            arr_mut(&mut scale[i], 0),
                            _mm256_mul_ps(ds[0], _mm256_permutevar8x32_ps(xd, first4)),
                        );
                        store_f32x8(
                            arr_mut(&mut scale[i], 8),
                            _mm256_mul_ps(ds[1], _mm256_permutevar8x32_ps(xd, last4)),
                        );
                        off[i] = _mm256_fmadd_ps(ds[0], load_f32x8(arr(&xs[i].half_sum, 16 * s)), off[i]);
                        off[i] = _mm256_fmadd_ps(ds[1], load_f32x8(arr(&xs[i].half_sum, 16 * s + 8)), off[i]);
                    }
                    for n in 0..2 {
                        let codes = q6k_codes(b, n);
                        for (t, &q) in codes.iter().enumerate() {
                            let c = 4 * n + t;
                            for i in 0..M {
                                let p = $udot(q, load_x(&xs[i].q, 8 * s + c));
                                // Lanes 0-3 sum the first 16 weights, 4-7 the second.
                                let sc = _mm256_set_m128(
                                    _mm_set1_ps(scale[i][2 * c + 1]),
                                    _mm_set1_ps(scale[i][2 * c]),
                                );
                                let a = &mut acc[i][t % h];
                                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, *a);
                            }
                        }
                    }
                }
                for i in 0..M {
                    ys[i][r] = hsum8(_mm256_add_ps(acc[i][0], acc[i][1])) - 32.0 * hsum8(off[i]);
                }
            }
        }
    };
}

/// AVX2 (every x86-64 CPU the AVX2 family runs on).
pub(super) mod plain {
    int8_kernels!("avx2,fma,f16c", udot);
}

/// AVX-512 VNNI with VL: the `vnni_available()` CPUs.
pub(super) mod vnni {
    int8_kernels!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", udot_vnni);
}

/// Whether this CPU runs the `vnni` kernels (and the int8 GEMM).
pub(super) fn vnni_available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}
