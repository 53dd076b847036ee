// Fused causal attention over the paged bf16 KV cache, each query row over its own sequence's
// keys (ragged batches: prompt chunks and decode rows of many sequences in one step), and the
// probability recompute for the attn_probs probe. Twin: Cpu::attention / Cpu::attn_probs. Tests: tests/kernels.rs attention_*.
//
// Two kernels compute the same thing:
// - the prefill kernel (head dims 64, 128, 256): a flash-attention tile loop on tensor cores
//   (mma.sync m16n8k16 bf16 → f32), 64 query rows per block, online softmax in registers;
// - the row kernel (any even head dim up to 256): one block per (head, query row), four warps
//   walking the keys with an online softmax; a step of few rows (decode) is split along the keys
//   into chunks whose partial results a second kernel merges.
// A key at position p of a sequence is read at slot pages[p / SCALPEL_PAGE] * SCALPEL_PAGE +
// p % SCALPEL_PAGE of the pool (key_slot).
// Both write each row's log-sum-exp, from which attn_probs recomputes exp(score − lse) exactly as
// the fast path normalized it.
#include "common.cuh"

namespace {

constexpr int CHUNK = 256;  // keys per split of a decode row
constexpr int ROW_THREADS = 128;

__device__ __forceinline__ int first_key(int pos, int window) { return window > 0 ? max(0, pos + 1 - window) : 0; }

// The pool slot of position `key` of the sequence whose page table is `table`.
__device__ __forceinline__ size_t key_slot(const int32_t *table, int key) {
    return (size_t)table[key / SCALPEL_PAGE] * SCALPEL_PAGE + key % SCALPEL_PAGE;
}

__device__ __forceinline__ float cap_score(float s, float softcap) {
    return softcap > 0.0f ? softcap * tanhf(s / softcap) : s;
}

// ---------------------------------------------------------------------------------------------
// Row kernel.

template <int J>  // J = ceil(head_dim / 32): the values of a head each lane holds
__global__ void __launch_bounds__(ROW_THREADS) attn_rows_kernel(const __nv_bfloat16 *__restrict__ q,
                                                                 const __nv_bfloat16 *__restrict__ kc,
                                                                 const __nv_bfloat16 *__restrict__ vc, ScalpelAttn g,
                                                                 ScalpelSeqs sq,
                                                                 __nv_bfloat16 *__restrict__ out,
                                                                 float *__restrict__ lse, float *__restrict__ ws) {
    constexpr int WARPS = ROW_THREADS / 32;
    __shared__ float qs[32 * J];
    __shared__ float wm[WARPS], wl[WARPS];
    __shared__ float wacc[WARPS][32 * J];
    // Rows in x (up to 2^31 - 1 blocks), heads in y (at most 65535, far above any model's).
    const int row = blockIdx.x, h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int hd = g.head_dim, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = h / (g.n_heads / g.n_kv_heads);
    const int pos = sq.pos[row];
    const int32_t *table = sq.pages + (size_t)sq.seq[row] * sq.max_pages;
    const size_t qoff = ((size_t)row * g.n_heads + h) * hd;
    for (int i = threadIdx.x; i < 32 * J; i += blockDim.x) qs[i] = i < hd ? __bfloat162float(q[qoff + i]) : 0.0f;
    __syncthreads();

    int lo = first_key(pos, g.window), hi = pos + 1;  // keys [lo, hi)
    if (splits > 1) {
        lo = max(lo, split * CHUNK);
        hi = min(hi, (split + 1) * CHUNK);
    }
    float m = -INFINITY, l = 0.0f, acc[J];
#pragma unroll
    for (int j = 0; j < J; j++) acc[j] = 0.0f;
    for (int key = lo + warp; key < hi; key += WARPS) {
        const size_t off = (key_slot(table, key) * g.n_kv_heads + kvh) * hd;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < J; j++) {
            const int d = lane + 32 * j;
            if (d < hd) dot += qs[d] * __bfloat162float(kc[off + d]);
        }
        dot = warp_sum(dot);
        const float s = cap_score(dot * g.scale, g.softcap);
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int j = 0; j < J; j++) {
            const int d = lane + 32 * j;
            const float v = d < hd ? __bfloat162float(vc[off + d]) : 0.0f;
            acc[j] = acc[j] * corr + p * v;
        }
        m = m_new;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < J; j++) wacc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    // Merge the warps: every thread takes some of the head's values.
    float M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, wm[w]);
    float L = 0.0f;
    for (int w = 0; w < WARPS; w++) L += wm[w] == -INFINITY ? 0.0f : wl[w] * expf(wm[w] - M);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < WARPS; w++)
            if (wm[w] != -INFINITY) o += wacc[w][d] * expf(wm[w] - M);
        if (splits == 1) {
            out[qoff + d] = __float2bfloat16(o / L);
        } else {
            ws[(((size_t)h * g.t + row) * splits + split) * (hd + 2) + 2 + d] = o;
        }
    }
    if (threadIdx.x == 0) {
        if (splits == 1) {
            lse[(size_t)h * g.t + row] = M + logf(L);
        } else {
            float *p = ws + (((size_t)h * g.t + row) * splits + split) * (hd + 2);
            p[0] = M;
            p[1] = L;
        }
    }
}

// Merges the splits of each (head, row): out = Σ o_s e^{M_s − M} / Σ L_s e^{M_s − M}.
__global__ void attn_combine_kernel(const float *__restrict__ ws, int splits, ScalpelAttn g,
                                    __nv_bfloat16 *__restrict__ out, float *__restrict__ lse) {
    const int row = blockIdx.x, h = blockIdx.y, hd = g.head_dim;
    const float *base = ws + ((size_t)h * g.t + row) * splits * (hd + 2);
    float M = -INFINITY;
    for (int s = 0; s < splits; s++)
        if (base[s * (hd + 2) + 1] > 0.0f) M = fmaxf(M, base[s * (hd + 2)]);
    float L = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float *p = base + s * (hd + 2);
        if (p[1] > 0.0f) L += p[1] * expf(p[0] - M);
    }
    const size_t qoff = ((size_t)row * g.n_heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float *p = base + s * (hd + 2);
            if (p[1] > 0.0f) o += p[2 + d] * expf(p[0] - M);
        }
        out[qoff + d] = __float2bfloat16(o / L);
    }
    if (threadIdx.x == 0) lse[(size_t)h * g.t + row] = M + logf(L);
}

// Steps of few rows (decode) split their keys, so a few long sequences still fill the GPU; the
// count depends only on the page tables' size, so a recorded step replays with the same grid.
// Splits past a row's own keys find nothing and the merge skips them.
constexpr int SPLIT_ROWS = 64;
int row_splits(const ScalpelAttn *g, const ScalpelSeqs *sq) {
    return g->t <= SPLIT_ROWS ? (sq->max_pages * SCALPEL_PAGE + CHUNK - 1) / CHUNK : 1;
}

template <int J>
int launch_rows(cudaStream_t stream, const uint16_t *q, const uint16_t *kc, const uint16_t *vc,
                const ScalpelAttn *g, const ScalpelSeqs *sq, uint16_t *out, float *lse, float *ws) {
    const int splits = row_splits(g, sq);
    if (splits > 1 && !ws) return SCALPEL_INVALID_ARGUMENT;
    if (g->n_heads > 65535 || splits > 65535) return SCALPEL_INVALID_ARGUMENT;  // grid y and z limits
    attn_rows_kernel<J><<<dim3(g->t, g->n_heads, splits), ROW_THREADS, 0, stream>>>(
        as_bf16(q), as_bf16(kc), as_bf16(vc), *g, *sq, as_bf16(out), lse, ws);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || splits == 1) return (int)e;
    attn_combine_kernel<<<dim3(g->t, g->n_heads), 128, 0, stream>>>(ws, splits, *g, as_bf16(out), lse);
    return (int)cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// Prefill kernel on tensor cores.

// The one helper with two bodies: the mock device computes the instruction from the PTX ISA's
// fragment layouts (kernels/mock/runtime.cpp).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef SCALPEL_MOCK
    ::mock::mma_m16n8k16_bf16(__LINE__, d, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t pack_bits(__nv_bfloat16 lo, __nv_bfloat16 hi) {
    return (uint32_t)(*reinterpret_cast<const uint16_t *>(&lo)) |
           ((uint32_t)(*reinterpret_cast<const uint16_t *>(&hi)) << 16);
}

constexpr int BM = SCALPEL_PREFILL_ROWS;  // query rows per block: 4 warps × 16
static_assert(BM == 64, "the prefill kernel's warps own 16 rows each");

template <int HD, int BN>
constexpr int prefill_smem() {
    return (BM + 2 * BN) * (HD + 8) * 2;
}

// Each warp owns 16 query rows; a thread holds rows r0 = lane/4 and r0 + 8 of them, and the
// columns (lane%4)*2, +1 of every 8-wide tile (the mma C layout).
template <int HD, int BN>
__global__ void __launch_bounds__(128) attn_prefill_kernel(const __nv_bfloat16 *__restrict__ q,
                                                            const __nv_bfloat16 *__restrict__ kc,
                                                            const __nv_bfloat16 *__restrict__ vc, ScalpelAttn g,
                                                            ScalpelSeqs sq,
                                                            __nv_bfloat16 *__restrict__ out,
                                                            float *__restrict__ lse) {
    constexpr int LD = HD + 8;  // padded row stride in smem (bf16): rows land on different banks
    constexpr int NT = BN / 8, OT = HD / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16 *Qs = reinterpret_cast<__nv_bfloat16 *>(smem_raw);
    __nv_bfloat16 *Ks = Qs + BM * LD;
    __nv_bfloat16 *Vs = Ks + BN * LD;
    // A tile is BM rows of one sequence: rows row0 + m_base .. of the step.
    const int seq = sq.tiles[2 * blockIdx.x], m_base = sq.tiles[2 * blockIdx.x + 1], h = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int kvh = h / (g.n_heads / g.n_kv_heads);
    const int row0 = sq.row0[seq], T = sq.rows[seq], start = sq.pos[row0], S = start + T;
    const int32_t *table = sq.pages + (size_t)seq * sq.max_pages;

    for (int idx = threadIdx.x; idx < BM * (HD / 8); idx += blockDim.x) {
        const int r = idx / (HD / 8), c = (idx % (HD / 8)) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (m_base + r < T)
            val = *reinterpret_cast<const uint4 *>(q + ((size_t)(row0 + m_base + r) * g.n_heads + h) * HD + c);
        *reinterpret_cast<uint4 *>(Qs + r * LD + c) = val;
    }

    const int qrow0 = warp * 16 + gid;                 // rows within the tile
    const int qpos[2] = {start + m_base + qrow0, start + m_base + qrow0 + 8};
    const bool live[2] = {m_base + qrow0 < T, m_base + qrow0 + 8 < T};
    float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.0f, 0.0f};
    float o[OT][4];
#pragma unroll
    for (int n = 0; n < OT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    const int kmin = first_key(start + m_base, g.window);
    const int kmax = min(S, start + m_base + BM) - 1;  // inclusive
    for (int n_base = (kmin / BN) * BN; n_base <= kmax; n_base += BN) {
        __syncthreads();  // the previous tile is no longer read (and Q is written, on the first pass)
        for (int idx = threadIdx.x; idx < BN * (HD / 8); idx += blockDim.x) {
            const int r = idx / (HD / 8), c = (idx % (HD / 8)) * 8, key = n_base + r;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (key < S) {
                const size_t off = (key_slot(table, key) * g.n_kv_heads + kvh) * HD + c;
                kv = *reinterpret_cast<const uint4 *>(kc + off);
                vv = *reinterpret_cast<const uint4 *>(vc + off);
            }
            *reinterpret_cast<uint4 *>(Ks + r * LD + c) = kv;
            *reinterpret_cast<uint4 *>(Vs + r * LD + c) = vv;
        }
        __syncthreads();

        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            const __nv_bfloat16 *qa = Qs + qrow0 * LD + kk * 16 + tig * 2;
            const uint32_t a[4] = {*reinterpret_cast<const uint32_t *>(qa),
                                   *reinterpret_cast<const uint32_t *>(qa + 8 * LD),
                                   *reinterpret_cast<const uint32_t *>(qa + 8),
                                   *reinterpret_cast<const uint32_t *>(qa + 8 * LD + 8)};
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const __nv_bfloat16 *kb = Ks + (n * 8 + gid) * LD + kk * 16 + tig * 2;
                const uint32_t b[2] = {*reinterpret_cast<const uint32_t *>(kb),
                                       *reinterpret_cast<const uint32_t *>(kb + 8)};
                mma_bf16(s[n], a, b);
            }
        }

        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, key = n_base + n * 8 + tig * 2 + (e & 1);
                const bool ok = live[r] && key <= qpos[r] && key >= first_key(qpos[r], g.window);
                const float v = ok ? cap_score(s[n][e] * g.scale, g.softcap) : -INFINITY;
                s[n][e] = v;
                mx[r] = fmaxf(mx[r], v);
            }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float m_new = fmaxf(m_i[r], mx[r]);
            // A row with nothing visible yet keeps its state; exp(-inf - m) = 0 otherwise.
            corr[r] = m_new == -INFINITY ? 1.0f : expf(m_i[r] - m_new);
            m_i[r] = m_new;
        }
        float rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                const float p = m_i[r] == -INFINITY ? 0.0f : expf(s[n][e] - m_i[r]);
                s[n][e] = p;
                rs[r] += p;
            }
#pragma unroll
        for (int r = 0; r < 2; r++) l_i[r] = l_i[r] * corr[r] + rs[r];  // partial over this lane's columns
#pragma unroll
        for (int n = 0; n < OT; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        // O += P V: P's A fragments come straight from the score accumulators.
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                   pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const int krow = kk * 16 + tig * 2;
#pragma unroll
            for (int n = 0; n < OT; n++) {
                const int col = n * 8 + gid;
                const uint32_t b[2] = {pack_bits(Vs[krow * LD + col], Vs[(krow + 1) * LD + col]),
                                       pack_bits(Vs[(krow + 8) * LD + col], Vs[(krow + 9) * LD + col])};
                mma_bf16(o[n], a, b);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_i[r] += __shfl_xor_sync(0xffffffffu, l_i[r], 1);
        l_i[r] += __shfl_xor_sync(0xffffffffu, l_i[r], 2);
        if (!live[r]) continue;
        const int row = row0 + m_base + qrow0 + r * 8;  // in the step
        const float inv = 1.0f / l_i[r];
        __nv_bfloat16 *dst = out + ((size_t)row * g.n_heads + h) * HD;
#pragma unroll
        for (int n = 0; n < OT; n++) {
            const int col = n * 8 + tig * 2;
            *reinterpret_cast<__nv_bfloat162 *>(dst + col) =
                __floats2bfloat162_rn(o[n][r * 2] * inv, o[n][r * 2 + 1] * inv);
        }
        if (tig == 0) lse[(size_t)h * g.t + row] = m_i[r] + logf(l_i[r]);
    }
}

template <int HD, int BN>
int launch_prefill(cudaStream_t stream, const uint16_t *q, const uint16_t *kc, const uint16_t *vc,
                   const ScalpelAttn *g, const ScalpelSeqs *sq, uint16_t *out, float *lse) {
    constexpr int smem = prefill_smem<HD, BN>();
    // The opt-in above 48 KiB belongs to the context, not the process: set it at every launch
    // (a host-side attribute write, not stream work, so a recording may hold the launch), so a
    // context made after another was released still has it.
    cudaError_t e = cudaFuncSetAttribute(attn_prefill_kernel<HD, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return (int)e;
    if (g->n_heads > 65535) return SCALPEL_INVALID_ARGUMENT;  // grid y limit
    if (sq->n_tiles <= 0 || !sq->tiles || !sq->row0 || !sq->rows) return SCALPEL_INVALID_ARGUMENT;
    const dim3 grid(sq->n_tiles, g->n_heads);
    attn_prefill_kernel<HD, BN><<<grid, 128, smem, stream>>>(as_bf16(q), as_bf16(kc), as_bf16(vc), *g, *sq,
                                                             as_bf16(out), lse);
    return (int)cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// Probabilities for the attn_probs probe: p = exp(score − lse), one thread per (row, key).

__global__ void attn_probs_kernel(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kc,
                                  ScalpelAttn g, ScalpelSeqs sq, int seq, const float *__restrict__ lse,
                                  int s_len, float *__restrict__ out) {
    extern __shared__ float qsh[];
    const int i = blockIdx.x, row = sq.row0[seq] + i, h = blockIdx.y, hd = g.head_dim;
    const int kvh = h / (g.n_heads / g.n_kv_heads);
    const int pos = sq.pos[row];
    const int32_t *table = sq.pages + (size_t)seq * sq.max_pages;
    const size_t qoff = ((size_t)row * g.n_heads + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qsh[i] = __bfloat162float(q[qoff + i]);
    __syncthreads();
    const float l = lse[(size_t)h * g.t + row];
    const int first = first_key(pos, g.window);
    float *dst = out + ((size_t)h * gridDim.x + i) * s_len;
    for (int key = blockIdx.z * blockDim.x + threadIdx.x; key < s_len; key += gridDim.z * blockDim.x) {
        float p = 0.0f;
        if (key >= first && key <= pos) {
            const __nv_bfloat16 *k = kc + (key_slot(table, key) * g.n_kv_heads + kvh) * hd;
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot += qsh[d] * __bfloat162float(k[d]);
            p = expf(cap_score(dot * g.scale, g.softcap) - l);
        }
        dst[key] = p;
    }
}

bool valid(const ScalpelAttn *g, const ScalpelSeqs *sq) {
    return g && sq && sq->pos && sq->seq && sq->pages && sq->n_seqs > 0 && sq->max_pages > 0 && g->t > 0 && g->n_heads > 0 && g->n_kv_heads > 0 && g->n_heads % g->n_kv_heads == 0 &&
           g->head_dim > 0 && g->head_dim % 2 == 0 && g->head_dim <= 256 && g->capacity > 0 &&
           g->window >= 0 && g->scale > 0.0f;
}

}  // namespace

extern "C" int64_t scalpel_attention_workspace(const ScalpelAttn *g, const ScalpelSeqs *sq) {
    if (!valid(g, sq)) return 0;
    const int splits = row_splits(g, sq);
    return splits > 1 ? (int64_t)g->n_heads * g->t * splits * (g->head_dim + 2) : 0;
}

extern "C" int scalpel_attention_rows(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache,
                                      const uint16_t *v_cache, const ScalpelAttn *g, const ScalpelSeqs *sq,
                                      uint16_t *out, float *lse, float *workspace) {
    if (!valid(g, sq) || !q || !k_cache || !v_cache || !out || !lse) return SCALPEL_INVALID_ARGUMENT;
    switch ((g->head_dim + 31) / 32) {
        case 1: return launch_rows<1>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 2: return launch_rows<2>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 3: return launch_rows<3>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 4: return launch_rows<4>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 5: return launch_rows<5>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 6: return launch_rows<6>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 7: return launch_rows<7>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        case 8: return launch_rows<8>(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
        default: return SCALPEL_INVALID_ARGUMENT;
    }
}

extern "C" int scalpel_attention_prefill(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache,
                                         const uint16_t *v_cache, const ScalpelAttn *g, const ScalpelSeqs *sq,
                                         uint16_t *out, float *lse) {
    if (!valid(g, sq) || !q || !k_cache || !v_cache || !out || !lse) return SCALPEL_INVALID_ARGUMENT;
    switch (g->head_dim) {
        case 64: return launch_prefill<64, 64>(stream, q, k_cache, v_cache, g, sq, out, lse);
        case 128: return launch_prefill<128, 64>(stream, q, k_cache, v_cache, g, sq, out, lse);
        case 256: return launch_prefill<256, 32>(stream, q, k_cache, v_cache, g, sq, out, lse);
        default: return SCALPEL_INVALID_ARGUMENT;
    }
}

extern "C" int scalpel_attention(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache,
                                 const uint16_t *v_cache, const ScalpelAttn *g, const ScalpelSeqs *sq, uint16_t *out,
                                 float *lse, float *workspace) {
    if (!valid(g, sq)) return SCALPEL_INVALID_ARGUMENT;
    // Tensor cores where some sequence brings a prompt chunk of 16 rows or more (its tiles, and
    // the single rows beside it, each in a tile of its own); the row kernel otherwise.
    const bool tensor_cores = sq->max_rows >= 16 && sq->n_tiles > 0 &&
                              (g->head_dim == 64 || g->head_dim == 128 || g->head_dim == 256);
    return tensor_cores ? scalpel_attention_prefill(stream, q, k_cache, v_cache, g, sq, out, lse)
                        : scalpel_attention_rows(stream, q, k_cache, v_cache, g, sq, out, lse, workspace);
}

extern "C" int scalpel_attn_probs(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache,
                                  const ScalpelAttn *g, const ScalpelSeqs *sq, int seq, int n_rows, const float *lse,
                                  int s, float *out) {
    if (!valid(g, sq) || !q || !k_cache || !sq->row0 || !lse || !out || s <= 0 || seq < 0 || seq >= sq->n_seqs ||
        n_rows <= 0 || n_rows > g->t)
        return SCALPEL_INVALID_ARGUMENT;
    const int zb = (s + 127) / 128;
    if (g->n_heads > 65535) return SCALPEL_INVALID_ARGUMENT;  // grid y limit
    const dim3 grid(n_rows, g->n_heads, zb > 64 ? 64 : zb);
    attn_probs_kernel<<<grid, 128, g->head_dim * sizeof(float), stream>>>(as_bf16(q), as_bf16(k_cache), *g, *sq, seq,
                                                                           lse, s, out);
    return (int)cudaGetLastError();
}
