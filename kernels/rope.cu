// RoPE fused into the paged KV-cache write: one block per (row, head) over q heads then k/v heads;
// q is rotated in place, k rotated and v copied into the bf16 caches at each row's slot (its
// sequence's page table at its position), both read from device memory so a captured decode graph
// replays with new positions and pages. Twin: Cpu::rope_kv.
// Test: tests/kernels.rs rope_kv.
#include "common.cuh"

namespace {

__global__ void rope_kv_kernel(void *q, ScalpelDType qdt, const void *k, ScalpelDType kdt, const void *v,
                               ScalpelDType vdt,
                               __nv_bfloat16 *__restrict__ kc, __nv_bfloat16 *__restrict__ vc, int n_heads,
                               int n_kv, int hd, int capacity, ScalpelSeqs sq,
                               const float *__restrict__ inv_freq) {
    const int t = blockIdx.x, h = blockIdx.y, half = hd / 2;
    const int pos = sq.pos[t];
    // The host checks these; never write past a page table or the pool.
    if (pos < 0 || pos / SCALPEL_PAGE >= sq.max_pages) return;
    const int slot = sq.pages[(size_t)sq.seq[t] * sq.max_pages + pos / SCALPEL_PAGE] * SCALPEL_PAGE + pos % SCALPEL_PAGE;
    if (slot < 0 || slot >= capacity) return;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        // The angle is an f32 product, as the reference computes it.
        const float angle = (float)pos * inv_freq[i];
        float s, c;
        sincosf(angle, &s, &c);
        if (h < n_heads) {
            const size_t base = ((size_t)t * n_heads + h) * hd;
            const float x1 = load_as_f32(q, qdt, base + i), x2 = load_as_f32(q, qdt, base + i + half);
            store_from_f32(q, qdt, base + i, x1 * c - x2 * s);
            store_from_f32(q, qdt, base + i + half, x2 * c + x1 * s);
        } else {
            const int j = h - n_heads;
            const size_t src = ((size_t)t * n_kv + j) * hd;
            const size_t dst = ((size_t)slot * n_kv + j) * hd;
            const float k1 = load_as_f32(k, kdt, src + i), k2 = load_as_f32(k, kdt, src + i + half);
            kc[dst + i] = __float2bfloat16(k1 * c - k2 * s);
            kc[dst + i + half] = __float2bfloat16(k2 * c + k1 * s);
            vc[dst + i] = __float2bfloat16(load_as_f32(v, vdt, src + i));
            vc[dst + i + half] = __float2bfloat16(load_as_f32(v, vdt, src + i + half));
        }
    }
}

}  // namespace

extern "C" int scalpel_rope_kv(ScalpelStream stream, void *q, ScalpelDType q_dtype, const void *k,
                               ScalpelDType k_dtype, const void *v, ScalpelDType v_dtype, uint16_t *k_cache,
                               uint16_t *v_cache, const ScalpelAttn *g, const ScalpelSeqs *seqs,
                               const float *inv_freq) {
    if (!g || !q || !k || !v || !k_cache || !v_cache || !seqs || !inv_freq) return SCALPEL_INVALID_ARGUMENT;
    if (!seqs->pos || !seqs->seq || !seqs->pages || seqs->n_seqs <= 0 || seqs->max_pages <= 0)
        return SCALPEL_INVALID_ARGUMENT;
    if (g->t <= 0 || g->n_heads <= 0 || g->n_kv_heads <= 0 || g->head_dim <= 0 || g->head_dim % 2 ||
        g->head_dim > 512)
        return SCALPEL_INVALID_ARGUMENT;
    const dim3 grid(g->t, g->n_heads + g->n_kv_heads);
    const int threads = g->head_dim / 2 < 32 ? 32 : (g->head_dim / 2 > 256 ? 256 : g->head_dim / 2);
    rope_kv_kernel<<<grid, threads, 0, stream>>>(q, q_dtype, k, k_dtype, v, v_dtype, as_bf16(k_cache), as_bf16(v_cache),
                                                 g->n_heads, g->n_kv_heads, g->head_dim, g->capacity, *seqs,
                                                 inv_freq);
    return (int)cudaGetLastError();
}
