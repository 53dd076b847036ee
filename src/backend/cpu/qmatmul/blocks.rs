//! Scalar decoding of stored blocks into 32-weight chunks: the portable kernels run on these, and
//! the SIMD kernels share the small scalar parts (K-quant scale unpacking, f16 scales).
//!
//! Every kernel walks a row as a sequence of 32-weight chunks: one block for Q4_0..Q8_0, one eighth
//! of a super-block for the K-quants, 32 elements for the float formats (the last chunk of a float
//! row may be short). Each value must come out bit-identical to the reference dequantizers
//! (scalpel's `model::quant`), so the expressions below keep their operation order.

/// Weights per chunk handed from a decoder to a kernel.
pub(super) const CHUNK: usize = 32;

/// A fixed-size piece of a block. Offsets are constants within fixed-size blocks, so the check
/// folds away after inlining.
#[inline(always)]
pub(super) fn arr<T, const N: usize>(b: &[T], at: usize) -> &[T; N] {
    b[at..at + N].try_into().expect("offset inside the block")
}

/// `arr` for writing.
#[inline(always)]
pub(super) fn arr_mut<T, const N: usize>(b: &mut [T], at: usize) -> &mut [T; N] {
    (&mut b[at..at + N]).try_into().expect("offset inside the chunk")
}

/// IEEE half to single, exact. Same bits as `half::f16::to_f32` for every input (NaNs come out
/// quiet with the payload kept, as there); checked on all 65536 inputs by the tests.
#[inline(always)]
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let mag = ((h & 0x7fff) as u32) << 13;
    if h & 0x7c00 == 0x7c00 {
        // Infinity or NaN: all-ones exponent; a NaN also gets the quiet bit.
        let quiet = if h & 0x03ff != 0 { 0x0040_0000 } else { 0 };
        return f32::from_bits(sign | 0x7f80_0000 | mag | quiet);
    }
    // The half's exponent and mantissa bits, shifted into a float, read as a float 2^112 times too
    // small (a half subnormal lands on a float subnormal); multiplying by the power of two is
    // exact. Relies on subnormals not being flushed, which Rust never turns on.
    f32::from_bits(sign | (f32::from_bits(mag) * f32::from_bits(0x7780_0000)).to_bits())
}

#[inline(always)]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes(*arr(b, i)))
}

/// The 6-bit scales and mins of the eight sub-blocks of a Q4_K/Q5_K super-block, packed in 12
/// bytes, as eight bytes each (byte `j` of the first word is sub-block `j`'s scale): sub-blocks
/// 0-3 keep their low six bits in bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 take four low
/// bits from bytes 8-11 (scale low nibble, min high nibble) and two high bits from the top of
/// bytes 0-3 and 4-7. Word operations unpack all eight at once (the SIMD kernels widen the bytes).
#[inline(always)]
pub(super) fn k4_scale_bytes(q: &[u8; 12]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes(*arr(q, 4 * i));
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let (low6, low4, top2) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
    let sc_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    let m_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    ((w0 & low6) as u64 | (sc_hi as u64) << 32, (w1 & low6) as u64 | (m_hi as u64) << 32)
}

/// Multipliers of the eight 32-weight sub-blocks of a Q4_K/Q5_K super-block, as the reference
/// forms them: `d * scale` and `dmin * min`. Both products are exact (11-bit by 6-bit mantissas),
/// so the weight `dl * q - ml` has one rounding, which an FMA reproduces.
#[inline(always)]
pub(super) fn k4_scales(d: f32, dmin: f32, packed: &[u8; 12]) -> ([f32; 8], [f32; 8]) {
    let (sc, m) = k4_scale_bytes(packed);
    let (sc, m) = (sc.to_le_bytes(), m.to_le_bytes());
    let mut dl = [0f32; 8];
    let mut ml = [0f32; 8];
    for j in 0..8 {
        dl[j] = d * sc[j] as f32;
        ml[j] = dmin * m[j] as f32;
    }
    (dl, ml)
}

/// Multipliers of the sixteen 16-weight groups of a Q6_K super-block: `d * scale` (exact).
#[inline(always)]
pub(super) fn k6_scales(d: f32, sc: &[u8; 16]) -> [f32; 16] {
    let mut ds = [0f32; 16];
    for (o, &s) in ds.iter_mut().zip(sc) {
        *o = d * (s as i8) as f32;
    }
    ds
}

/// The bytes of 32 float-format elements (4 bytes each for F32, 2 for F16/BF16).
pub(super) const FLOAT_CHUNK_MAX: usize = 4 * CHUNK;

/// `[e(0), e(1), ..]` written out: the SIMD kernels build their register arrays with this rather
/// than `array::map` / `from_fn`, whose closures would pass through generic code compiled without
/// the kernels' target features, where the compiler may leave them out of line.
macro_rules! lanes {
    ($g:ident in 2 => $e:expr) => {
        [{ let $g = 0usize; $e }, { let $g = 1usize; $e }]
    };
    ($g:ident in 4 => $e:expr) => {
        [{ let $g = 0usize; $e }, { let $g = 1usize; $e }, { let $g = 2usize; $e }, { let $g = 3usize; $e }]
    };
}
pub(super) use lanes;

/// Invokes `$emit!(k, len, chunk)` for the chunks of a float-format row (`$elem` bytes per
/// element), with `chunk` = `$dec` evaluated on the chunk's bytes `$c`; the last, short chunk is
/// decoded from a zero-padded copy. A macro so that the decoder expands inside the kernel's own
/// function (with its target features).
macro_rules! walk_float_row {
    ($row:expr, $elem:expr, $emit:ident, |$c:ident| $dec:expr) => {{
        let (row, elem): (&[u8], usize) = ($row, $elem);
        let bytes = elem * super::blocks::CHUNK;
        let mut chunks = row.chunks_exact(bytes);
        for (i, $c) in chunks.by_ref().enumerate() {
            $emit!(i * super::blocks::CHUNK, super::blocks::CHUNK, $dec);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Zero bytes decode to +0.0 in all three float formats, so the padding adds nothing.
            let mut pad = [0u8; super::blocks::FLOAT_CHUNK_MAX];
            pad[..rest.len()].copy_from_slice(rest);
            let $c: &[u8] = &pad[..bytes];
            $emit!((row.len() - rest.len()) / elem, rest.len() / elem, $dec);
        }
    }};
}
pub(super) use walk_float_row;

// --- Scalar chunk decoders (portable kernels) -------------------------------------------------

pub(super) type ChunkF32 = [f32; CHUNK];

pub(super) fn q4_0(b: &[u8; 18]) -> ChunkF32 {
    let d = f16_at(b, 0);
    let qs: &[u8; 16] = arr(b, 2);
    let mut y = [0f32; CHUNK];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
    y
}

pub(super) fn q4_1(b: &[u8; 20]) -> ChunkF32 {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs: &[u8; 16] = arr(b, 4);
    let mut y = [0f32; CHUNK];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
    y
}

pub(super) fn q5_0(b: &[u8; 22]) -> ChunkF32 {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes(*arr(b, 2));
    let qs: &[u8; 16] = arr(b, 6);
    let mut y = [0f32; CHUNK];
    for j in 0..16 {
        // Element e takes bit e of qh as its fifth bit.
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((qs[j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
    y
}

pub(super) fn q5_1(b: &[u8; 24]) -> ChunkF32 {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes(*arr(b, 4));
    let qs: &[u8; 16] = arr(b, 8);
    let mut y = [0f32; CHUNK];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((qs[j] & 0x0f) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
    }
    y
}

pub(super) fn q8_0(b: &[u8; 34]) -> ChunkF32 {
    let d = f16_at(b, 0);
    let qs: &[u8; 32] = arr(b, 2);
    let mut y = [0f32; CHUNK];
    for (yi, &q) in y.iter_mut().zip(qs) {
        *yi = (q as i8) as f32 * d;
    }
    y
}

/// Chunk `c` (0..8) of a Q4_K super-block: byte `32 * (c / 2) + l` holds weight `l` of chunk
/// `c` in its low nibble for even `c`, high nibble for odd `c`.
pub(super) fn q4k(b: &[u8; 144], c: usize, dl: f32, ml: f32) -> ChunkF32 {
    let q: &[u8; 32] = arr(b, 16 + 32 * (c / 2));
    let shift = 4 * (c % 2);
    let mut y = [0f32; CHUNK];
    for (yi, &ql) in y.iter_mut().zip(q) {
        *yi = dl * ((ql >> shift) & 0x0f) as f32 - ml;
    }
    y
}

/// Chunk `c` of a Q5_K super-block: as Q4_K, plus bit `c` of byte `l` of `qh` as the fifth bit.
pub(super) fn q5k(b: &[u8; 176], c: usize, dl: f32, ml: f32) -> ChunkF32 {
    let qh: &[u8; 32] = arr(b, 16);
    let q: &[u8; 32] = arr(b, 48 + 32 * (c / 2));
    let shift = 4 * (c % 2);
    let mut y = [0f32; CHUNK];
    for l in 0..CHUNK {
        let hi = if qh[l] & (1 << c) != 0 { 16 } else { 0 };
        y[l] = dl * (((q[l] >> shift) & 0x0f) + hi) as f32 - ml;
    }
    y
}

/// Chunk `c` of a Q6_K super-block. Half `n = c / 4` covers weights 128n..128n+128; within it,
/// chunk `t = c % 4` takes its low 4 bits from `ql[64n + 32 * (t % 2) + l]` (low nibble for
/// t < 2, high for t >= 2) and its top 2 bits from bits 2t, 2t+1 of `qh[32n + l]`; `ds` holds
/// the 16-weight group multipliers.
pub(super) fn q6k(b: &[u8; 210], c: usize, ds: &[f32; 16]) -> ChunkF32 {
    let (n, t) = (c / 4, c % 4);
    let ql: &[u8; 32] = arr(b, 64 * n + 32 * (t % 2));
    let qh: &[u8; 32] = arr(b, 128 + 32 * n);
    let (lo_shift, hi_shift) = (4 * (t / 2), 2 * t);
    let mut y = [0f32; CHUNK];
    // Weights 16..32 of a chunk use the next 16-weight scale.
    for (h, (yh, (qlh, qhh))) in
        y.chunks_exact_mut(16).zip(ql.chunks_exact(16).zip(qh.chunks_exact(16))).enumerate()
    {
        let scale = ds[8 * n + 2 * t + h];
        for (yl, (&l, &hb)) in yh.iter_mut().zip(qlh.iter().zip(qhh)) {
            let q = (((l >> lo_shift) & 0x0f) | (((hb >> hi_shift) & 3) << 4)) as i32 - 32;
            // Reference order: (d * scale) * q, with d * scale precomputed in `ds`.
            *yl = scale * q as f32;
        }
    }
    y
}

pub(super) fn f32s(b: &[u8]) -> ChunkF32 {
    let mut y = [0f32; CHUNK];
    for (yi, e) in y.iter_mut().zip(b.chunks_exact(4)) {
        *yi = f32::from_le_bytes(*arr(e, 0));
    }
    y
}

pub(super) fn f16s(b: &[u8]) -> ChunkF32 {
    let mut y = [0f32; CHUNK];
    for (yi, e) in y.iter_mut().zip(b.chunks_exact(2)) {
        *yi = f16_at(e, 0);
    }
    y
}

/// BF16 is the top half of an f32. NaNs keep their payload without the quiet bit `half` sets; no
/// arithmetic tells the two apart.
pub(super) fn bf16s(b: &[u8]) -> ChunkF32 {
    let mut y = [0f32; CHUNK];
    for (yi, e) in y.iter_mut().zip(b.chunks_exact(2)) {
        *yi = f32::from_bits((u16::from_le_bytes(*arr(e, 0)) as u32) << 16);
    }
    y
}
