/* scalpel's kernels: the extern "C" launchers and their parameter structs.
 *
 * This header is the single source of truth for the host/device interface: build.rs hands it to
 * bindgen, so the Rust side calls exactly these signatures. It is plain C (no CUDA headers) so
 * bindgen needs only libclang.
 *
 * Conventions:
 * - bf16 buffers are passed as uint16_t pointers (the bits of __nv_bfloat16); buffers whose element
 *   type varies are `const void *` with a ScalpelDType beside them;
 * - every launcher checks its arguments, launches on the given stream, and returns the
 *   cudaError_t of the launch (cudaGetLastError) as an int: 0 means launched;
 * - shapes are row-major, rows are token positions;
 * - what changes from one decode step to the next (positions, page tables) is read from device
 *   memory (ScalpelSeqs), so a captured CUDA graph replays with new values.
 */
#ifndef SCALPEL_KERNELS_H
#define SCALPEL_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CUstream (driver API) and cudaStream_t (runtime API) are the same handle. */
typedef struct CUstream_st *ScalpelStream;

/* Returned when a launcher's arguments are inconsistent (cudaErrorInvalidValue). */
#define SCALPEL_INVALID_ARGUMENT 1

typedef enum ScalpelDType { SCALPEL_F32 = 0, SCALPEL_BF16 = 1 } ScalpelDType;

typedef enum ScalpelAct { SCALPEL_SILU = 0, SCALPEL_GELU_TANH = 1 } ScalpelAct;

/* Positions per page of the KV cache. A layer's cache is a pool of pages, each holding
 * SCALPEL_PAGE positions of [n_kv_heads, head_dim] keys (and values); a sequence's position p is
 * at slot pages[p / SCALPEL_PAGE] * SCALPEL_PAGE + p % SCALPEL_PAGE of the pool. */
#define SCALPEL_PAGE 16

/* Query rows per tile of the tensor-core prefill kernel: a tile never spans two sequences. */
#define SCALPEL_PREFILL_ROWS 64

/* The rows of one step and the sequences they belong to, as int32 arrays in device memory. A
 * sequence's rows are consecutive rows of the step at consecutive positions (a prompt chunk, or
 * one decode token), continuing what its pages already hold. */
typedef struct ScalpelSeqs {
    const int32_t *pos;   /* [t] each row's position in its own sequence */
    const int32_t *seq;   /* [t] each row's sequence, an index into the arrays below */
    const int32_t *row0;  /* [n_seqs] each sequence's first row */
    const int32_t *rows;  /* [n_seqs] each sequence's number of rows */
    const int32_t *pages; /* [n_seqs * max_pages] each sequence's page table */
    const int32_t *tiles; /* [2 * n_tiles] the prefill kernel's tiles: (sequence, first row in it) */
    int n_seqs;
    int max_pages;        /* page-table entries per sequence */
    int n_tiles;
    int max_rows;         /* the most rows any one sequence has in this step (host-side choice) */
} ScalpelSeqs;

/* The geometry of one attention call. */
typedef struct ScalpelAttn {
    int n_heads;      /* query heads */
    int n_kv_heads;   /* key/value heads (GQA: n_heads is a multiple) */
    int head_dim;     /* even, at most 256 */
    int t;            /* query rows (tokens of this step, all sequences) */
    int capacity;     /* positions the cache's pool holds (pages * SCALPEL_PAGE) */
    int window;       /* sliding window (keys in (p - window, p]); 0 = global */
    float scale;      /* multiplier of q.k */
    float softcap;    /* cap * tanh(x / cap) of the scaled scores; 0 = off */
} ScalpelAttn;

/* The error string of a cudaError_t (for messages). */
const char *scalpel_error_string(int code);

/* NVTX ranges, for Nsight Systems timelines (no-ops when no tool is attached, or when the kernels
 * were built without the NVTX headers). */
void scalpel_nvtx_push(const char *name);
void scalpel_nvtx_pop(void);
int scalpel_nvtx_enabled(void);

/* out[t, :] = table[ids[t], :] * scale, for t < n. table is bf16 [vocab, d]; out is f32 [n, d].
 * Ids must be < vocab (checked on the host, or produced by the sampler). */
int scalpel_embed(ScalpelStream stream, const uint16_t *table, const uint32_t *ids, int n, int d, float scale,
                  float *out);

/* RMSNorm of `groups` consecutive groups of `n` values of x (f32 or bf16): out (bf16) =
 * x / rms(x) * (w or 1 + w), w f32 [n]. */
int scalpel_rms_norm(ScalpelStream stream, const void *x, ScalpelDType x_dtype, const float *w, int groups, int n,
                     float eps, int one_plus, uint16_t *out);

/* x (f32, [rows, n]) += delta (f32 or bf16); out (bf16) = RMSNorm(x) with w: the residual add fused
 * with the next norm. */
int scalpel_add_rms_norm(ScalpelStream stream, float *x, const void *delta, ScalpelDType delta_dtype, const float *w,
                         int rows, int n, float eps, int one_plus, uint16_t *out);

/* out[i] = bf16(in[i]). */
int scalpel_cast_bf16(ScalpelStream stream, const float *in, uint16_t *out, int64_t n);

/* x[i] += y[i]; x f32, y f32 or bf16. */
int scalpel_add(ScalpelStream stream, float *x, const void *y, ScalpelDType y_dtype, int64_t n);

/* out (bf16) = act(gate) * up; gate, up f32 [n]. */
int scalpel_glu(ScalpelStream stream, const float *gate, const float *up, ScalpelAct act, uint16_t *out, int64_t n);

/* x = cap * tanh(x / cap), x f32. */
int scalpel_softcap(ScalpelStream stream, float *x, int64_t n, float cap);

/* Rotates q in place (f32 or bf16, [t, n_heads * head_dim]) at each row's position, and writes
 * k rotated and v ([t, n_kv_heads * head_dim], each f32 or bf16: Gemma's k comes out of a norm,
 * its v out of a product) into the layer's paged caches (bf16, [capacity, n_kv_heads, head_dim])
 * at each row's slot. inv_freq f32 [head_dim / 2]. Hugging Face's half-split layout. */
int scalpel_rope_kv(ScalpelStream stream, void *q, ScalpelDType q_dtype, const void *k, ScalpelDType k_dtype,
                    const void *v, ScalpelDType v_dtype, uint16_t *k_cache, uint16_t *v_cache,
                    const ScalpelAttn *geom, const ScalpelSeqs *seqs, const float *inv_freq);

/* Causal attention of q (bf16 [t, n_heads * head_dim]): each row over its own sequence's keys,
 * positions first_key .. its own, read through the sequence's page table: out bf16
 * [t, n_heads * head_dim], lse f32 [n_heads, t] (the log-sum-exp of each row's scaled scores).
 * Picks the tensor-core prefill kernel (head dims 64, 128, 256, a sequence of at least 16 rows)
 * or the row kernel, splitting the keys of steps of few rows (decode) into `workspace`
 * (scalpel_attention_workspace floats). */
int scalpel_attention(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                      const ScalpelAttn *geom, const ScalpelSeqs *seqs, uint16_t *out, float *lse,
                      float *workspace);

/* The workspace (in floats) scalpel_attention needs for this geometry. */
int64_t scalpel_attention_workspace(const ScalpelAttn *geom, const ScalpelSeqs *seqs);

/* The row kernel alone (every shape), so tests can hold both kernels against the CPU. */
int scalpel_attention_rows(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                           const ScalpelAttn *geom, const ScalpelSeqs *seqs, uint16_t *out, float *lse,
                           float *workspace);

/* The tensor-core prefill kernel alone (head dims 64, 128, 256), over seqs->n_tiles tiles of
 * 64 rows of one sequence each. */
int scalpel_attention_prefill(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache,
                              const uint16_t *v_cache, const ScalpelAttn *geom, const ScalpelSeqs *seqs,
                              uint16_t *out, float *lse);

/* Softmax probabilities [n_heads, rows of `seq`, s] that attention used for the rows of sequence
 * `seq`, recomputed from its lse: p = exp(score - lse) for visible keys, 0 for masked ones; s is
 * one past that sequence's last position (known to the host), n_rows its rows. */
int scalpel_attn_probs(ScalpelStream stream, const uint16_t *q, const uint16_t *k_cache, const ScalpelAttn *geom,
                       const ScalpelSeqs *seqs, int seq, int n_rows, const float *lse, int s, float *out);

/* x[rows[i], :] += scale * v for i < n_rows (rows == NULL: every row of x). x f32 or bf16
 * [?, n]; v f32 [n]; rows device int32. */
int scalpel_add_rows(ScalpelStream stream, void *x, ScalpelDType x_dtype, const float *v, float scale,
                     const int32_t *rows, int n_rows, int n);

/* x[row, :] = values (f32 [n]), x f32 or bf16. */
int scalpel_set_row(ScalpelStream stream, void *x, ScalpelDType x_dtype, const float *values, int row, int n);

/* x[r] -= (x[r] . u) u for the listed rows (NULL: every row), u f32 unit [n]. */
int scalpel_ablate_rows(ScalpelStream stream, void *x, ScalpelDType x_dtype, const float *u, const int32_t *rows,
                        int n_rows, int n);

/* out[r] = cos(table[r, :], v), table bf16 [rows, n], v f32 [n]. */
int scalpel_cosine_rows(ScalpelStream stream, const uint16_t *table, const float *v, int rows, int n, float *out);

/* The formats a weight matrix can stay in on the device, as its file stores them: GGUF's block
 * formats (values are the GGML type ids) and f16. Each row holds whole blocks; the kernels
 * dequantize to exactly the f32 values of the CPU's reference dequantizers (src/model/quant.rs). */
typedef enum ScalpelQType {
    SCALPEL_Q_F16 = 1,
    SCALPEL_Q4_0 = 2,
    SCALPEL_Q4_1 = 3,
    SCALPEL_Q5_0 = 6,
    SCALPEL_Q5_1 = 7,
    SCALPEL_Q8_0 = 8,
    SCALPEL_Q4_K = 12,
    SCALPEL_Q5_K = 13,
    SCALPEL_Q6_K = 14
} ScalpelQType;

/* out[t, r] = sum_c x[t, c] W[r, c] for t < m (1 <= m <= 8): decode's matrix products on the stored
 * format. W [rows, cols] in `type`, rows `row_bytes` apart; x f32 or bf16 [m, cols]; out f32
 * [m, rows]. One warp per row, each lane a group of 32 values at a time dequantized in registers,
 * f32 sums meeting in shared memory. Twin: qmatmul::matmul (src/backend/cpu/qmatmul). */
int scalpel_qmatvec(ScalpelStream stream, const uint8_t *w, ScalpelQType type, int rows, int cols, int row_bytes,
                    const void *x, ScalpelDType x_dtype, int m, float *out);

/* out (bf16 [n_rows, cols]) = rows first .. first + n_rows of W dequantized: a panel for cuBLAS in
 * prefill. Twin: qmatmul::dequantize_rows, rounded to bf16. */
int scalpel_qdequant_bf16(ScalpelStream stream, const uint8_t *w, ScalpelQType type, int cols, int row_bytes,
                          int first, int n_rows, uint16_t *out);

/* out[t, :] = W[ids[t], :] * scale (f32 [n, cols]): the embedding gather from a stored table.
 * Ids must be < the table's rows. Twin: Cpu::embed on a packed table. */
int scalpel_qembed(ScalpelStream stream, const uint8_t *w, ScalpelQType type, int cols, int row_bytes,
                   const uint32_t *ids, int n, float scale, float *out);

/* Sampling parameters, as the host sampler applies them (see src/sample.rs). */
typedef struct ScalpelSampling {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
} ScalpelSampling;

/* Picks one token from logits f32 [vocab] into *out: greedy (first maximum) at temperature 0,
 * otherwise the candidates that pass top-k, top-p and min-p (thresholds on the tempered logits,
 * ties kept), chosen by the uniform number u in [0, 1) walking their cumulative probability in
 * index order: the same rule as the host sampler. */
int scalpel_sample(ScalpelStream stream, const float *logits, int vocab, const ScalpelSampling *params, double u,
                   uint32_t *out);

#ifdef __cplusplus
}
#endif

#endif
