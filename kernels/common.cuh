// Shared helpers for the kernels. Device code only; the C interface is scalpel_kernels.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "scalpel_kernels.h"

static inline const __nv_bfloat16 *as_bf16(const uint16_t *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }
static inline __nv_bfloat16 *as_bf16(uint16_t *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }

// Sum over a warp, every lane receiving the total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets it.
// `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by an earlier reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// Loads element i of a buffer whose type is given at run time, as f32.
__device__ __forceinline__ float load_as_f32(const void *p, ScalpelDType dt, size_t i) {
    return dt == SCALPEL_F32 ? static_cast<const float *>(p)[i]
                             : __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
}

__device__ __forceinline__ void store_from_f32(void *p, ScalpelDType dt, size_t i, float v) {
    if (dt == SCALPEL_F32)
        static_cast<float *>(p)[i] = v;
    else
        static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16(v);
}

// Blocks for a grid-stride loop over n elements with 256-thread blocks.
static inline int grid_for(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (int)(b < 65535 * 16 ? (b < 1 ? 1 : b) : 65535 * 16);
}
