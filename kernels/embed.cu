// Embedding gather: one block per token row. Twin: Cpu::embed. Test: tests/kernels.rs embed.
#include "common.cuh"

namespace {

__global__ void embed_kernel(const __nv_bfloat16 *__restrict__ table, const uint32_t *__restrict__ ids, int d,
                             float scale, float *__restrict__ out) {
    const int t = blockIdx.x;
    const __nv_bfloat16 *src = table + (size_t)ids[t] * d;
    float *dst = out + (size_t)t * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = __bfloat162float(src[i]) * scale;
}

}  // namespace

extern "C" int scalpel_embed(ScalpelStream stream, const uint16_t *table, const uint32_t *ids, int n, int d,
                             float scale, float *out) {
    if (n <= 0 || d <= 0 || !table || !ids || !out) return SCALPEL_INVALID_ARGUMENT;
    embed_kernel<<<n, 256, 0, stream>>>(as_bf16(table), ids, d, scale, out);
    return (int)cudaGetLastError();
}
