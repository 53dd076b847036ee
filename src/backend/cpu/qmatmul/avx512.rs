//! AVX-512F kernels (x86-64): the AVX2 kernels' scheme with 16 lanes, so a 32-weight chunk is two
//! `__m512` registers, except that the 4- and 5-bit formats decode by table lookup: a block's (or
//! K-quant sub-block's) 16 or 32 possible weights are computed once, by the reference's formula,
//! and a permute per 16 codes picks them (the 16-lane permutes AVX2 lacks). Needs avx512f (plus
//! the avx2, fma and f16c every AVX-512 CPU has); every function here carries that
//! `#[target_feature]`, and the dispatcher calls in only after `Isa::Avx512.is_available()`.
//! Exactness argument as in avx2.rs: exact code conversion, exact scale products, and FMA only
//! where the product is exact.

use std::arch::x86_64::*;

use super::avx2::prefetch;
use super::blocks::{self, CHUNK, arr, arr_mut, lanes, walk_float_row};
use super::format::{QMatrix, QType};

/// Weights `16h..16h + 16` of a chunk in register `h`.
type Chunk = [__m512; 2];

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn load_u8x16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; the load has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn load_u8x32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn load_f32x16(x: &[f32; 16]) -> __m512 {
    // SAFETY: `x` is 16 readable floats; the load has no alignment requirement.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

/// Sixteen little-endian f32 weights from possibly unaligned bytes.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn load_f32x16_bytes(b: &[u8; 64]) -> __m512 {
    // SAFETY: `b` is 64 readable bytes; the load has no alignment requirement.
    unsafe { _mm512_loadu_ps(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn store_f32x16(o: &mut [f32; 16], v: __m512) {
    // SAFETY: `o` is 16 writable floats; the store has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
}

/// The two f16 values in 4 bytes (a super-block's `d` and `dmin`), converted by the F16C unit
/// (exact, like `half`).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn f16_pair(b: &[u8; 4]) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*b)));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// A block's f16 scale in every lane: a broadcast load and one F16C conversion (exact). A scalar
/// conversion compiles to a 16-bit insert into a live register (`vpinsrw`), whose false
/// dependency cost about a fifth of the Q8_0 loop's time (measured in isolation).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn f16_splat(b: &[u8; 2]) -> __m512 {
    _mm512_cvtph_ps(_mm256_set1_epi16(i16::from_le_bytes(*b)))
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn widen_u8(b: &[u8; 16]) -> __m512i {
    _mm512_cvtepu8_epi32(load_u8x16(b))
}

/// The codes `0..16` as floats, the lanes a code table is built from.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn iota16() -> __m512 {
    _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.)
}

/// A 4-bit format's 32 weights from its 16 code bytes and its code table (lane `j` = the weight
/// that code `j` stands for). The permute reads only the low four bits of each index lane, so the
/// low nibbles need no mask: per 16 weights one widening, one permute and (high half) one shift,
/// where converting and scaling the codes takes four — and the weights are the table's, so they
/// are the reference's values bit for bit whenever the table is.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn nibble_lookup(qs: &[u8; 16], table: __m512) -> Chunk {
    let v = widen_u8(qs);
    [_mm512_permutexvar_ps(v, table), _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table)]
}

/// The fifth bits of a Q5_0/Q5_1 block (bit `e` of `qh` belongs to weight `e`) as 0x10 or 0 in
/// the chunk's lanes: register `h` shifts `qh` so that bit `16h + i` sits at bit `4 + i`, then
/// lane `i` shifts right by `i`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn fifth_bits(qh: u32) -> [__m512i; 2] {
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let bit = _mm512_set1_epi32(0x10);
    let base = [qh << 4, qh >> 12];
    lanes!(h in 2 => _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(base[h] as i32), iota), bit))
}

/// A 5-bit format's weights: codes `n | fifth` looked up in a 32-entry table held as codes
/// `0..16` (`lo`) and `16..32` (`hi`); the two-table permute reads the low five index bits.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn fifth_lookup(n: __m512i, fifth: __m512i, lo: __m512, hi: __m512) -> __m512 {
    _mm512_permutex2var_ps(lo, _mm512_or_si512(n, fifth), hi)
}

/// Q4_0's table: `(j - 8) * d`, exact like the reference's product.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn q4_0(b: &[u8; 18]) -> Chunk {
    let d = f16_splat(arr(b, 0));
    nibble_lookup(arr(b, 2), _mm512_mul_ps(_mm512_sub_ps(iota16(), _mm512_set1_ps(8.)), d))
}

/// Q4_1's table: `j * d + m`: the product is exact, so the fused add rounds once, like the
/// reference.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn q4_1(b: &[u8; 20]) -> Chunk {
    let (d, m) = (f16_splat(arr(b, 0)), f16_splat(arr(b, 2)));
    nibble_lookup(arr(b, 4), _mm512_fmadd_ps(iota16(), d, m))
}

/// The 16 bytes of a 5-bit block's low nibbles, widened: lane `i` of register `h` holds weight
/// `16h + i`'s nibble in its low four bits.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn low_nibbles(qs: &[u8; 16]) -> [__m512i; 2] {
    let v = widen_u8(qs);
    [_mm512_and_si512(v, _mm512_set1_epi32(0x0f)), _mm512_srli_epi32(v, 4)]
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn q5_0(b: &[u8; 22]) -> Chunk {
    let d = f16_splat(arr(b, 0));
    let fifth = fifth_bits(u32::from_le_bytes(*arr(b, 2)));
    let n = low_nibbles(arr(b, 6));
    // (j - 16) * d for j in 0..16 and 16..32: exact products.
    let lo = _mm512_mul_ps(_mm512_sub_ps(iota16(), _mm512_set1_ps(16.)), d);
    let hi = _mm512_mul_ps(iota16(), d);
    lanes!(h in 2 => fifth_lookup(n[h], fifth[h], lo, hi))
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn q5_1(b: &[u8; 24]) -> Chunk {
    let (d, m) = (f16_splat(arr(b, 0)), f16_splat(arr(b, 2)));
    let fifth = fifth_bits(u32::from_le_bytes(*arr(b, 4)));
    let n = low_nibbles(arr(b, 8));
    let lo = _mm512_fmadd_ps(iota16(), d, m);
    let hi = _mm512_fmadd_ps(_mm512_add_ps(iota16(), _mm512_set1_ps(16.)), d, m);
    lanes!(h in 2 => fifth_lookup(n[h], fifth[h], lo, hi))
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn q8_0(b: &[u8; 34]) -> Chunk {
    let d = f16_splat(arr(b, 0));
    lanes!(h in 2 => _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load_u8x16(arr(b, 2 + 16 * h)))), d))
}

/// A Q4_K/Q5_K super-block's multipliers, as the reference forms them (blocks.rs: `k4_scales`):
/// lane `2j` is sub-block `j`'s `d * scale`, lane `2j + 1` its `dmin * min`. The 6-bit fields are
/// unpacked by shifts and masks on the three words of packed scales (`k4_scale_bytes`' formulas,
/// one 128-bit register), interleaved, widened and scaled by `[d, dmin, d, dmin, ..]`: two wide
/// shuffles (the widening, the f16 conversion), where the compiler's own vectorization of
/// `k4_scales` took about nine on the permute port the lookups need.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn k4_multipliers(b: &[u8; 20]) -> __m512 {
    // Words w0, w1, w2 of the packed scales (w3 is codes, unused).
    let q = load_u8x16(arr(b, 4));
    // [w0, w2, w1, w2 >> 4] and [w0, w0 >> 2, w1, w1 >> 2], masked: the scales' and mins' low
    // bits, and the top two bits of bytes 0-3 (w0) and 4-7 (w1) moved to bits 4-5.
    let p = _mm_srlv_epi32(_mm_shuffle_epi32(q, 0b10_01_10_00), _mm_setr_epi32(0, 0, 0, 4));
    let r = _mm_srlv_epi32(_mm_shuffle_epi32(q, 0b01_01_00_00), _mm_setr_epi32(0, 2, 0, 2));
    let low = _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f);
    let top = _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030);
    // Bytes: scales 0..8, then mins 0..8; interleaved: scale 0, min 0, scale 1, ..
    let bytes = _mm_or_si128(_mm_and_si128(p, low), _mm_and_si128(r, top));
    let pairs = _mm_unpacklo_epi8(bytes, _mm_srli_si128(bytes, 8));
    let d_dmin = _mm512_cvtph_ps(_mm256_set1_epi32(i32::from_le_bytes(*arr(b, 0))));
    _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(pairs)), d_dmin)
}

/// `k4_multipliers` stored, so that each table's broadcasts are loads: kept in a register, every
/// broadcast took two shuffles on the port the permutes need.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn k4_multipliers_in<'a>(b: &[u8; 20], dm: &'a mut [f32; 16]) -> &'a [f32; 16] {
    store_f32x16(dm, k4_multipliers(b));
    std::hint::black_box(dm)
}

/// A K-quant sub-block's table from its scale and min: `dl * j - ml`, one rounding as in the
/// reference; codes `16..32` (Q5_K) in `hi`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn k_table(dl: f32, ml: f32, base: f32) -> __m512 {
    let j = _mm512_add_ps(iota16(), _mm512_set1_ps(base));
    _mm512_fmsub_ps(_mm512_set1_ps(dl), j, _mm512_set1_ps(ml))
}

/// Q5_K: `qh4` holds the `qh` bytes of a register shifted up by 4, so bit `c` (the fifth bit of
/// chunk `c`) sits at bit `4 + c`; a right shift by `c` brings it to 0x10.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn fifth_bit_k(qh4: __m512i, c: usize) -> __m512i {
    _mm512_and_si512(_mm512_srl_epi32(qh4, _mm_cvtsi32_si128(c as i32)), _mm512_set1_epi32(0x10))
}

/// Q6_K codes of chunk `t` (0..4) of a half super-block, from `ql[l]` (`qa`), `ql[l + 32]` (`qb`)
/// and `qh[l]`: low bits from qa (t = 0, 2) or qb (t = 1, 3), low nibble for t < 2; bits 2t, 2t+1
/// of qh moved to bits 4, 5.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn q6k_codes(t: usize, qa: __m512i, qb: __m512i, qh: __m512i) -> __m512i {
    let low = _mm512_set1_epi32(0x0f);
    let top = _mm512_set1_epi32(0x30);
    match t {
        0 => _mm512_or_si512(_mm512_and_si512(qa, low), _mm512_and_si512(_mm512_slli_epi32(qh, 4), top)),
        1 => _mm512_or_si512(_mm512_and_si512(qb, low), _mm512_and_si512(_mm512_slli_epi32(qh, 2), top)),
        2 => _mm512_or_si512(_mm512_srli_epi32(qa, 4), _mm512_and_si512(qh, top)),
        _ => _mm512_or_si512(_mm512_srli_epi32(qb, 4), _mm512_and_si512(_mm512_srli_epi32(qh, 2), top)),
    }
}

/// Calls `f(k, len, slot, chunk)` for each chunk of a row (see blocks.rs for the chunk order).
/// `slot` (0 or 1) alternates between the chunks that a K-quant super-block's unrolled body emits,
/// so that a consumer can sum them into separate accumulators without moving registers (it is 0
/// for the one-block-per-iteration formats). `f` is the caller's `#[inline(always)]` consumer;
/// everything else here is plain calls and macros, so the whole walk compiles as one loop nest
/// with this function's target features.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn walk_row<S, F: FnMut(S, usize, usize, usize, &Chunk) -> S>(ty: QType, row: &[u8], init: S, mut f: F) -> S {
    let mut state = init;
    // Hands a chunk to the consumer, threading its state (the accumulators) through this
    // function's locals, so that it stays in registers even where this function is not inlined.
    macro_rules! emit {
        ($k:expr, $len:expr, $chunk:expr) => {
            emit!($k, $len, 0, $chunk)
        };
        ($k:expr, $len:expr, $slot:expr, $chunk:expr) => {
            state = f(state, $k, $len, $slot, &$chunk)
        };
    }
    let low = _mm512_set1_epi32(0x0f);
    match ty {
        QType::F32 => walk_float_row!(row, 4, emit, |c| {
            prefetch(c);
            let c: &[u8; 128] = arr(c, 0);
            lanes!(h in 2 => load_f32x16_bytes(arr(c, 64 * h)))
        }),
        QType::F16 => walk_float_row!(row, 2, emit, |c| {
            prefetch(c);
            let c: &[u8; 64] = arr(c, 0);
            lanes!(h in 2 => _mm512_cvtph_ps(load_u8x32(arr(c, 32 * h))))
        }),
        // BF16 is the top half of an f32.
        QType::BF16 => walk_float_row!(row, 2, emit, |c| {
            prefetch(c);
            let c: &[u8; 64] = arr(c, 0);
            lanes!(h in 2 => _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_u8x32(arr(c, 32 * h))), 16)))
        }),
        QType::Q4_0 => {
            for (i, b) in row.chunks_exact(18).enumerate() {
                prefetch(b);
                emit!(i * CHUNK, CHUNK, q4_0(arr(b, 0)));
            }
        }
        QType::Q4_1 => {
            for (i, b) in row.chunks_exact(20).enumerate() {
                prefetch(b);
                emit!(i * CHUNK, CHUNK, q4_1(arr(b, 0)));
            }
        }
        QType::Q5_0 => {
            for (i, b) in row.chunks_exact(22).enumerate() {
                prefetch(b);
                emit!(i * CHUNK, CHUNK, q5_0(arr(b, 0)));
            }
        }
        QType::Q5_1 => {
            for (i, b) in row.chunks_exact(24).enumerate() {
                prefetch(b);
                emit!(i * CHUNK, CHUNK, q5_1(arr(b, 0)));
            }
        }
        QType::Q8_0 => {
            for (i, b) in row.chunks_exact(34).enumerate() {
                prefetch(b);
                emit!(i * CHUNK, CHUNK, q8_0(arr(b, 0)));
            }
        }
        QType::Q4K => {
            for (s, b) in row.chunks_exact(144).enumerate() {
                prefetch(b);
                let b: &[u8; 144] = arr(b, 0);
                let mut dm = [0.; 16];
                let dm = k4_multipliers_in(arr(b, 0), &mut dm);
                // Bytes 32j..32j+32 hold chunk 2j in their low nibbles and chunk 2j+1 in the high.
                for j in 0..4 {
                    let k = 256 * s + 64 * j;
                    let (t0, t1) =
                        (k_table(dm[4 * j], dm[4 * j + 1], 0.), k_table(dm[4 * j + 2], dm[4 * j + 3], 0.));
                    let q: [__m512i; 2] = lanes!(h in 2 => widen_u8(arr(b, 16 + 32 * j + 16 * h)));
                    emit!(k, CHUNK, 0, lanes!(h in 2 => _mm512_permutexvar_ps(q[h], t0)));
                    emit!(
                        k + CHUNK,
                        CHUNK,
                        1,
                        lanes!(h in 2 => _mm512_permutexvar_ps(_mm512_srli_epi32(q[h], 4), t1))
                    );
                }
            }
        }
        QType::Q5K => {
            for (s, b) in row.chunks_exact(176).enumerate() {
                prefetch(b);
                let b: &[u8; 176] = arr(b, 0);
                let mut dm = [0.; 16];
                let dm = k4_multipliers_in(arr(b, 0), &mut dm);
                // qh byte l carries the fifth bit of weight l of chunk c in bit c.
                let qh4: [__m512i; 2] = lanes!(h in 2 => _mm512_slli_epi32(widen_u8(arr(b, 16 + 16 * h)), 4));
                for j in 0..4 {
                    let q: [__m512i; 2] = lanes!(h in 2 => widen_u8(arr(b, 48 + 32 * j + 16 * h)));
                    let k = 256 * s + 64 * j;
                    let (c, d) = (2 * j, 2 * j + 1);
                    let lo = lanes!(h in 2 => _mm512_or_si512(_mm512_and_si512(q[h], low), fifth_bit_k(qh4[h], c)));
                    let (t0, t1) =
                        (k_table(dm[2 * c], dm[2 * c + 1], 0.), k_table(dm[2 * c], dm[2 * c + 1], 16.));
                    emit!(k, CHUNK, 0, lanes!(h in 2 => _mm512_permutex2var_ps(t0, lo[h], t1)));
                    let hi =
                        lanes!(h in 2 => _mm512_or_si512(_mm512_srli_epi32(q[h], 4), fifth_bit_k(qh4[h], d)));
                    let (t0, t1) =
                        (k_table(dm[2 * d], dm[2 * d + 1], 0.), k_table(dm[2 * d], dm[2 * d + 1], 16.));
                    emit!(k + CHUNK, CHUNK, 1, lanes!(h in 2 => _mm512_permutex2var_ps(t0, hi[h], t1)));
                }
            }
        }
        QType::Q6K => {
            // Code q (0..64) as the float 2^23 + q: its bits are the exponent's and q. Subtracting
            // 2^23 + 32 then gives q - 32 exactly (+0 for q = 32, as the reference's integer
            // subtraction converts), in one operation on either vector port where the integer
            // subtraction and conversion took two, one of them on port 0 only.
            let magic = _mm512_set1_epi32(0x4b00_0000);
            let off = _mm512_set1_ps(8_388_640.);
            for (s, b) in row.chunks_exact(210).enumerate() {
                prefetch(b);
                let b: &[u8; 210] = arr(b, 0);
                // d is the upper half of the block's last 4 bytes. The scales stay in memory, so
                // that their broadcasts are loads (in a register, each took two shuffles).
                let ds = &mut blocks::k6_scales(f16_pair(arr(b, 206)).1, arr(b, 192));
                let ds = std::hint::black_box(ds);
                for n in 0..2 {
                    // Register h covers weights 16h..16h+16 of each chunk: ql[l], ql[l + 32], qh[l].
                    let qa: [__m512i; 2] = lanes!(h in 2 => widen_u8(arr(b, 64 * n + 16 * h)));
                    let qb: [__m512i; 2] = lanes!(h in 2 => widen_u8(arr(b, 64 * n + 32 + 16 * h)));
                    let qh: [__m512i; 2] = lanes!(h in 2 => widen_u8(arr(b, 128 + 32 * n + 16 * h)));
                    // Register h uses the 16-weight scale 8n + h + 2t. (The loop unrolls and the
                    // match in q6k_codes folds.)
                    for t in 0..4 {
                        let chunk = lanes!(h in 2 => _mm512_mul_ps(
                            _mm512_sub_ps(_mm512_castsi512_ps(_mm512_or_si512(q6k_codes(t, qa[h], qb[h], qh[h]), magic)), off),
                            _mm512_set1_ps(ds[8 * n + h + 2 * t])
                        ));
                        emit!(256 * s + 128 * n + CHUNK * t, CHUNK, t % 2, chunk);
                    }
                }
            }
        }
    }
    state
}

/// `ys[i][r] = W[r0 + r] · xs[i]` for the rows `ys` covers. The caller guarantees
/// `xs[i].len() == w.cols` and `r0 + ys[i].len() <= w.rows` (all `ys[i]` the same length).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) fn dot_rows<const M: usize>(w: &QMatrix, r0: usize, xs: &[&[f32]; M], ys: &mut [&mut [f32]; M]) {
    // Two accumulators per x row (one per register of a chunk), and for one x row two more that
    // the K-quants' odd slots use: with only two, a super-block's 16 multiply-adds form two
    // chains of eight, 32 cycles of FMA latency per 256 weights, which bounded the Q4_K loop.
    // Rotating accumulators by chunk instead costs register moves in the formats whose loop body
    // is one block (six per block: measured slower). With 32 registers, four x rows fit easily.
    for r in 0..ys[0].len() {
        let acc = walk_row(
            w.ty,
            w.row(r0 + r),
            [[_mm512_setzero_ps(); 4]; M],
            // Inlined at every chunk site of the walk; the accumulators are its fold state.
            #[inline(always)]
            |mut acc: [[__m512; 4]; M], k, len, slot, c| {
                let s = if M == 1 { 2 * slot } else { 0 };
                for (a, x) in acc.iter_mut().zip(xs) {
                    let mut pad = [0f32; CHUNK];
                    let xc: &[f32; CHUNK] = if len == CHUNK {
                        arr(x, k)
                    } else {
                        pad[..len].copy_from_slice(&x[k..k + len]);
                        &pad
                    };
                    for g in 0..2 {
                        a[s + g] = _mm512_fmadd_ps(c[g], load_f32x16(arr(xc, 16 * g)), a[s + g]);
                    }
                }
                acc
            },
        );
        for (y, a) in ys.iter_mut().zip(&acc) {
            y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
        }
    }
}

/// Dequantizes rows `r0..r0 + out.len() / cols` into `out` (row-major, `cols > 0`).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) fn dequant_rows(w: &QMatrix, r0: usize, out: &mut [f32]) {
    for (r, o) in out.chunks_exact_mut(w.cols).enumerate() {
        walk_row(
            w.ty,
            w.row(r0 + r),
            (),
            #[inline(always)]
            |(), k, len, _, c| {
                let mut tmp = [0f32; CHUNK];
                let dst: &mut [f32; CHUNK] = if len == CHUNK { arr_mut(o, k) } else { &mut tmp };
                for (g, &v) in c.iter().enumerate() {
                    store_f32x16(arr_mut(dst, 16 * g), v);
                }
                if len < CHUNK {
                    o[k..k + len].copy_from_slice(&tmp[..len]);
                }
            },
        );
    }
}
