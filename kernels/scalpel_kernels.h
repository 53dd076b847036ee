/* scalpel's kernels: the extern "C" launchers and their parameter structs.
 *
 * This header is the single source of truth for the host/device interface: build.rs hands it to
 * bindgen, so the Rust side calls exactly these signatures. It is plain C (no CUDA headers) so
 * bindgen needs only libclang.
 *
 * Conventions:
 * - bf16 buffers are passed as uint16_t pointers (the bits of __nv_bfloat16);
 * - every launcher checks its arguments, launches on the given stream, and returns the
 *   cudaError_t of the launch (cudaGetLastError) as an int: 0 means launched;
 * - shapes are row-major, rows are token positions.
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

/* out[t, :] = table[ids[t], :] * scale, for t < n. table is bf16 [vocab, d]; out is f32 [n, d].
 * Ids must be < vocab (checked on the host). */
int scalpel_embed(ScalpelStream stream, const uint16_t *table, const uint32_t *ids, int n, int d,
                  float scale, float *out);

#ifdef __cplusplus
}
#endif

#endif
