// The CUDA execution model on the CPU: what the mock device compiles the kernels of kernels/ with.
//
// build.rs compiles every kernels/*.cu as plain host C++ with this header force-included (after
// rewriting each `kernel<<<grid, block, smem, stream>>>(args)` into a call of mock::launch, each
// `__shared__` declaration into SCALPEL_MOCK_SHARED and each `extern __shared__` array into
// mock::dynamic_shared(): a macro cannot reach those). The kernels themselves are not changed:
// only the warp-level mma wrapper in attention.cu has a second body under SCALPEL_MOCK.
//
// The model (runtime.cpp implements it):
// - a launch is queued on its stream and runs when the stream is synchronized (the Rust side of
//   the mock device owns streams, copies, GEMMs and graphs);
// - the blocks of a launch run on a pool of OS threads, one block per thread at a time, in an
//   order the schedule picks (forward, reverse, seeded random);
// - a block's threads are fibers on one OS thread, scheduled cooperatively: a thread runs until it
//   reaches a barrier or a warp collective, which completes when every participant has arrived;
//   the order in which threads take turns is the schedule's too, so an ordering race shows up as a
//   wrong answer under some schedule;
// - static `__shared__` arrays live in thread_local storage of the worker (one block per worker
//   at a time: one copy per block) and, like dynamic shared memory, are filled with NaN bit
//   patterns when a block starts;
// - divergent barriers, collectives whose mask names exited or missing lanes, deadlocks, writes
//   past the dynamic shared memory and bad launch configurations are reported with the kernel
//   and the line, as a launch failure.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>

#define SCALPEL_MOCK 1

// ---------------------------------------------------------------------------------------------
// Qualifiers and attributes.

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
// The bound is read by the launch rewrite (it travels with each launch); nothing to do here.
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// Every __shared__ declaration must have been rewritten by build.rs: a leftover one fails here.
#define __shared__ __shared__declarations_must_be_rewritten_by_build_rs

// ---------------------------------------------------------------------------------------------
// Runtime types.

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct uint3 {
    unsigned x, y, z;
};

// Aligned as on the GPU, where a misaligned 16-byte access faults (the ASan script's UBSan checks it).
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

typedef struct CUstream_st *cudaStream_t;

// The codes the CUDA runtime returns for the failures the mock models.
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

// ---------------------------------------------------------------------------------------------
// bf16, as cuda_bf16.h defines it: the top 16 bits of an f32, rounded to nearest even.

struct __nv_bfloat16 {
    unsigned short __x;
};

struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

static inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = (uint32_t)h.__x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    // NaN becomes the canonical quiet NaN, as cvt.rn.bf16.f32 does.
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
    const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(unsigned short)((u + rounding) >> 16)};
}

static inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{__float2bfloat16(lo), __float2bfloat16(hi)};
}

// ---------------------------------------------------------------------------------------------
// Device math the kernels use that the host library lacks.

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

static inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

using std::isnan;

// CUDA's integer max/min are overloaded functions, not std::max's templates.
template <class T>
static inline T max(T a, T b) {
    return a < b ? b : a;
}
template <class T>
static inline T min(T a, T b) {
    return b < a ? b : a;
}

// ---------------------------------------------------------------------------------------------
// The mock runtime's interface to the kernels.

namespace mock {

// Where the running fiber's threadIdx lives (switched with the fiber), and the block's indices.
extern thread_local const uint3 *tls_thread_idx;
extern thread_local uint3 tls_block_idx, tls_block_dim, tls_grid_dim;

// A number that changes with every block a worker starts: shared arrays compare it to know when
// to fill themselves with poison again.
extern thread_local uint64_t tls_block_epoch;
// Static shared memory a block has declared so far (for the 48 KiB limit).
void note_static_shared(size_t bytes, const char *name);

void *dynamic_shared();

// Barriers and warp collectives: the calling fiber waits until every participant has arrived.
void barrier(int line);
int barrier_or(int line, int predicate);
int barrier_and(int line, int predicate);
int barrier_count(int line, int predicate);
void syncwarp(int line, unsigned mask);
uint64_t shfl(int line, int kind, unsigned mask, uint64_t value, int lane_arg, int width);
unsigned vote(int line, int kind, unsigned mask, int predicate);
void mma_m16n8k16_bf16(int line, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

enum ShflKind { SHFL_IDX = 0, SHFL_UP = 1, SHFL_DOWN = 2, SHFL_XOR = 3 };
enum VoteKind { VOTE_BALLOT = 0, VOTE_ANY = 1, VOTE_ALL = 2 };

template <class T>
static inline T shfl_as(int line, int kind, unsigned mask, T v, int lane_arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffle moves at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = shfl(line, kind, mask, bits, lane_arg, width);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

// A static __shared__ array: one per worker thread, so one per block, poisoned at block start.
template <class A>
struct SharedArray {
    alignas(16) A data;
    uint64_t epoch = 0;

    A &get(const char *name) {
        if (epoch != tls_block_epoch) {
            memset(static_cast<void *>(&data), 0xff, sizeof(A));
            epoch = tls_block_epoch;
            note_static_shared(sizeof(A), name);
        }
        return data;
    }
};

// ---------------------------------------------------------------------------------------------
// Launches.

struct LaunchConfig {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};

static inline LaunchConfig config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
    return LaunchConfig{grid, block, smem, stream};
}

// One launch's kernel and arguments, run once per thread of every block (and again on replay).
struct Work {
    const char *name;
    const char *file;
    int line;
    LaunchConfig cfg;
    virtual void run_thread() = 0;
    virtual ~Work() {}
};

template <class... P>
struct KernelWork final : Work {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> args;

    template <class... A>
    KernelWork(void (*k)(P...), A &&...a) : kernel(k), args(std::forward<A>(a)...) {}

    void run_thread() override {
        // Each thread gets its own copy of the arguments, as kernel parameters are on the GPU.
        std::tuple<std::decay_t<P>...> copy = args;
        std::apply(kernel, copy);
    }
};

// Checks the configuration as cudaLaunchKernel does (the error is what cudaGetLastError returns
// next) and queues the work on the stream.
void submit(Work *work, const void *kernel, unsigned max_threads, const LaunchConfig &cfg);

template <class... P, class... A>
static inline void launch(void (*kernel)(P...), const char *name, const char *file, int line, unsigned max_threads,
                          const LaunchConfig &cfg, A &&...args) {
    static_assert(sizeof...(P) == sizeof...(A), "a kernel launch with the wrong number of arguments");
    Work *w = new KernelWork<P...>(kernel, std::forward<A>(args)...);
    w->name = name;
    w->file = file;
    w->line = line;
    submit(w, reinterpret_cast<const void *>(kernel), max_threads, cfg);
}

cudaError_t func_set_attribute(const void *kernel, int attr, int value);
cudaError_t get_last_error();
const char *error_string(int code);

}  // namespace mock

// ---------------------------------------------------------------------------------------------
// The CUDA names.

#define threadIdx (*::mock::tls_thread_idx)
#define blockIdx (::mock::tls_block_idx)
#define blockDim (::mock::tls_block_dim)
#define gridDim (::mock::tls_grid_dim)

#define SCALPEL_MOCK_SHARED(T, name, dims)                          \
    static thread_local ::mock::SharedArray<T dims> name##_mock_shared; \
    T(&name) dims = name##_mock_shared.get(#name)

#define __syncthreads() ::mock::barrier(__LINE__)
#define __syncthreads_or(p) ::mock::barrier_or(__LINE__, (p))
#define __syncthreads_and(p) ::mock::barrier_and(__LINE__, (p))
#define __syncthreads_count(p) ::mock::barrier_count(__LINE__, (p))
#define __syncwarp(...) ::mock::syncwarp(__LINE__, ::mock::default_mask(__VA_ARGS__))
#define __shfl_sync(mask, v, lane, ...) \
    ::mock::shfl_as(__LINE__, ::mock::SHFL_IDX, (mask), (v), (lane), ::mock::default_width(__VA_ARGS__))
#define __shfl_up_sync(mask, v, delta, ...) \
    ::mock::shfl_as(__LINE__, ::mock::SHFL_UP, (mask), (v), (delta), ::mock::default_width(__VA_ARGS__))
#define __shfl_down_sync(mask, v, delta, ...) \
    ::mock::shfl_as(__LINE__, ::mock::SHFL_DOWN, (mask), (v), (delta), ::mock::default_width(__VA_ARGS__))
#define __shfl_xor_sync(mask, v, lane_mask, ...) \
    ::mock::shfl_as(__LINE__, ::mock::SHFL_XOR, (mask), (v), (lane_mask), ::mock::default_width(__VA_ARGS__))
#define __ballot_sync(mask, p) ::mock::vote(__LINE__, ::mock::VOTE_BALLOT, (mask), (p))
#define __any_sync(mask, p) ((int)::mock::vote(__LINE__, ::mock::VOTE_ANY, (mask), (p)))
#define __all_sync(mask, p) ((int)::mock::vote(__LINE__, ::mock::VOTE_ALL, (mask), (p)))

namespace mock {
static inline unsigned default_mask() { return 0xffffffffu; }
static inline unsigned default_mask(unsigned m) { return m; }
static inline int default_width() { return 32; }
static inline int default_width(int w) { return w; }
}  // namespace mock

// Atomics: blocks run on several OS threads, so global memory needs real ones.
template <class T>
static inline T atomicAdd(T *p, T v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline float atomicAdd(float *p, float v) {
    uint32_t *u = reinterpret_cast<uint32_t *>(p);
    uint32_t old = __atomic_load_n(u, __ATOMIC_RELAXED);
    for (;;) {
        const uint32_t next = __float_as_uint(__uint_as_float(old) + v);
        if (__atomic_compare_exchange_n(u, &old, next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return __uint_as_float(old);
    }
}
template <class T>
static inline T atomicMin(T *p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
static inline T atomicMax(T *p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
static inline T atomicExch(T *p, T v) {
    return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
template <class T>
static inline T atomicCAS(T *p, T compare, T v) {
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}

static inline cudaError_t cudaGetLastError() { return ::mock::get_last_error(); }
static inline const char *cudaGetErrorString(cudaError_t e) { return ::mock::error_string((int)e); }

// nvcc's kernel-pointer overload of cudaFuncSetAttribute.
template <class... P>
static inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
    return ::mock::func_set_attribute(reinterpret_cast<const void *>(kernel), (int)attr, value);
}
