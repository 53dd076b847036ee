// RMSNorm (w and 1 + w forms) and the residual add fused with it: one block per group of n values,
// f32 accumulation, bf16 output (the next matrix product's input). Twins: Cpu::rms_norm,
// Cpu::add_rms_norm. Tests: tests/kernels.rs rms_norm, add_rms_norm.
#include "common.cuh"

namespace {

constexpr int THREADS = 256;

__device__ __forceinline__ void write_normed(const float *row_f32, const void *row_any, ScalpelDType dt,
                                             const float *__restrict__ w, int n, float inv, int one_plus,
                                             __nv_bfloat16 *__restrict__ out) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float x = row_f32 ? row_f32[i] : load_as_f32(row_any, dt, i);
        const float g = one_plus ? 1.0f + w[i] : w[i];
        out[i] = __float2bfloat16((x * inv) * g);
    }
}

__global__ void rms_norm_kernel(const void *__restrict__ x, ScalpelDType dt, const float *__restrict__ w, int n,
                                float eps, int one_plus, __nv_bfloat16 *__restrict__ out) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * n;
    const void *row = dt == SCALPEL_F32 ? (const void *)((const float *)x + base)
                                        : (const void *)((const __nv_bfloat16 *)x + base);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = load_as_f32(row, dt, i);
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / n + eps);
    write_normed(nullptr, row, dt, w, n, inv, one_plus, out + base);
}

__global__ void add_rms_norm_kernel(float *__restrict__ x, const void *__restrict__ delta, ScalpelDType dt,
                                    const float *__restrict__ w, int n, float eps, int one_plus,
                                    __nv_bfloat16 *__restrict__ out) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * n;
    float *row = x + base;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = row[i] + load_as_f32(delta, dt, base + i);
        row[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / n + eps);
    // Each thread re-reads only the elements it wrote itself: no barrier needed for row[].
    write_normed(row, nullptr, SCALPEL_F32, w, n, inv, one_plus, out + base);
}

}  // namespace

extern "C" int scalpel_rms_norm(ScalpelStream stream, const void *x, ScalpelDType x_dtype, const float *w, int groups,
                                int n, float eps, int one_plus, uint16_t *out) {
    if (groups <= 0 || n <= 0 || !x || !w || !out) return SCALPEL_INVALID_ARGUMENT;
    rms_norm_kernel<<<groups, THREADS, 0, stream>>>(x, x_dtype, w, n, eps, one_plus, as_bf16(out));
    return (int)cudaGetLastError();
}

extern "C" int scalpel_add_rms_norm(ScalpelStream stream, float *x, const void *delta, ScalpelDType delta_dtype,
                                    const float *w, int rows, int n, float eps, int one_plus, uint16_t *out) {
    if (rows <= 0 || n <= 0 || !x || !delta || !w || !out) return SCALPEL_INVALID_ARGUMENT;
    add_rms_norm_kernel<<<rows, THREADS, 0, stream>>>(x, delta, delta_dtype, w, n, eps, one_plus, as_bf16(out));
    return (int)cudaGetLastError();
}
