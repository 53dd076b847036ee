// The mock device's execution engine: runs the launches that mock_cuda.h queues, block by block on
// a pool of OS threads, each block's threads as cooperatively scheduled fibers. See mock_cuda.h for
// the model; the Rust side (src/backend/cuda/device/mock.rs) owns streams, memory and ordering and
// calls the scalpel_mock_* functions at the end of this file.
#include "mock_cuda.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SCALPEL_MOCK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCALPEL_MOCK_ASAN 1
#endif
#endif

#ifdef SCALPEL_MOCK_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace mock {

// Limits of the device the mock stands for (compute capability 9.0).
constexpr unsigned MAX_THREADS = 1024;
constexpr size_t DEFAULT_SHARED = 48 * 1024;
constexpr size_t MAX_SHARED_OPTIN = 227 * 1024;
// Fiber stacks: kernels use a few KiB at -O2 (16 KiB at -O0 or under ASan); a guard page below
// each turns an overflow into a crash at once rather than a corrupt neighbour.
constexpr size_t STACK_BYTES = 64 * 1024;
constexpr size_t REDZONE = 256;
constexpr unsigned char REDZONE_BYTE = 0xa5;

thread_local const uint3 *tls_thread_idx = nullptr;
thread_local uint3 tls_block_idx, tls_block_dim, tls_grid_dim;
thread_local uint64_t tls_block_epoch = 0;
static thread_local cudaError_t tls_last_error = cudaSuccess;

// ---------------------------------------------------------------------------------------------
// Fibers: a hand-written x86-64 switch of the callee-saved registers, a dozen instructions;
// ucontext elsewhere. MXCSR and the x87 control word are not switched: every fiber runs kernel
// code under the same floating-point environment, which nothing here changes.

#if defined(__x86_64__)
extern "C" void scalpel_mock_switch(void **save_sp, void *next_sp);
extern "C" void scalpel_mock_fiber_start();
asm(R"(
    .text
    .globl scalpel_mock_switch
    .type scalpel_mock_switch, @function
scalpel_mock_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size scalpel_mock_switch, .-scalpel_mock_switch

    .globl scalpel_mock_fiber_start
    .type scalpel_mock_fiber_start, @function
scalpel_mock_fiber_start:
    andq $-16, %rsp
    movq %r13, %rdi
    callq *%r12
    ud2
    .size scalpel_mock_fiber_start, .-scalpel_mock_fiber_start
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

struct Context {
#if defined(__x86_64__)
    void *sp = nullptr;
#else
    ucontext_t uc;
#endif
};

#if !defined(__x86_64__)
static void trampoline_ucontext(unsigned eh, unsigned el, unsigned ah, unsigned al) {
    auto entry = (void (*)(void *))(((uintptr_t)eh << 32) | el);
    entry((void *)(((uintptr_t)ah << 32) | al));
}
#endif

// Prepares `c` to run entry(arg) on the stack [lo, lo + size).
static void make_context(Context &c, char *lo, size_t size, void (*entry)(void *), void *arg) {
#ifdef SCALPEL_MOCK_ASAN
    // A fiber never returns from its first frames (it exits by switching away, or is abandoned by
    // a failure mid-kernel), so their redzones stay poisoned: the stack is fresh for its next one.
    __asan_unpoison_memory_region(lo, size);
#endif
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)(lo + size)) & ~(uintptr_t)15;
    uint64_t *s = reinterpret_cast<uint64_t *>(top);
    *--s = 0;                                               // padding: the start routine realigns
    *--s = (uint64_t)(uintptr_t)&scalpel_mock_fiber_start;  // where the first switch returns to
    *--s = 0;                                               // rbp
    *--s = 0;                                               // rbx
    *--s = (uint64_t)(uintptr_t)entry;                      // r12
    *--s = (uint64_t)(uintptr_t)arg;                        // r13
    *--s = 0;                                               // r14
    *--s = 0;                                               // r15
    c.sp = s;
#else
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = lo;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    // makecontext passes int arguments: split the pointer.
    const uintptr_t a = (uintptr_t)arg, e = (uintptr_t)entry;
    makecontext(&c.uc, (void (*)())trampoline_ucontext, 4, (unsigned)(e >> 32), (unsigned)e, (unsigned)(a >> 32),
                (unsigned)a);
#endif
}

static inline void switch_context(Context &from, Context &to) {
#if defined(__x86_64__)
    scalpel_mock_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

// ---------------------------------------------------------------------------------------------
// Per-block state.

enum class Wait : uint8_t { Ready, Barrier, Warp, Exited };

enum Collective : int { C_SHFL = 1, C_VOTE = 2, C_SYNCWARP = 3, C_MMA = 4 };
enum BarrierKind : int { B_PLAIN = 0, B_OR = 1, B_AND = 2, B_COUNT = 3 };

static const char *collective_name(int kind, int sub) {
    switch (kind) {
        case C_SHFL: {
            static const char *names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
            return names[sub & 3];
        }
        case C_VOTE: {
            static const char *names[] = {"__ballot_sync", "__any_sync", "__all_sync"};
            return names[sub % 3];
        }
        case C_SYNCWARP: return "__syncwarp";
        case C_MMA: return "mma.sync.m16n8k16";
        default: return "?";
    }
}

struct Thread {
    Context ctx;
    uint3 idx;
    unsigned linear = 0;
    Wait wait = Wait::Ready;
    int line = 0;
    // What it waits in (a barrier's kind, or a collective's kind and sub-kind).
    int kind = 0, sub = 0;
    int predicate = 0;
    unsigned mask = 0;
    uint64_t value = 0;
    int lane_arg = 0, width = 32;
    uint64_t result = 0;
    uint32_t a[4] = {}, b[2] = {};
    float c[4] = {};
    char *stack = nullptr;
#ifdef SCALPEL_MOCK_ASAN
    void *fake_stack = nullptr;
#endif
};

enum Schedule : int { FORWARD = 0, REVERSE = 1, RANDOM = 2 };

struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    unsigned below(unsigned n) { return (unsigned)(next() % n); }
};

struct Launch;

// One OS thread's machinery for running blocks: fiber stacks (kept from block to block), the
// dynamic shared memory, and the block being run.
struct Worker {
    std::vector<Thread> threads;
    // Per warp: the lanes waiting in a collective (any), so completion is checked in O(1).
    std::vector<uint32_t> waiting;
    // Per warp: the lanes that have exited.
    std::vector<uint32_t> gone;
    std::vector<char *> stacks;
    std::vector<unsigned char> dynamic;
    Context scheduler;
#ifdef SCALPEL_MOCK_ASAN
    // The scheduler's stack, as ASan needs it named when a fiber switches back to it.
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
#endif
    Thread *current = nullptr;
    const Launch *launch = nullptr;
    unsigned n = 0, exited = 0, at_barrier = 0;
    size_t static_shared = 0;
    bool failed = false;
    std::string error;
    std::vector<unsigned> order;
    Rng rng{0};

    ~Worker() {
        for (char *s : stacks) munmap(s - page(), STACK_BYTES + page());
    }

    static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

    char *stack(unsigned i) {
        while (stacks.size() <= i) {
            const size_t pg = page();
            void *p = mmap(nullptr, STACK_BYTES + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return nullptr;
            mprotect(p, pg, PROT_NONE);
            stacks.push_back(static_cast<char *>(p) + pg);
        }
        return stacks[i];
    }
};

static thread_local Worker *tls_worker = nullptr;

static Worker &worker() {
    if (!tls_worker) {
        // Freed at thread exit.
        static thread_local std::unique_ptr<Worker> owned(new Worker());
        tls_worker = owned.get();
    }
    return *tls_worker;
}

// ---------------------------------------------------------------------------------------------
// One execution of a queued launch.

struct Launch {
    Work *work;
    LaunchConfig cfg;
    int schedule;
    uint64_t seed;
    uint64_t blocks;
    std::vector<uint32_t> permutation;  // the random block order
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string message;
    int code = cudaSuccess;

    uint64_t block_at(uint64_t i) const {
        switch (schedule) {
            case REVERSE: return blocks - 1 - i;
            case RANDOM: return permutation[i];
            default: return i;
        }
    }

    void fail(int c, const std::string &m) {
        std::lock_guard<std::mutex> g(mu);
        if (!failed.exchange(true)) {
            code = c;
            message = m;
        }
    }
};

static std::string where(const Launch &l, const Worker &w, const Thread *t, int line) {
    char buf[256];
    if (t)
        snprintf(buf, sizeof buf, "kernel %s (launched at %s:%d), block (%u,%u,%u), thread (%u,%u,%u), line %d",
                 l.work->name, l.work->file, l.work->line, tls_block_idx.x, tls_block_idx.y, tls_block_idx.z,
                 t->idx.x, t->idx.y, t->idx.z, line);
    else
        snprintf(buf, sizeof buf, "kernel %s (launched at %s:%d), block (%u,%u,%u)", l.work->name, l.work->file,
                 l.work->line, tls_block_idx.x, tls_block_idx.y, tls_block_idx.z);
    (void)w;
    return buf;
}

// Stops the block with an error; called on a fiber, it never returns.
[[noreturn]] static void fail_here(Worker &w, const std::string &message) {
    w.failed = true;
    w.error = message;
    Thread *t = w.current;
#ifdef SCALPEL_MOCK_ASAN
    __sanitizer_start_switch_fiber(nullptr, w.sched_bottom, w.sched_size);
#endif
    switch_context(t->ctx, w.scheduler);
    __builtin_trap();  // an abandoned fiber is never resumed
}

// The fiber of one thread.
static void fiber_main(void *arg) {
    Thread *t = static_cast<Thread *>(arg);
    Worker &w = worker();
#ifdef SCALPEL_MOCK_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w.sched_bottom, &w.sched_size);
#endif
    w.launch->work->run_thread();
    t->wait = Wait::Exited;
    w.exited++;
    w.gone[t->linear / 32] |= 1u << (t->linear % 32);
    // Threads still waiting may now be complete, or stuck: the scheduler decides.
#ifdef SCALPEL_MOCK_ASAN
    __sanitizer_start_switch_fiber(nullptr, w.sched_bottom, w.sched_size);  // this fiber's stack dies with it
#endif
    switch_context(t->ctx, w.scheduler);
    __builtin_trap();
}

static inline void resume(Worker &w, Thread &t) {
    w.current = &t;
    tls_thread_idx = &t.idx;
#ifdef SCALPEL_MOCK_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, t.stack, STACK_BYTES);
#endif
    switch_context(w.scheduler, t.ctx);
#ifdef SCALPEL_MOCK_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    w.current = nullptr;
}

// Gives control back to the scheduler until this thread is released.
static inline void block_here(Worker &w, Thread &t) {
#ifdef SCALPEL_MOCK_ASAN
    __sanitizer_start_switch_fiber(&t.fake_stack, w.sched_bottom, w.sched_size);
#endif
    switch_context(t.ctx, w.scheduler);
#ifdef SCALPEL_MOCK_ASAN
    __sanitizer_finish_switch_fiber(t.fake_stack, &w.sched_bottom, &w.sched_size);
#endif
}

static unsigned lanes_in_warp(const Worker &w, unsigned warp) {
    const unsigned first = warp * 32;
    return w.n - first < 32 ? w.n - first : 32;
}

// ---------------------------------------------------------------------------------------------
// Barriers.

// Releases the block barrier when every live thread waits at it. Divergence is an error: threads
// waiting at different lines, or some threads gone while the others wait.
static void try_release_barrier(Worker &w) {
    if (w.at_barrier == 0 || w.at_barrier + w.exited < w.n) return;
    const Launch &l = *w.launch;
    int line = -1;
    for (unsigned i = 0; i < w.n; i++) {
        Thread &t = w.threads[i];
        if (t.wait != Wait::Barrier) continue;
        if (line < 0) line = t.line;
        if (t.line != line) {
            w.failed = true;
            w.error = "divergent __syncthreads in " + where(l, w, nullptr, line) + ": threads wait at lines " +
                      std::to_string(line) + " and " + std::to_string(t.line);
            return;
        }
    }
    if (w.exited > 0) {
        w.failed = true;
        w.error = "divergent __syncthreads in " + where(l, w, nullptr, line) + ": " + std::to_string(w.at_barrier) +
                  " threads wait at line " + std::to_string(line) + " but " + std::to_string(w.exited) +
                  " threads of the block have exited";
        return;
    }
    int any = 0, all = 1, count = 0;
    for (unsigned i = 0; i < w.n; i++) {
        const int p = w.threads[i].predicate != 0;
        any |= p;
        all &= p;
        count += p;
    }
    for (unsigned i = 0; i < w.n; i++) {
        Thread &t = w.threads[i];
        t.result = t.kind == B_OR ? any : t.kind == B_AND ? all : t.kind == B_COUNT ? count : 0;
        t.wait = Wait::Ready;
    }
    w.at_barrier = 0;
}

static int barrier_kind(int line, int kind, int predicate) {
    Worker &w = worker();
    Thread &t = *w.current;
    t.wait = Wait::Barrier;
    t.line = line;
    t.kind = kind;
    t.predicate = predicate;
    w.at_barrier++;
    try_release_barrier(w);
    if (w.failed) fail_here(w, w.error);
    if (t.wait != Wait::Ready) block_here(w, t);
    return (int)t.result;
}

void barrier(int line) { barrier_kind(line, B_PLAIN, 0); }
int barrier_or(int line, int p) { return barrier_kind(line, B_OR, p); }
int barrier_and(int line, int p) { return barrier_kind(line, B_AND, p); }
int barrier_count(int line, int p) { return barrier_kind(line, B_COUNT, p); }

// ---------------------------------------------------------------------------------------------
// Warp collectives.

static void complete_mma(Worker &w, unsigned first) {
    float A[16][16], B[16][8], C[16][8];
    auto lo = [](uint32_t r) { return __bfloat162float(__nv_bfloat16{(unsigned short)(r & 0xffff)}); };
    auto hi = [](uint32_t r) { return __bfloat162float(__nv_bfloat16{(unsigned short)(r >> 16)}); };
    // Fragment layouts of mma.m16n8k16 with .bf16 inputs and .f32 accumulators (PTX ISA, "Matrix
    // Fragments for mma.m16n8k16"): groupID = lane / 4, threadID_in_group = lane % 4.
    for (unsigned lane = 0; lane < 32; lane++) {
        const Thread &t = w.threads[first + lane];
        const unsigned g = lane >> 2, c = (lane & 3) * 2;
        A[g][c] = lo(t.a[0]);
        A[g][c + 1] = hi(t.a[0]);
        A[g + 8][c] = lo(t.a[1]);
        A[g + 8][c + 1] = hi(t.a[1]);
        A[g][c + 8] = lo(t.a[2]);
        A[g][c + 9] = hi(t.a[2]);
        A[g + 8][c + 8] = lo(t.a[3]);
        A[g + 8][c + 9] = hi(t.a[3]);
        B[c][g] = lo(t.b[0]);
        B[c + 1][g] = hi(t.b[0]);
        B[c + 8][g] = lo(t.b[1]);
        B[c + 9][g] = hi(t.b[1]);
        C[g][c] = t.c[0];
        C[g][c + 1] = t.c[1];
        C[g + 8][c] = t.c[2];
        C[g + 8][c + 1] = t.c[3];
    }
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            // bf16 products are exact in f32; the sum is f32, as on the tensor cores (whose
            // internal order differs: the last bits may too).
            float s = 0.0f;
            for (int k = 0; k < 16; k++) s += A[i][k] * B[k][j];
            D[i][j] = s + C[i][j];
        }
    for (unsigned lane = 0; lane < 32; lane++) {
        Thread &t = w.threads[first + lane];
        const unsigned g = lane >> 2, c = (lane & 3) * 2;
        t.c[0] = D[g][c];
        t.c[1] = D[g][c + 1];
        t.c[2] = D[g + 8][c];
        t.c[3] = D[g + 8][c + 1];
    }
}

// Completes the collective `t` waits in when every lane of its mask has arrived; reports a
// mismatch (another collective, another mask, a lane outside the mask) as an error.
static void try_complete_warp(Worker &w, Thread &t) {
    const unsigned warp = t.linear / 32, first = warp * 32;
    const Launch &l = *w.launch;
    if ((w.waiting[warp] & t.mask) != t.mask) return;  // not everyone is here yet
    for (unsigned lane = 0; lane < 32; lane++) {
        if (!(t.mask >> lane & 1)) continue;
        const Thread &o = w.threads[first + lane];
        if (o.wait != Wait::Warp) return;  // not everyone is here yet
        if (o.kind != t.kind || o.sub != t.sub || o.mask != t.mask) {
            w.failed = true;
            w.error = std::string("divergent warp collective in ") + where(l, w, &t, t.line) + ": " +
                      collective_name(t.kind, t.sub) + " with mask " + std::to_string(t.mask) + " meets " +
                      collective_name(o.kind, o.sub) + " with mask " + std::to_string(o.mask) + " of lane " +
                      std::to_string(lane) + " at line " + std::to_string(o.line);
            return;
        }
    }
    const unsigned mask = t.mask;
    if (t.kind == C_SHFL) {
        for (unsigned lane = 0; lane < 32; lane++) {
            if (!(mask >> lane & 1)) continue;
            Thread &o = w.threads[first + lane];
            const int width = o.width;
            const int seg = (int)lane / width * width;
            int src;
            switch (o.sub) {
                case SHFL_IDX: src = seg + ((o.lane_arg % width) + width) % width; break;
                case SHFL_UP: src = (int)lane - o.lane_arg < seg ? (int)lane : (int)lane - o.lane_arg; break;
                case SHFL_DOWN: src = (int)lane + o.lane_arg >= seg + width ? (int)lane : (int)lane + o.lane_arg; break;
                default: src = (int)lane ^ o.lane_arg; if (src >= seg + width) src = (int)lane; break;
            }
            if (src < 0 || src >= 32 || !(mask >> src & 1)) {
                w.failed = true;
                w.error = std::string("in ") + where(l, w, &o, o.line) + ": " + collective_name(o.kind, o.sub) +
                          " of lane " + std::to_string(lane) + " reads lane " + std::to_string(src) +
                          ", which is not in its mask " + std::to_string(mask);
                return;
            }
            o.result = w.threads[first + src].value;
        }
    } else if (t.kind == C_VOTE) {
        unsigned ballot = 0;
        for (unsigned lane = 0; lane < 32; lane++)
            if ((mask >> lane & 1) && w.threads[first + lane].predicate) ballot |= 1u << lane;
        const uint64_t r = t.sub == VOTE_BALLOT ? ballot : t.sub == VOTE_ANY ? ballot != 0 : ballot == mask;
        for (unsigned lane = 0; lane < 32; lane++)
            if (mask >> lane & 1) w.threads[first + lane].result = r;
    } else if (t.kind == C_MMA) {
        complete_mma(w, first);
    }
    for (unsigned lane = 0; lane < 32; lane++)
        if (mask >> lane & 1) w.threads[first + lane].wait = Wait::Ready;
    w.waiting[warp] &= ~mask;
}

// A thread arrives at a warp collective: checks the mask, waits for the others.
static Thread &arrive(int line, int kind, int sub, unsigned mask) {
    Worker &w = worker();
    Thread &t = *w.current;
    const Launch &l = *w.launch;
    const unsigned lane = t.linear % 32, warp = t.linear / 32;
    const unsigned present = lanes_in_warp(w, warp);
    const unsigned exists = present == 32 ? 0xffffffffu : (1u << present) - 1;
    if (!(mask >> lane & 1))
        fail_here(w, std::string("in ") + where(l, w, &t, line) + ": " + collective_name(kind, sub) + " with mask " +
                         std::to_string(mask) + " called by lane " + std::to_string(lane) + ", which the mask leaves out");
    if (mask & ~exists)
        fail_here(w, std::string("in ") + where(l, w, &t, line) + ": " + collective_name(kind, sub) + " with mask " +
                         std::to_string(mask) + " names lanes that do not exist (the block has " +
                         std::to_string(w.n) + " threads)");
    if (kind == C_MMA && mask != 0xffffffffu)
        fail_here(w, std::string("in ") + where(l, w, &t, line) + ": mma.sync needs the whole warp");
    if (w.gone[warp] & mask)
        fail_here(w, std::string("in ") + where(l, w, &t, line) + ": " + collective_name(kind, sub) +
                         " with mask " + std::to_string(mask) + " names lane " +
                         std::to_string(__builtin_ctz(w.gone[warp] & mask)) + ", which has exited");
    t.wait = Wait::Warp;
    t.line = line;
    t.kind = kind;
    t.sub = sub;
    t.mask = mask;
    w.waiting[warp] |= 1u << lane;
    try_complete_warp(w, t);
    if (w.failed) fail_here(w, w.error);
    if (t.wait != Wait::Ready) block_here(w, t);
    return t;
}

uint64_t shfl(int line, int kind, unsigned mask, uint64_t value, int lane_arg, int width) {
    Worker &w = worker();
    Thread &me = *w.current;
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fail_here(w, std::string("in ") + where(*w.launch, w, &me, line) + ": shuffle width " +
                         std::to_string(width) + " is not a power of two up to 32");
    me.value = value;
    me.lane_arg = lane_arg;
    me.width = width;
    return arrive(line, C_SHFL, kind, mask).result;
}

unsigned vote(int line, int kind, unsigned mask, int predicate) {
    Thread &me = *worker().current;
    me.predicate = predicate;
    return (unsigned)arrive(line, C_VOTE, kind, mask).result;
}

void syncwarp(int line, unsigned mask) { arrive(line, C_SYNCWARP, 0, mask); }

void mma_m16n8k16_bf16(int line, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    Thread &me = *worker().current;
    memcpy(me.a, a, sizeof me.a);
    memcpy(me.b, b, sizeof me.b);
    memcpy(me.c, d, sizeof me.c);
    Thread &t = arrive(line, C_MMA, 0, 0xffffffffu);
    memcpy(d, t.c, sizeof t.c);
}

// ---------------------------------------------------------------------------------------------
// Shared memory.

void *dynamic_shared() {
    Worker &w = worker();
    return w.launch->cfg.smem ? w.dynamic.data() : nullptr;
}

void note_static_shared(size_t bytes, const char *name) {
    Worker &w = worker();
    w.static_shared += bytes;
    if (w.static_shared > DEFAULT_SHARED && w.current)
        fail_here(w, std::string("in ") + where(*w.launch, w, w.current, 0) + ": static shared memory (" +
                         std::to_string(w.static_shared) + " bytes with " + name + ") exceeds 48 KiB");
}

// ---------------------------------------------------------------------------------------------
// Running a block.

static void run_block(Worker &w, const Launch &l, uint64_t linear_block) {
    const dim3 g = l.cfg.grid, b = l.cfg.block;
    tls_grid_dim = uint3{g.x, g.y, g.z};
    tls_block_dim = uint3{b.x, b.y, b.z};
    tls_block_idx = uint3{(unsigned)(linear_block % g.x), (unsigned)(linear_block / g.x % g.y),
                          (unsigned)(linear_block / ((uint64_t)g.x * g.y))};
    tls_block_epoch++;
    w.launch = &l;
    w.n = b.x * b.y * b.z;
    w.exited = 0;
    w.at_barrier = 0;
    w.static_shared = 0;
    w.failed = false;
    w.error.clear();
    // Dynamic shared memory: NaN bit patterns, then a redzone that must survive the block.
    w.dynamic.assign(l.cfg.smem + REDZONE, 0xff);
    memset(w.dynamic.data() + l.cfg.smem, REDZONE_BYTE, REDZONE);
    if (w.threads.size() < w.n) w.threads.resize(w.n);
    w.waiting.assign((w.n + 31) / 32, 0);
    w.gone.assign((w.n + 31) / 32, 0);
    for (unsigned i = 0; i < w.n; i++) {
        // Only what a thread reads before it writes: the rest is set at each arrival.
        Thread &t = w.threads[i];
        t.wait = Wait::Ready;
        t.linear = i;
        t.idx = uint3{i % b.x, i / b.x % b.y, i / (b.x * b.y)};
        t.stack = w.stack(i);
        if (!t.stack) {
            w.failed = true;
            w.error = "the mock device could not map fiber stacks (out of memory)";
            return;
        }
#ifdef SCALPEL_MOCK_ASAN
        t.fake_stack = nullptr;
#endif
        // Stacks 64 KiB apart put every fiber's hot frames in the same cache sets: a stagger of
        // a few cache lines per fiber spreads them.
        make_context(t.ctx, t.stack, STACK_BYTES - (i % 64) * 192, fiber_main, &t);
    }
    w.rng = Rng{l.seed ^ (linear_block * 0x2545f4914f6cdd1dull)};
    w.order.resize(w.n);
    // Runs thread t until it waits or exits; false when the block failed.
    auto step = [&](Thread &t) {
        resume(w, t);
        if (w.failed) return false;
        // An exit can complete a barrier the others wait at (or make it divergent), and strands
        // any collective whose mask names the lane that left.
        if (t.wait == Wait::Exited) {
            const unsigned warp = t.linear / 32, lane = t.linear % 32;
            for (uint32_t waiting = w.waiting[warp]; waiting; waiting &= waiting - 1) {
                const Thread &o = w.threads[warp * 32 + __builtin_ctz(waiting)];
                if (o.mask >> lane & 1) {
                    w.failed = true;
                    w.error = std::string("in ") + where(l, w, &o, o.line) + ": " + collective_name(o.kind, o.sub) +
                              " with mask " + std::to_string(o.mask) + " names lane " + std::to_string(lane) +
                              ", which has exited";
                    return false;
                }
            }
            try_release_barrier(w);
            if (w.failed) return false;
        }
        return true;
    };
    const unsigned warps = (w.n + 31) / 32;
    while (w.exited < w.n) {
        bool ran = false;
        if (l.schedule == RANDOM) {
            // Whole warps in a random order, each run as far as it can go (to a barrier, its
            // exit, or a collective some lane never joins) before the next starts: warps drift as
            // far apart as a GPU lets them, which is where a missing barrier shows. Lanes take
            // turns from a random one.
            for (unsigned i = 0; i < warps; i++) w.order[i] = i;
            for (unsigned i = warps - 1; i > 0; i--) std::swap(w.order[i], w.order[w.rng.below(i + 1)]);
            for (unsigned k = 0; k < warps; k++) {
                const unsigned base = w.order[k] * 32, lanes = std::min(32u, w.n - base);
                for (bool again = true; again;) {
                    again = false;
                    const unsigned rot = w.rng.below(lanes);
                    for (unsigned j = 0; j < lanes; j++) {
                        Thread &t = w.threads[base + (j + rot) % lanes];
                        if (t.wait != Wait::Ready) continue;
                        if (!step(t)) return;
                        ran = again = true;
                    }
                }
            }
        } else {
            for (unsigned k = 0; k < w.n; k++) {
                Thread &t = w.threads[l.schedule == REVERSE ? w.n - 1 - k : k];
                if (t.wait != Wait::Ready) continue;
                if (!step(t)) return;
                ran = true;
            }
        }
        if (!ran && w.exited < w.n) {
            // Nothing can run: name where everyone waits.
            std::map<std::string, unsigned> sites;
            for (unsigned i = 0; i < w.n; i++) {
                const Thread &t = w.threads[i];
                if (t.wait == Wait::Barrier)
                    sites["__syncthreads at line " + std::to_string(t.line)]++;
                else if (t.wait == Wait::Warp)
                    sites[std::string(collective_name(t.kind, t.sub)) + " at line " + std::to_string(t.line)]++;
            }
            std::string s = "deadlock in " + where(l, w, nullptr, 0) + ":";
            for (auto &kv : sites) s += " " + std::to_string(kv.second) + " threads wait in " + kv.first + ";";
            s += " " + std::to_string(w.exited) + " have exited";
            w.failed = true;
            w.error = s;
            return;
        }
    }
    for (size_t i = 0; i < REDZONE; i++)
        if (w.dynamic[l.cfg.smem + i] != REDZONE_BYTE) {
            w.failed = true;
            w.error = "in " + where(l, w, nullptr, 0) + ": a write past the end of the " +
                      std::to_string(l.cfg.smem) + " bytes of dynamic shared memory (at byte " +
                      std::to_string(l.cfg.smem + i) + ")";
            return;
        }
}

static void work_on(Launch &l) {
    Worker &w = worker();
    for (;;) {
        if (l.failed.load(std::memory_order_relaxed)) return;
        const uint64_t i = l.next.fetch_add(1);
        if (i >= l.blocks) return;
        run_block(w, l, l.block_at(i));
        if (w.failed) {
            l.fail(cudaErrorLaunchFailure, w.error);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The pool: launches run one at a time; the calling thread works too.

class Pool {
   public:
    void run(Launch &l, int threads) {
        std::lock_guard<std::mutex> one_at_a_time(run_mu_);
        const int helpers = threads > 1 ? threads - 1 : 0;
        {
            std::unique_lock<std::mutex> g(mu_);
            while ((int)workers_.size() < helpers) {
                const int index = (int)workers_.size();
                workers_.emplace_back([this, index] { loop(index); });
            }
            job_ = &l;
            participants_ = helpers;
            active_ = helpers;
            generation_++;
        }
        cv_.notify_all();
        work_on(l);
        std::unique_lock<std::mutex> g(mu_);
        done_.wait(g, [this] { return active_ == 0; });
        job_ = nullptr;
    }

   private:
    void loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            Launch *job;
            {
                std::unique_lock<std::mutex> g(mu_);
                cv_.wait(g, [&] { return generation_ != seen; });
                seen = generation_;
                if (index >= participants_) continue;
                job = job_;
            }
            work_on(*job);
            std::lock_guard<std::mutex> g(mu_);
            if (--active_ == 0) done_.notify_all();
        }
    }

    std::mutex run_mu_, mu_;
    std::condition_variable cv_, done_;
    std::vector<std::thread> workers_;
    Launch *job_ = nullptr;
    int participants_ = 0, active_ = 0;
    uint64_t generation_ = 0;
};

// Leaked on purpose: worker threads outlive static destructors at process exit.
static Pool &pool() {
    static Pool *p = new Pool();
    return *p;
}

// ---------------------------------------------------------------------------------------------
// Launch checks, attributes, errors.

// A stream of the mock device: launches wait here until the Rust side takes them, in order.
struct Stream {
    std::mutex mu;
    std::vector<Work *> pending;
};

static std::mutex attr_mu;
static std::map<const void *, size_t> &max_dynamic_shared() {
    static std::map<const void *, size_t> m;
    return m;
}

cudaError_t func_set_attribute(const void *kernel, int attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > MAX_SHARED_OPTIN)
        return cudaErrorInvalidValue;
    std::lock_guard<std::mutex> g(attr_mu);
    max_dynamic_shared()[kernel] = (size_t)value;
    return cudaSuccess;
}

static void set_error(cudaError_t e, Work *w, const std::string &why) {
    tls_last_error = e;
    fprintf(stderr, "mock GPU: launch of %s (%s:%d) refused: %s\n", w->name, w->file, w->line, why.c_str());
    delete w;
}

void submit(Work *w, const void *kernel, unsigned max_threads, const LaunchConfig &c) {
    const uint64_t threads = (uint64_t)c.block.x * c.block.y * c.block.z;
    if (c.block.x == 0 || c.block.y == 0 || c.block.z == 0 || c.block.x > 1024 || c.block.y > 1024 ||
        c.block.z > 64 || threads > MAX_THREADS)
        return set_error(cudaErrorInvalidConfiguration, w, "block (" + std::to_string(c.block.x) + "," +
                                                               std::to_string(c.block.y) + "," +
                                                               std::to_string(c.block.z) + ") is not a valid block");
    if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7fffffffu || c.grid.y > 65535 ||
        c.grid.z > 65535)
        return set_error(cudaErrorInvalidConfiguration, w, "grid (" + std::to_string(c.grid.x) + "," +
                                                               std::to_string(c.grid.y) + "," +
                                                               std::to_string(c.grid.z) + ") is not a valid grid");
    if (max_threads && threads > max_threads)
        return set_error(cudaErrorLaunchOutOfResources, w,
                         std::to_string(threads) + " threads per block, above its __launch_bounds__ of " +
                             std::to_string(max_threads));
    size_t limit = DEFAULT_SHARED;
    {
        std::lock_guard<std::mutex> g(attr_mu);
        auto it = max_dynamic_shared().find(kernel);
        if (it != max_dynamic_shared().end()) limit = it->second > limit ? it->second : limit;
    }
    if (c.smem > limit)
        return set_error(cudaErrorInvalidValue, w,
                         std::to_string(c.smem) + " bytes of dynamic shared memory, above the kernel's limit of " +
                             std::to_string(limit) + " (cudaFuncAttributeMaxDynamicSharedMemorySize opts in to more)");
    if (!c.stream) return set_error(cudaErrorInvalidResourceHandle, w, "no stream (the mock has no default stream)");
    w->cfg = c;
    Stream *s = reinterpret_cast<Stream *>(c.stream);
    std::lock_guard<std::mutex> g(s->mu);
    s->pending.push_back(w);
}

cudaError_t get_last_error() {
    const cudaError_t e = tls_last_error;
    tls_last_error = cudaSuccess;
    return e;
}

const char *error_string(int code) {
    switch (code) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        default: return "unknown error";
    }
}

}  // namespace mock

// ---------------------------------------------------------------------------------------------
// The C interface the Rust side of the mock device calls.

extern "C" {

void *scalpel_mock_stream_create(void) { return new mock::Stream(); }

void scalpel_mock_stream_destroy(void *stream) {
    mock::Stream *s = static_cast<mock::Stream *>(stream);
    for (mock::Work *w : s->pending) delete w;
    delete s;
}

// Moves up to `cap` launches queued on the stream into `out`, oldest first; returns how many.
size_t scalpel_mock_stream_take(void *stream, void **out, size_t cap) {
    mock::Stream *s = static_cast<mock::Stream *>(stream);
    std::lock_guard<std::mutex> g(s->mu);
    const size_t n = s->pending.size() < cap ? s->pending.size() : cap;
    for (size_t i = 0; i < n; i++) out[i] = s->pending[i];
    s->pending.erase(s->pending.begin(), s->pending.begin() + n);
    return n;
}

const char *scalpel_mock_work_name(const void *work) { return static_cast<const mock::Work *>(work)->name; }
const char *scalpel_mock_work_file(const void *work) { return static_cast<const mock::Work *>(work)->file; }
int scalpel_mock_work_line(const void *work) { return static_cast<const mock::Work *>(work)->line; }

void scalpel_mock_work_free(void *work) { delete static_cast<mock::Work *>(work); }

// Runs every block of a launch (again, for a replayed graph); returns 0, or the cudaError_t of
// the failure with its description in `message`.
int scalpel_mock_work_run(void *work, int schedule, uint64_t seed, int threads, char *message, size_t message_len) {
    mock::Work *w = static_cast<mock::Work *>(work);
    mock::Launch l;
    l.work = w;
    l.cfg = w->cfg;
    l.schedule = schedule;
    l.seed = seed;
    l.blocks = (uint64_t)w->cfg.grid.x * w->cfg.grid.y * w->cfg.grid.z;
    if (schedule == mock::RANDOM) {
        l.permutation.resize(l.blocks);
        for (uint64_t i = 0; i < l.blocks; i++) l.permutation[i] = (uint32_t)i;
        mock::Rng rng{seed};
        for (uint64_t i = l.blocks - 1; i > 0; i--) std::swap(l.permutation[i], l.permutation[rng.next() % (i + 1)]);
    }
    mock::pool().run(l, threads < 1 ? 1 : threads);
    if (message_len) {
        snprintf(message, message_len, "%s", l.failed ? l.message.c_str() : "");
    }
    return l.failed ? l.code : 0;
}

}  // extern "C"
