// Choosing the next token on the device: greedy (first maximum), or sampling among the candidates
// that pass top-k, top-p and min-p, by a uniform number walking their cumulative probability in
// index order. One block of 1024 threads over the whole vocabulary. Twin: Sampler::pick
// (src/sample.rs), which applies the same rule on the host. Test: tests/kernels.rs sample.
#include "common.cuh"

namespace {

constexpr int THREADS = 1024;

// Floats mapped to unsigned integers with the same order.
__device__ __forceinline__ uint32_t order_key(float f) {
    const uint32_t b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float block_max_f(float v, float *scratch) { return block_max(v, scratch); }

// Sum over the block of the probabilities exp(z - m) of the tokens whose key is at least `t`.
__device__ float mass_at_least(const float *logits, int V, float inv_t, float m, uint32_t t, float *scratch) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float z = logits[i] * inv_t;
        if (order_key(z) >= t) s += expf(z - m);
    }
    return block_sum(s, scratch);
}

__global__ void __launch_bounds__(THREADS) sample_kernel(const float *__restrict__ logits, int V, ScalpelSampling p,
                                                         double u, uint32_t *__restrict__ out) {
    __shared__ float scratch[32];
    __shared__ unsigned hist[256];
    __shared__ uint32_t shared_u32[2];
    __shared__ float chunk_sums[THREADS];
    const int tid = threadIdx.x;

    // NaN anywhere: report it rather than pick garbage.
    int nan = 0;
    for (int i = tid; i < V; i += blockDim.x) nan |= isnan(logits[i]);
    if (__syncthreads_or(nan)) {
        if (tid == 0) *out = 0xffffffffu;
        return;
    }

    if (p.temperature <= 0.0f) {
        // Greedy: the largest value, the lowest index among equals.
        float best = -INFINITY;
        int idx = V;
        for (int i = tid; i < V; i += blockDim.x)
            if (logits[i] > best) best = logits[i], idx = i;
        __shared__ float bv[32];
        __shared__ int bi[32];
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) best = ov, idx = oi;
        }
        if ((tid & 31) == 0) bv[tid >> 5] = best, bi[tid >> 5] = idx;
        __syncthreads();
        if (tid < 32) {
            best = tid < (int)(blockDim.x >> 5) ? bv[tid] : -INFINITY;
            idx = tid < (int)(blockDim.x >> 5) ? bi[tid] : V;
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, best, o);
                const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
                if (ov > best || (ov == best && oi < idx)) best = ov, idx = oi;
            }
            if (tid == 0) *out = (uint32_t)(idx < V ? idx : 0);
        }
        return;
    }

    const float inv_t = 1.0f / p.temperature;
    float m = -INFINITY;
    for (int i = tid; i < V; i += blockDim.x) m = fmaxf(m, logits[i] * inv_t);
    m = block_max_f(m, scratch);

    // top-k: the key of the k-th largest tempered logit, by radix selection (8 bits a pass).
    uint32_t floor_key = 0;
    if (p.top_k > 0 && p.top_k < V) {
        uint32_t prefix = 0, mask = 0;
        int k = p.top_k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
            __syncthreads();
            for (int i = tid; i < V; i += blockDim.x) {
                const uint32_t key = order_key(logits[i] * inv_t);
                if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                int above = 0, b = 255;
                for (; b > 0; b--) {
                    if (above + (int)hist[b] >= k) break;
                    above += hist[b];
                }
                shared_u32[0] = (uint32_t)b;
                shared_u32[1] = (uint32_t)(k - above);
            }
            __syncthreads();
            prefix |= shared_u32[0] << shift;
            mask |= 255u << shift;
            k = (int)shared_u32[1];
            __syncthreads();
        }
        floor_key = prefix;
    }

    // top-p: the largest threshold whose kept mass is still at least top_p of the top-k mass.
    if (p.top_p < 1.0f) {
        const float total = mass_at_least(logits, V, inv_t, m, floor_key, scratch);
        const float need = p.top_p * total;
        uint32_t lo = floor_key, hi = order_key(m);
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo + 1) / 2;
            if (mass_at_least(logits, V, inv_t, m, mid, scratch) >= need)
                lo = mid;
            else
                hi = mid - 1;
        }
        floor_key = lo;
    }
    // min-p: probability at least min_p times the largest, i.e. z >= m + log(min_p).
    if (p.min_p > 0.0f) floor_key = max(floor_key, order_key(m + logf(p.min_p)));

    // The draw: candidates in index order, each thread owning one contiguous chunk.
    const int chunk = (V + blockDim.x - 1) / blockDim.x;
    const int lo_i = min(V, tid * chunk), hi_i = min(V, lo_i + chunk);
    float local = 0.0f;
    for (int i = lo_i; i < hi_i; i++) {
        const float z = logits[i] * inv_t;
        if (order_key(z) >= floor_key) local += expf(z - m);
    }
    chunk_sums[tid] = local;
    __syncthreads();
    // Inclusive scan of the chunk sums (Hillis–Steele; 10 steps for 1024 threads).
    for (int off = 1; off < (int)blockDim.x; off <<= 1) {
        const float add = tid >= off ? chunk_sums[tid - off] : 0.0f;
        __syncthreads();
        chunk_sums[tid] += add;
        __syncthreads();
    }
    const float total = chunk_sums[blockDim.x - 1];
    const float target = (float)(u * (double)total);
    const float before = tid > 0 ? chunk_sums[tid - 1] : 0.0f;
    if (tid == 0) shared_u32[0] = 0xffffffffu;
    __syncthreads();
    if (local > 0.0f && target >= before && target < chunk_sums[tid]) {
        float cum = before;
        int pick = -1, last = -1;
        for (int i = lo_i; i < hi_i; i++) {
            const float z = logits[i] * inv_t;
            if (order_key(z) < floor_key) continue;
            last = i;
            cum += expf(z - m);
            if (target < cum) {
                pick = i;
                break;
            }
        }
        atomicMin(&shared_u32[0], (uint32_t)(pick >= 0 ? pick : last));
    }
    __syncthreads();
    if (tid == 0) {
        uint32_t r = shared_u32[0];
        if (r == 0xffffffffu) {
            // Rounding put the target at the very end: the last candidate.
            for (int i = V - 1; i >= 0; i--)
                if (order_key(logits[i] * inv_t) >= floor_key) {
                    r = (uint32_t)i;
                    break;
                }
        }
        *out = r;
    }
}

}  // namespace

extern "C" int scalpel_sample(ScalpelStream stream, const float *logits, int vocab, const ScalpelSampling *params,
                              double u, uint32_t *out) {
    if (!logits || vocab <= 0 || !params || !out || !(u >= 0.0 && u < 1.0)) return SCALPEL_INVALID_ARGUMENT;
    sample_kernel<<<1, THREADS, 0, stream>>>(logits, vocab, *params, u, out);
    return (int)cudaGetLastError();
}
