// Element-wise and per-row kernels: casts, residual adds, the gated MLP activation, soft-capping,
// the interventions (add a vector, replace a row, project out a direction) and cosine search.
// Twins: the Cpu ops of the same names. Tests: tests/kernels.rs.
#include "common.cuh"

namespace {

__global__ void cast_bf16_kernel(const float *__restrict__ in, __nv_bfloat16 *__restrict__ out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(in[i]);
}

__global__ void add_kernel(float *__restrict__ x, const void *__restrict__ y, ScalpelDType dt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] += load_as_f32(y, dt, i);
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

__global__ void glu_kernel(const float *__restrict__ gate, const float *__restrict__ up, int act,
                           __nv_bfloat16 *__restrict__ out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        const float a = act == SCALPEL_SILU ? silu(g) : gelu_tanh(g);
        out[i] = __float2bfloat16(a * up[i]);
    }
}

__global__ void softcap_kernel(float *__restrict__ x, int64_t n, float cap) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] / cap);
}

// One block per selected row.
__global__ void add_rows_kernel(void *x, ScalpelDType dt, const float *__restrict__ v, float scale,
                                const int32_t *__restrict__ rows, int n) {
    const size_t base = (size_t)(rows ? rows[blockIdx.x] : (int)blockIdx.x) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        store_from_f32(x, dt, base + i, load_as_f32(x, dt, base + i) + scale * v[i]);
}

__global__ void set_row_kernel(void *x, ScalpelDType dt, const float *__restrict__ values, int row, int n) {
    const size_t base = (size_t)row * n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        store_from_f32(x, dt, base + i, values[i]);
}

__global__ void ablate_rows_kernel(void *x, ScalpelDType dt, const float *__restrict__ u,
                                   const int32_t *__restrict__ rows, int n) {
    __shared__ float scratch[32];
    const size_t base = (size_t)(rows ? rows[blockIdx.x] : (int)blockIdx.x) * n;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) dot += load_as_f32(x, dt, base + i) * u[i];
    dot = block_sum(dot, scratch);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        store_from_f32(x, dt, base + i, load_as_f32(x, dt, base + i) - dot * u[i]);
}

// One warp per table row.
__global__ void cosine_rows_kernel(const __nv_bfloat16 *__restrict__ table, const float *__restrict__ v, int rows,
                                   int n, float *__restrict__ out) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= rows) return;
    const __nv_bfloat16 *row = table + (size_t)warp * n;
    float dot = 0.0f, rr = 0.0f, vv = 0.0f;
    for (int i = lane; i < n; i += 32) {
        const float a = __bfloat162float(row[i]), b = v[i];
        dot += a * b;
        rr += a * a;
        vv += b * b;
    }
    dot = warp_sum(dot);
    rr = warp_sum(rr);
    vv = warp_sum(vv);
    if (lane == 0) out[warp] = dot / fmaxf(sqrtf(rr * vv), 1e-30f);
}

}  // namespace

extern "C" int scalpel_cast_bf16(ScalpelStream stream, const float *in, uint16_t *out, int64_t n) {
    if (n <= 0 || !in || !out) return SCALPEL_INVALID_ARGUMENT;
    cast_bf16_kernel<<<grid_for(n), 256, 0, stream>>>(in, as_bf16(out), n);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_add(ScalpelStream stream, float *x, const void *y, ScalpelDType y_dtype, int64_t n) {
    if (n <= 0 || !x || !y) return SCALPEL_INVALID_ARGUMENT;
    add_kernel<<<grid_for(n), 256, 0, stream>>>(x, y, y_dtype, n);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_glu(ScalpelStream stream, const float *gate, const float *up, ScalpelAct act, uint16_t *out,
                           int64_t n) {
    if (n <= 0 || !gate || !up || !out) return SCALPEL_INVALID_ARGUMENT;
    glu_kernel<<<grid_for(n), 256, 0, stream>>>(gate, up, (int)act, as_bf16(out), n);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_softcap(ScalpelStream stream, float *x, int64_t n, float cap) {
    if (n <= 0 || !x || !(cap > 0.0f)) return SCALPEL_INVALID_ARGUMENT;
    softcap_kernel<<<grid_for(n), 256, 0, stream>>>(x, n, cap);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_add_rows(ScalpelStream stream, void *x, ScalpelDType x_dtype, const float *v, float scale,
                                const int32_t *rows, int n_rows, int n) {
    if (n_rows <= 0 || n <= 0 || !x || !v) return SCALPEL_INVALID_ARGUMENT;
    add_rows_kernel<<<n_rows, 256, 0, stream>>>(x, x_dtype, v, scale, rows, n);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_set_row(ScalpelStream stream, void *x, ScalpelDType x_dtype, const float *values, int row,
                               int n) {
    if (row < 0 || n <= 0 || !x || !values) return SCALPEL_INVALID_ARGUMENT;
    set_row_kernel<<<(n + 255) / 256, 256, 0, stream>>>(x, x_dtype, values, row, n);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_ablate_rows(ScalpelStream stream, void *x, ScalpelDType x_dtype, const float *u,
                                   const int32_t *rows, int n_rows, int n) {
    if (n_rows <= 0 || n <= 0 || !x || !u) return SCALPEL_INVALID_ARGUMENT;
    ablate_rows_kernel<<<n_rows, 256, 0, stream>>>(x, x_dtype, u, rows, n);
    return (int)cudaGetLastError();
}

extern "C" int scalpel_cosine_rows(ScalpelStream stream, const uint16_t *table, const float *v, int rows, int n,
                                   float *out) {
    if (rows <= 0 || n <= 0 || !table || !v || !out) return SCALPEL_INVALID_ARGUMENT;
    const int warps_per_block = 8;
    cosine_rows_kernel<<<(rows + warps_per_block - 1) / warps_per_block, 32 * warps_per_block, 0, stream>>>(
        as_bf16(table), v, rows, n, out);
    return (int)cudaGetLastError();
}
