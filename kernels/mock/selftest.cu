// Kernels that break CUDA's rules on purpose, one rule each, so tests/mock_device.rs can check that
// the mock device catches every one and names the kernel and the line. Built into the mock only
// (kernels/*.cu are the real kernels; this file is not among them).
#include "common.cuh"

namespace {

// Half the block waits at a barrier the other half never reaches (they exit).
__global__ void barrier_after_exit_kernel(float *out) {
    if (threadIdx.x >= 16) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Two halves wait at two different barriers.
__global__ void split_barrier_kernel(float *out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

// A full-warp shuffle after half the warp has exited.
__global__ void shuffle_with_exited_lanes_kernel(float *out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
}

// Half a warp in a full-warp shuffle, the other half at a block barrier: neither can complete.
__global__ void deadlock_kernel(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    else
        __syncthreads();
    out[threadIdx.x] = v;
}

// One element past the buffer.
__global__ void out_of_bounds_kernel(float *out, int n) {
    if (threadIdx.x <= (unsigned)n) out[threadIdx.x] = 1.0f;
}

// Past the dynamic shared memory the launch asked for.
__global__ void shared_overflow_kernel(float *out) {
    extern __shared__ float dyn[];
    dyn[threadIdx.x + blockDim.x] = 1.0f;
    out[threadIdx.x] = 1.0f;
}

// Reads a neighbour's shared value without the barrier that would make it visible: right only
// when the neighbour happened to run first.
__global__ void missing_barrier_kernel(float *out) {
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    out[threadIdx.x] = threadIdx.x > 0 ? s[threadIdx.x - 1] : 0.0f;
}

__global__ void __launch_bounds__(64) bounded_kernel(float *out) { out[threadIdx.x] = 1.0f; }

__global__ void big_shared_kernel(float *out) {
    extern __shared__ float dyn[];
    dyn[threadIdx.x] = 2.0f;
    __syncthreads();
    out[threadIdx.x] = dyn[(threadIdx.x + 1) % blockDim.x];
}

// The m16n8k16 fragments of a known product: A[i][k] = i + k, B[k][j] = k - j (as bf16).
__global__ void mma_kernel(float *out) {
    const unsigned lane = threadIdx.x, g = lane >> 2, c = (lane & 3) * 2;
    auto bits = [](float x) { return (uint32_t)__float2bfloat16(x).__x; };
    auto pair = [&](float lo, float hi) { return bits(lo) | (bits(hi) << 16); };
    const uint32_t a[4] = {pair(g + c, g + c + 1), pair(g + 8 + c, g + 8 + c + 1), pair(g + c + 8, g + c + 9),
                           pair(g + 8 + c + 8, g + 8 + c + 9)};
    const uint32_t b[2] = {pair((float)c - g, (float)c + 1 - g), pair((float)c + 8 - g, (float)c + 9 - g)};
    float d[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    ::mock::mma_m16n8k16_bf16(__LINE__, d, a, b);
    out[g * 8 + c] = d[0];
    out[g * 8 + c + 1] = d[1];
    out[(g + 8) * 8 + c] = d[2];
    out[(g + 8) * 8 + c + 1] = d[3];
}

}  // namespace

// Runs self-test `which` with `threads` threads into out (n floats); returns the launch's code.
extern "C" int scalpel_mock_selftest(ScalpelStream stream, int which, float *out, int n, int threads, int smem) {
    switch (which) {
        case 0: barrier_after_exit_kernel<<<1, threads, 0, stream>>>(out); break;
        case 1: split_barrier_kernel<<<1, threads, 0, stream>>>(out); break;
        case 2: shuffle_with_exited_lanes_kernel<<<1, threads, 0, stream>>>(out); break;
        case 3: deadlock_kernel<<<1, threads, 0, stream>>>(out); break;
        case 4: out_of_bounds_kernel<<<1, threads, 0, stream>>>(out, n); break;
        case 5: shared_overflow_kernel<<<1, threads, smem, stream>>>(out); break;
        case 6: missing_barrier_kernel<<<1, threads, 0, stream>>>(out); break;
        case 7: bounded_kernel<<<1, threads, 0, stream>>>(out); break;
        case 8: big_shared_kernel<<<1, threads, smem, stream>>>(out); break;
        case 9: {
            const cudaError_t e =
                cudaFuncSetAttribute(big_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
            if (e != cudaSuccess) return (int)e;
            big_shared_kernel<<<1, threads, smem, stream>>>(out);
            break;
        }
        case 10: mma_kernel<<<1, 32, 0, stream>>>(out); break;
        default: return SCALPEL_INVALID_ARGUMENT;
    }
    return (int)cudaGetLastError();
}

// The mock's bf16 rounding of n floats, for the test against the Rust half crate.
extern "C" void scalpel_mock_bf16_round(const float *in, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = __float2bfloat16(in[i]).__x;
}
