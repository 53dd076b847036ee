// Products on weights in their stored format (GGUF blocks, f16): decode's matrix-vector product
// dequantizing in registers, the panel dequantization for cuBLAS in prefill, and the embedding
// gather from a stored table. Every format dequantizes to exactly the f32 values of the CPU's
// reference dequantizers (src/model/quant.rs; the same operations in the same order, each product
// of a scale and a small integer exact in f32). Twin: qmatmul (src/backend/cpu/qmatmul), the CPU
// products on the same bytes. Tests: tests/kernels.rs qmatmul.
#include "common.cuh"

namespace {

// f16 bits to f32, exactly (subnormals included), without cuda_fp16.h.
__device__ __forceinline__ float half_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        // A subnormal f16 is mant · 2^-24: exact in f32.
        const float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

__device__ __forceinline__ float f16_at(const uint8_t *p) {
    return half_bits_to_float((uint16_t)(p[0] | (p[1] << 8)));
}

__device__ __forceinline__ uint32_t u32_at(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block, packed in 12 bytes.
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int &sc, int &m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Each format: ELEMS values in BYTES bytes per block, and `group`, the 32 values of group g of a row
// (32-value groups never cross a block).
struct F16 {
    static constexpr int ELEMS = 1, BYTES = 2;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        for (int i = 0; i < 32; i++) v[i] = f16_at(row + 2 * (g * 32 + i));
    }
};

struct Q8_0 {
    static constexpr int ELEMS = 32, BYTES = 34;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + g * BYTES;
        const float d = f16_at(b);
        for (int i = 0; i < 32; i++) v[i] = (float)(int8_t)b[2 + i] * d;
    }
};

struct Q4_0 {
    static constexpr int ELEMS = 32, BYTES = 18;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + g * BYTES;
        const float d = f16_at(b);
        for (int j = 0; j < 16; j++) {
            v[j] = (float)((int)(b[2 + j] & 0x0f) - 8) * d;
            v[j + 16] = (float)((int)(b[2 + j] >> 4) - 8) * d;
        }
    }
};

struct Q4_1 {
    static constexpr int ELEMS = 32, BYTES = 20;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + g * BYTES;
        const float d = f16_at(b), m = f16_at(b + 2);
        for (int j = 0; j < 16; j++) {
            v[j] = (float)(b[4 + j] & 0x0f) * d + m;
            v[j + 16] = (float)(b[4 + j] >> 4) * d + m;
        }
    }
};

struct Q5_0 {
    static constexpr int ELEMS = 32, BYTES = 22;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + g * BYTES;
        const float d = f16_at(b);
        const uint32_t qh = u32_at(b + 2);
        for (int j = 0; j < 16; j++) {
            const uint32_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            v[j] = (float)((int)((b[6 + j] & 0x0f) | h0) - 16) * d;
            v[j + 16] = (float)((int)((b[6 + j] >> 4) | h1) - 16) * d;
        }
    }
};

struct Q5_1 {
    static constexpr int ELEMS = 32, BYTES = 24;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + g * BYTES;
        const float d = f16_at(b), m = f16_at(b + 2);
        const uint32_t qh = u32_at(b + 4);
        for (int j = 0; j < 16; j++) {
            const uint32_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            v[j] = (float)((b[8 + j] & 0x0f) | h0) * d + m;
            v[j + 16] = (float)((b[8 + j] >> 4) | h1) * d + m;
        }
    }
};

struct Q4_K {
    static constexpr int ELEMS = 256, BYTES = 144;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + (g >> 3) * BYTES;
        const int s = g & 7, j = s >> 1;
        const float d = f16_at(b), dmin = f16_at(b + 2);
        int sc, m;
        scale_min_k4(s, b + 4, sc, m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        const uint8_t *q = b + 16 + 32 * j;
        for (int l = 0; l < 32; l++) v[l] = d1 * (float)((s & 1) ? q[l] >> 4 : q[l] & 0x0f) - m1;
    }
};

struct Q5_K {
    static constexpr int ELEMS = 256, BYTES = 176;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + (g >> 3) * BYTES;
        const int s = g & 7, j = s >> 1;
        const float d = f16_at(b), dmin = f16_at(b + 2);
        int sc, m;
        scale_min_k4(s, b + 4, sc, m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        const uint8_t *qh = b + 16, *ql = b + 48 + 32 * j;
        const uint8_t bit = (s & 1) ? (uint8_t)(2u << (2 * j)) : (uint8_t)(1u << (2 * j));
        for (int l = 0; l < 32; l++) {
            const int lo = (s & 1) ? ql[l] >> 4 : ql[l] & 0x0f;
            v[l] = d1 * (float)(lo + ((qh[l] & bit) ? 16 : 0)) - m1;
        }
    }
};

struct Q6_K {
    static constexpr int ELEMS = 256, BYTES = 210;
    __device__ static void group(const uint8_t *row, int g, float (&v)[32]) {
        const uint8_t *b = row + (g >> 3) * BYTES;
        const int s = g & 7, n = s >> 2, quarter = s & 3;
        const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192 + 8 * n);
        const float d = f16_at(b + 208);
        for (int l = 0; l < 32; l++) {
            const int lo = quarter & 1 ? ql[l + 32] : ql[l];
            const int q = (quarter < 2 ? (lo & 0x0f) : (lo >> 4)) | (((qh[l] >> (2 * quarter)) & 3) << 4);
            v[l] = d * (float)sc[l / 16 + 2 * quarter] * (float)(q - 32);
        }
    }
};

constexpr int MAX_M = 8;
constexpr int ROWS_PER_BLOCK = 8;  // one warp per row

// x[i] as f32, for an x of element type X (float or __nv_bfloat16).
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// The bytes of 32 consecutive groups of a row: what a warp decodes per step.
template <class F>
constexpr int span_bytes() {
    return 32 * 32 / F::ELEMS * F::BYTES;
}

// Copies bytes [lo, hi) of the weights to `dst` (16-byte aligned) with 128-bit loads: the warp
// reads the 16-byte-aligned lines covering the range, coalesced, lane c taking lines c, c + 32, ...;
// `dst[lo % 16]` receives byte `lo`. A line reaching outside [w_lo, w_hi), the weights' bytes, is
// read a byte at a time so nothing outside them is touched (the blocks of most formats, 18 to 210
// bytes, do not keep rows on 16-byte boundaries).
__device__ __forceinline__ void stage_bytes(const uint8_t *w_lo, const uint8_t *w_hi, const uint8_t *lo,
                                            const uint8_t *hi, uint8_t *dst, int lane) {
    const uint8_t *first = reinterpret_cast<const uint8_t *>(reinterpret_cast<uintptr_t>(lo) & ~(uintptr_t)15);
    const int lines = (int)((hi - first + 15) / 16);
    for (int c = lane; c < lines; c += 32) {
        const uint8_t *p = first + 16 * c;
        if (p >= w_lo && p + 16 <= w_hi) {
            *reinterpret_cast<uint4 *>(dst + 16 * c) = *reinterpret_cast<const uint4 *>(p);
        } else {
            for (int k = 0; k < 16; k++) dst[16 * c + k] = (p + k >= w_lo && p + k < w_hi) ? p[k] : 0;
        }
    }
}

// Each warp walks one row, 32 groups per step: the step's bytes come in through shared memory with
// 128-bit loads (stage_bytes), then lane l decodes group l of the step from there and multiplies
// it with x. The lanes' partial sums meet in shared memory, summed by one thread per (row, x row):
// one barrier per block rather than a butterfly of shuffles per row and x row.
template <class F, class X>
__global__ void __launch_bounds__(256) qmatvec_kernel(const uint8_t *__restrict__ w, int rows, int cols,
                                                      int row_bytes, const X *__restrict__ x, int m,
                                                      float *__restrict__ out) {
    // The span, its misalignment and the last line, in whole lines: every warp's stage 16-aligned.
    constexpr int STAGE = (span_bytes<F>() + 15) / 16 * 16 + 32;
    __shared__ __align__(16) uint8_t stage[ROWS_PER_BLOCK][STAGE];
    __shared__ float part[MAX_M][ROWS_PER_BLOCK * 32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * ROWS_PER_BLOCK + warp;
    const int groups = cols / 32;
    float acc[MAX_M];
#pragma unroll
    for (int t = 0; t < MAX_M; t++) acc[t] = 0.0f;
    if (row < rows) {  // the same for the whole warp: its __syncwarp calls match
        const uint8_t *w_hi = w + (size_t)rows * row_bytes;
        const uint8_t *r = w + (size_t)row * row_bytes;
        for (int g0 = 0; g0 < groups; g0 += 32) {
            const int n = min(32, groups - g0);
            // Groups are whole blocks or whole sub-blocks, and g0 a multiple of 32 (of 8 blocks'
            // sub-blocks for the 256-value formats): the step starts on a block boundary.
            const uint8_t *lo = r + (size_t)g0 * 32 / F::ELEMS * F::BYTES;
            const uint8_t *hi = lo + (size_t)n * 32 / F::ELEMS * F::BYTES;
            stage_bytes(w, w_hi, lo, hi, stage[warp], lane);
            __syncwarp();
            if (lane < n) {
                const int g = g0 + lane;
                float v[32];
                F::group(stage[warp] + (reinterpret_cast<uintptr_t>(lo) & 15), lane, v);
#pragma unroll
                for (int t = 0; t < MAX_M; t++) {
                    if (t >= m) break;
                    const X *xg = x + (size_t)t * cols + (size_t)g * 32;
                    // Eight independent sums: instruction-level parallelism instead of one long chain.
                    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int i = 0; i < 32; i++) s[i & 7] += v[i] * to_f32(xg[i]);
                    acc[t] += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
                }
            }
            __syncwarp();  // every lane has decoded before the next step overwrites the stage
        }
    }
#pragma unroll
    for (int t = 0; t < MAX_M; t++) part[t][threadIdx.x] = acc[t];
    __syncthreads();
    if ((int)threadIdx.x < ROWS_PER_BLOCK * m) {
        const int rr = threadIdx.x / m, t = threadIdx.x % m, orow = blockIdx.x * ROWS_PER_BLOCK + rr;
        if (orow < rows) {
            float s = 0.0f;
            for (int l = 0; l < 32; l++) s += part[t][rr * 32 + l];
            out[(size_t)t * rows + orow] = s;
        }
    }
}

// One thread per 32-value group of the panel.
template <class F>
__global__ void qdequant_bf16_kernel(const uint8_t *__restrict__ w, int cols, int row_bytes, int first, int n_rows,
                                     __nv_bfloat16 *__restrict__ out) {
    const int groups = cols / 32;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n_rows * groups) return;
    const int r = (int)(i / groups), g = (int)(i % groups);
    float v[32];
    F::group(w + (size_t)(first + r) * row_bytes, g, v);
    __nv_bfloat16 *dst = out + (size_t)r * cols + (size_t)g * 32;
    for (int k = 0; k < 32; k++) dst[k] = __float2bfloat16(v[k]);
}

// One block per token, one thread per 32-value group.
template <class F>
__global__ void qembed_kernel(const uint8_t *__restrict__ w, int cols, int row_bytes,
                              const uint32_t *__restrict__ ids, float scale, float *__restrict__ out) {
    const int t = blockIdx.x;
    const uint8_t *row = w + (size_t)ids[t] * row_bytes;
    for (int g = threadIdx.x; g < cols / 32; g += blockDim.x) {
        float v[32];
        F::group(row, g, v);
        float *dst = out + (size_t)t * cols + (size_t)g * 32;
        for (int k = 0; k < 32; k++) dst[k] = v[k] * scale;
    }
}

// Calls f with the format's type, or returns false for a type without kernels.
template <class Fn>
bool with_format(ScalpelQType type, Fn &&f) {
    switch (type) {
        case SCALPEL_Q_F16: f(F16{}); return true;
        case SCALPEL_Q4_0: f(Q4_0{}); return true;
        case SCALPEL_Q4_1: f(Q4_1{}); return true;
        case SCALPEL_Q5_0: f(Q5_0{}); return true;
        case SCALPEL_Q5_1: f(Q5_1{}); return true;
        case SCALPEL_Q8_0: f(Q8_0{}); return true;
        case SCALPEL_Q4_K: f(Q4_K{}); return true;
        case SCALPEL_Q5_K: f(Q5_K{}); return true;
        case SCALPEL_Q6_K: f(Q6_K{}); return true;
        default: return false;
    }
}

// Rows of `cols` values in whole 32-value groups and whole blocks, `row_bytes` each.
template <class F>
bool geometry_ok(int cols, int row_bytes) {
    return cols > 0 && cols % 32 == 0 && cols % F::ELEMS == 0 && row_bytes == cols / F::ELEMS * F::BYTES;
}

}  // namespace

extern "C" int scalpel_qmatvec(ScalpelStream stream, const uint8_t *w, ScalpelQType type, int rows, int cols,
                               int row_bytes, const void *x, ScalpelDType x_dtype, int m, float *out) {
    if (!w || !x || !out || rows <= 0 || m < 1 || m > MAX_M) return SCALPEL_INVALID_ARGUMENT;
    int code = SCALPEL_INVALID_ARGUMENT;
    with_format(type, [&](auto f) {
        using F = decltype(f);
        if (!geometry_ok<F>(cols, row_bytes)) return;
        const unsigned blocks = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        if (x_dtype == SCALPEL_F32)
            qmatvec_kernel<F, float><<<blocks, 32 * ROWS_PER_BLOCK, 0, stream>>>(
                w, rows, cols, row_bytes, static_cast<const float *>(x), m, out);
        else
            qmatvec_kernel<F, __nv_bfloat16><<<blocks, 32 * ROWS_PER_BLOCK, 0, stream>>>(
                w, rows, cols, row_bytes, static_cast<const __nv_bfloat16 *>(x), m, out);
        code = (int)cudaGetLastError();
    });
    return code;
}

extern "C" int scalpel_qdequant_bf16(ScalpelStream stream, const uint8_t *w, ScalpelQType type, int cols,
                                     int row_bytes, int first, int n_rows, uint16_t *out) {
    if (!w || !out || first < 0 || n_rows <= 0) return SCALPEL_INVALID_ARGUMENT;
    int code = SCALPEL_INVALID_ARGUMENT;
    with_format(type, [&](auto f) {
        using F = decltype(f);
        if (!geometry_ok<F>(cols, row_bytes)) return;
        const int64_t groups = (int64_t)n_rows * (cols / 32);
        qdequant_bf16_kernel<F><<<(unsigned)((groups + 255) / 256), 256, 0, stream>>>(w, cols, row_bytes, first, n_rows,
                                                                                  as_bf16(out));
        code = (int)cudaGetLastError();
    });
    return code;
}

extern "C" int scalpel_qembed(ScalpelStream stream, const uint8_t *w, ScalpelQType type, int cols, int row_bytes,
                              const uint32_t *ids, int n, float scale, float *out) {
    if (!w || !ids || !out || n <= 0) return SCALPEL_INVALID_ARGUMENT;
    int code = SCALPEL_INVALID_ARGUMENT;
    with_format(type, [&](auto f) {
        using F = decltype(f);
        if (!geometry_ok<F>(cols, row_bytes)) return;
        qembed_kernel<F><<<n, 128, 0, stream>>>(w, cols, row_bytes, ids, scale, out);
        code = (int)cudaGetLastError();
    });
    return code;
}
