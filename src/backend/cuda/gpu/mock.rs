//! The mock device: the CUDA backend's device layer on the CPU, running the kernels of kernels/
//! compiled as host C++ (build.rs, kernels/mock/), so the whole CUDA path runs in every
//! `cargo test` and on any machine (`--device mock`). It measures no speed, and its numbers differ
//! from a GPU's in the last bits (fused multiply-adds, tensor-core summation order, fast-math
//! intrinsics); what it checks is everything else:
//!
//! - stream order with deferred execution: work runs when the stream is synchronized or read
//!   back, so a missing synchronization gives a wrong answer here as it does on a GPU;
//! - graph capture records work instead of running it, and replay queues it again; a pageable
//!   copy, a synchronization or a read-back while recording fail as CUDA fails them;
//! - memory starts poisoned (NaN bit patterns), every block handed to a new owner is poisoned
//!   again, and every allocation carries redzones (the slack past what its owner asked for
//!   included) checked after every kernel, so an out-of-bounds write names the kernel; copies
//!   and GEMMs outside an allocation are an illegal address;
//! - the GEMM follows cublasGemmEx's column-major contract with the exact op/ld arguments the
//!   backend passes, and refuses what cuBLAS refuses;
//! - kernels run under a chosen schedule (forward, reverse, seeded random order of blocks and of
//!   the threads within them); divergent barriers, bad collectives and deadlocks come back as a
//!   launch failure naming the kernel and the line.
//!
//! A failure is sticky, as a CUDA context's is: every later call reports it.

use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rayon::prelude::*;

use super::{AllocError, DType, Gemm, Gpu, Graph, Mark, Transpose};
use crate::backend::cuda::ffi::{self, Kernels, ScalpelStream};
use crate::error::{Error, Result};

unsafe extern "C" {
    fn scalpel_mock_stream_create() -> *mut c_void;
    fn scalpel_mock_stream_destroy(stream: *mut c_void);
    fn scalpel_mock_stream_take(stream: *mut c_void, out: *mut *mut c_void, cap: usize) -> usize;
    fn scalpel_mock_work_name(work: *const c_void) -> *const c_char;
    fn scalpel_mock_work_file(work: *const c_void) -> *const c_char;
    fn scalpel_mock_work_line(work: *const c_void) -> c_int;
    fn scalpel_mock_work_free(work: *mut c_void);
    fn scalpel_mock_work_run(
        work: *mut c_void,
        schedule: c_int,
        seed: u64,
        threads: c_int,
        message: *mut c_char,
        message_len: usize,
    ) -> c_int;
}

/// Bytes of redzone before every allocation (and at least this many after it).
const REDZONE: usize = 256;
const REDZONE_BYTE: u8 = 0xa5;
/// NaN in f32 and in bf16.
const POISON_BYTE: u8 = 0xff;

/// The order in which blocks, and the threads of a block, take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A seeded random order, drawn anew for every launch, block and round.
    Random(u64),
}

impl Schedule {
    fn code(self) -> (c_int, u64) {
        match self {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Random(seed) => (2, seed),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Forward => write!(f, "forward"),
            Schedule::Reverse => write!(f, "reverse"),
            Schedule::Random(s) => write!(f, "random:{s}"),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "forward" => Ok(Schedule::Forward),
            "reverse" => Ok(Schedule::Reverse),
            "random" => Ok(Schedule::Random(1)),
            _ => match s.strip_prefix("random:").map(str::parse::<u64>) {
                Some(Ok(seed)) => Ok(Schedule::Random(seed)),
                _ => Err(Error::Invalid(format!(
                    "mock schedule {s:?}: expected forward, reverse, random or random:SEED"
                ))),
            },
        }
    }
}

/// How the mock device runs.
#[derive(Clone, Debug)]
pub struct MockOptions {
    pub schedule: Schedule,
    /// OS threads that run blocks.
    pub threads: usize,
    /// The memory the device pretends to have.
    pub memory: usize,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            schedule: Schedule::Forward,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: 16 << 30,
        }
    }
}

impl MockOptions {
    /// The defaults, changed by SCALPEL_MOCK_SCHEDULE (forward, reverse, random[:SEED]),
    /// SCALPEL_MOCK_THREADS and SCALPEL_MOCK_MEMORY (bytes, or with a K/M/G suffix).
    pub fn from_env() -> Result<Self> {
        let mut o = MockOptions::default();
        if let Ok(s) = std::env::var("SCALPEL_MOCK_SCHEDULE") {
            o.schedule = s.parse()?;
        }
        if let Ok(s) = std::env::var("SCALPEL_MOCK_THREADS") {
            o.threads = s.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::Invalid(format!("SCALPEL_MOCK_THREADS={s:?}: expected a positive number"))
            })?;
        }
        if let Ok(s) = std::env::var("SCALPEL_MOCK_MEMORY") {
            o.memory = parse_bytes(&s).ok_or_else(|| {
                Error::Invalid(format!("SCALPEL_MOCK_MEMORY={s:?}: expected bytes, e.g. 512M or 16G"))
            })?;
        }
        Ok(o)
    }
}

fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim().trim_end_matches(['B', 'b']).trim_end_matches(['i']);
    let (num, shift) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 10),
        'M' | 'm' => (&s[..s.len() - 1], 20),
        'G' | 'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(1usize << shift)
}

/// One queued launch: the C++ side's work item, freed when the last queue or graph lets go.
struct Launch(*mut c_void);

// SAFETY: the work item is immutable after submission and only run under the exec lock.
unsafe impl Send for Launch {}
unsafe impl Sync for Launch {}

impl Launch {
    fn describe(&self) -> String {
        // SAFETY: the item lives as long as self; its strings are static.
        unsafe {
            let name = CStr::from_ptr(scalpel_mock_work_name(self.0)).to_string_lossy();
            let file = CStr::from_ptr(scalpel_mock_work_file(self.0)).to_string_lossy();
            format!("{name} (launched at {file}:{})", scalpel_mock_work_line(self.0))
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // SAFETY: owned by this Launch.
        unsafe { scalpel_mock_work_free(self.0) };
    }
}

#[derive(Clone)]
enum Op {
    Kernel(Arc<Launch>),
    Write { dst: u64, data: Arc<Vec<u8>> },
    WritePinned { dst: u64, src: usize, len: usize },
    Copy { dst: u64, src: u64, len: usize },
    Fill { dst: u64, byte: u8, len: usize },
    Fresh { ptr: u64, used: usize },
    Gemm(Gemm),
    Mark(Arc<Mutex<Option<Instant>>>),
}

struct Alloc {
    /// Start of the host allocation (the front redzone).
    base: usize,
    layout: Layout,
    /// Data bytes (the redzone after them starts here).
    size: usize,
    /// Bytes the current owner may touch; [used, size) is guarded like a redzone.
    used: usize,
}

struct Capture {
    ops: Vec<Op>,
    /// Why the recording can no longer succeed (CUDA invalidates a capture on such calls).
    broken: Option<String>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Op>,
    capture: Option<Capture>,
    /// By data address.
    allocs: BTreeMap<u64, Alloc>,
    used_bytes: usize,
    host: HashMap<usize, Layout>,
    /// Frees asked for while recording, done when the recording ends.
    deferred_frees: Vec<u64>,
    /// The first failure: every later call reports it.
    sticky: Option<String>,
}

struct StreamHandle(*mut c_void);

thread_local! {
    /// The mock device whose "context" is current on this thread (its stream's address), as a
    /// CUDA context is current per thread.
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: the C++ stream guards its queue with a mutex.
unsafe impl Send for StreamHandle {}
unsafe impl Sync for StreamHandle {}

pub struct Mock {
    stream: StreamHandle,
    state: Mutex<State>,
    /// Held while queued work runs: one flush at a time, and no free while one runs.
    exec: Mutex<()>,
    opts: MockOptions,
    launches: AtomicU64,
}

struct MockGraph {
    ops: Vec<Op>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mock {
    pub fn new(opts: MockOptions) -> Self {
        // SAFETY: a fresh C++ stream, destroyed in Drop.
        let stream = StreamHandle(unsafe { scalpel_mock_stream_create() });
        Mock {
            stream,
            state: Mutex::new(State::default()),
            exec: Mutex::new(()),
            opts,
            launches: AtomicU64::new(0),
        }
    }

    pub fn options(&self) -> &MockOptions {
        &self.opts
    }

    /// Moves the launches waiting in the C++ stream to where queued work goes now.
    /// Moves what the launchers queued into the stream (or the recording); with `keep` false
    /// it is dropped instead, as CUDA refuses a launch it cannot take.
    fn take_launches(&self, st: &mut State, keep: bool) {
        let mut buf = [std::ptr::null_mut::<c_void>(); 64];
        loop {
            // SAFETY: buf holds 64 slots; each returned item is owned by us from here.
            let n = unsafe { scalpel_mock_stream_take(self.stream.0, buf.as_mut_ptr(), buf.len()) };
            for &w in &buf[..n] {
                let op = Op::Kernel(Arc::new(Launch(w)));
                if !keep {
                    continue;
                }
                match &mut st.capture {
                    Some(c) => c.ops.push(op),
                    None => st.queue.push_back(op),
                }
            }
            if n < buf.len() {
                break;
            }
        }
    }

    fn sticky(st: &State) -> Result<()> {
        match &st.sticky {
            Some(m) => Err(Error::Device(m.clone())),
            None => Ok(()),
        }
    }

    fn enqueue(&self, op: Op) -> Result<()> {
        let mut st = lock(&self.state);
        Self::sticky(&st)?;
        self.take_launches(&mut st, true);
        match &mut st.capture {
            Some(c) => c.ops.push(op),
            None => st.queue.push_back(op),
        }
        Ok(())
    }

    /// A call that CUDA does not allow while a stream is recorded: it fails and breaks the recording.
    fn refuse_if_capturing(&self, st: &mut State, what: &str) -> Result<()> {
        if let Some(c) = &mut st.capture {
            let why = format!(
                "{what} while a CUDA graph is being recorded (operation not permitted when stream is capturing)"
            );
            c.broken.get_or_insert_with(|| why.clone());
            return Err(Error::Device(format!("mock GPU: {why}")));
        }
        Ok(())
    }

    /// Runs everything queued, in order.
    fn flush(&self) -> Result<()> {
        let _exec = lock(&self.exec);
        loop {
            let ops: Vec<Op> = {
                let mut st = lock(&self.state);
                Self::sticky(&st)?;
                self.refuse_if_capturing(&mut st, "synchronizing the stream")?;
                self.take_launches(&mut st, true);
                st.queue.drain(..).collect()
            };
            if ops.is_empty() {
                return Ok(());
            }
            for op in &ops {
                if let Err(message) = self.execute(op) {
                    let mut st = lock(&self.state);
                    st.queue.clear();
                    let m = format!("mock GPU: {message}");
                    st.sticky = Some(m.clone());
                    return Err(Error::Device(m));
                }
            }
        }
    }

    /// Whether [ptr, ptr + len) lies in what the current owner of one allocation may touch.
    fn inside(st: &State, ptr: u64, len: usize) -> bool {
        match st.allocs.range(..=ptr).next_back() {
            Some((&start, a)) => ptr.checked_add(len as u64).is_some_and(|end| end <= start + a.used as u64),
            None => false,
        }
    }

    fn check_range(&self, what: &str, ptr: u64, len: usize) -> std::result::Result<(), String> {
        if len == 0 || Self::inside(&lock(&self.state), ptr, len) {
            Ok(())
        } else {
            Err(format!(
                "an illegal memory access was encountered: {what} touches {len} bytes at {ptr:#x}, outside every allocation (or past what its owner asked for)"
            ))
        }
    }

    fn execute(&self, op: &Op) -> std::result::Result<(), String> {
        match op {
            Op::Kernel(l) => {
                let n = self.launches.fetch_add(1, Ordering::Relaxed);
                let (schedule, seed) = self.opts.schedule.code();
                let seed = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut msg = vec![0 as c_char; 1024];
                // SAFETY: the work item is alive (held by `l`); msg holds msg.len() bytes.
                let code = unsafe {
                    scalpel_mock_work_run(
                        l.0,
                        schedule,
                        seed,
                        self.opts.threads as c_int,
                        msg.as_mut_ptr(),
                        msg.len(),
                    )
                };
                if code != 0 {
                    // SAFETY: the runtime wrote a NUL-terminated message into msg.
                    let detail = unsafe { CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned();
                    return Err(format!("CUDA error {code} ({}): {detail}", error_string(code)));
                }
                self.check_redzones().map_err(|e| format!("kernel {}: {e}", l.describe()))
            }
            Op::Write { dst, data } => {
                self.check_range("a copy to the device", *dst, data.len())?;
                // SAFETY: dst is inside one allocation of at least data.len() bytes.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), *dst as *mut u8, data.len()) };
                Ok(())
            }
            Op::WritePinned { dst, src, len } => {
                self.check_range("a copy to the device", *dst, *len)?;
                // SAFETY: dst checked; src is host memory the caller keeps alive until the copy runs.
                unsafe { std::ptr::copy_nonoverlapping(*src as *const u8, *dst as *mut u8, *len) };
                Ok(())
            }
            Op::Copy { dst, src, len } => {
                self.check_range("a copy on the device (source)", *src, *len)?;
                self.check_range("a copy on the device (destination)", *dst, *len)?;
                // SAFETY: both ranges checked; device copies may overlap only if the caller says so.
                unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *len) };
                Ok(())
            }
            Op::Fill { dst, byte, len } => {
                self.check_range("a memset", *dst, *len)?;
                // SAFETY: checked.
                unsafe { std::ptr::write_bytes(*dst as *mut u8, *byte, *len) };
                Ok(())
            }
            Op::Fresh { ptr, used } => {
                let mut st = lock(&self.state);
                let a =
                    st.allocs.get_mut(ptr).ok_or_else(|| format!("fresh: {ptr:#x} is not an allocation"))?;
                if *used > a.size {
                    return Err(format!("fresh: {used} bytes of a block of {}", a.size));
                }
                a.used = *used;
                // SAFETY: [ptr, ptr + size) is this allocation's data.
                unsafe {
                    std::ptr::write_bytes(*ptr as *mut u8, POISON_BYTE, *used);
                    std::ptr::write_bytes((*ptr as usize + *used) as *mut u8, REDZONE_BYTE, a.size - *used);
                }
                Ok(())
            }
            Op::Gemm(g) => self.run_gemm(g),
            Op::Mark(slot) => {
                *lock(slot) = Some(Instant::now());
                Ok(())
            }
        }
    }

    /// Every allocation's redzones and unused tail still hold their pattern.
    fn check_redzones(&self) -> std::result::Result<(), String> {
        let st = lock(&self.state);
        for (&start, a) in &st.allocs {
            let zones = [(a.base, REDZONE), (start as usize + a.used, a.size - a.used + REDZONE)];
            for (from, len) in zones {
                // SAFETY: both zones lie inside the allocation's layout.
                let bytes = unsafe { std::slice::from_raw_parts(from as *const u8, len) };
                if let Some(i) = bytes.iter().position(|&b| b != REDZONE_BYTE) {
                    let at = from as i64 + i as i64 - start as i64;
                    return Err(if at < 0 {
                        format!("wrote {} bytes before the start of an allocation of {} bytes", -at, a.used)
                    } else {
                        format!(
                            "wrote past the end of an allocation: byte {at} of a buffer of {} bytes (an out-of-bounds write)",
                            a.used
                        )
                    });
                }
            }
        }
        Ok(())
    }

    fn run_gemm(&self, g: &Gemm) -> std::result::Result<(), String> {
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        if m == 0 || n == 0 {
            return Ok(());
        }
        // Stored (column-major) shapes of A and B: rows × cols with ld ≥ rows.
        let a_shape = if g.transa == Transpose::N { (m, k) } else { (k, m) };
        let b_shape = if g.transb == Transpose::N { (k, n) } else { (n, k) };
        let extent = |(rows, cols): (usize, usize), ld: i32| {
            if cols == 0 { 0 } else { ld as usize * (cols - 1) + rows }
        };
        let (ea, eb, ec) = (extent(a_shape, g.lda), extent(b_shape, g.ldb), extent((m, n), g.ldc));
        self.check_range("cuBLAS GemmEx (A)", g.a, ea * g.a_type.size())?;
        self.check_range("cuBLAS GemmEx (B)", g.b, eb * g.b_type.size())?;
        self.check_range("cuBLAS GemmEx (C)", g.c, ec * g.c_type.size())?;
        if g.transa == Transpose::T && g.a_type == DType::Bf16 && n <= 8 {
            // A few columns (a decode step): dot products straight off the bf16 rows, rather
            // than converting the whole weight matrix to f32 for every call.
            // SAFETY: the ranges were just checked against live allocations.
            let d = unsafe { gemv_bf16_rows(g, m, n, k) };
            // SAFETY: C's range was checked.
            unsafe { store_c(g, &d, m, n) };
            return Ok(());
        }
        // SAFETY: each range was just checked against a live allocation.
        let (a, b) = unsafe { (to_f32(g.a, g.a_type, ea), to_f32(g.b, g.b_type, eb)) };
        // op(A)(i, l) and op(B)(l, j) as strided views: (row stride, column stride).
        let a_strides = if g.transa == Transpose::N { (1, g.lda as isize) } else { (g.lda as isize, 1) };
        let b_strides = if g.transb == Transpose::N { (1, g.ldb as isize) } else { (g.ldb as isize, 1) };
        let mut d = vec![0f32; m * n];
        if k > 0 {
            // SAFETY: the strides describe the dense copies a and b, and d (column-major m×n).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    d.as_mut_ptr(),
                    m as isize,
                    1,
                    false,
                    a.as_ptr(),
                    a_strides.1,
                    a_strides.0,
                    b.as_ptr(),
                    b_strides.1,
                    b_strides.0,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                );
            }
        }
        // SAFETY: C's range was checked.
        unsafe { store_c(g, &d, m, n) };
        Ok(())
    }

    fn alloc_bytes(&self, bytes: usize) -> std::result::Result<u64, AllocError> {
        let size = bytes.max(1).div_ceil(REDZONE) * REDZONE;
        let mut st = lock(&self.state);
        if st.used_bytes + size > self.opts.memory {
            return Err(AllocError::OutOfMemory(format!(
                "the mock device's {} MiB are taken (SCALPEL_MOCK_MEMORY sets them)",
                self.opts.memory >> 20
            )));
        }
        let layout = Layout::from_size_align(REDZONE + size + REDZONE, 256).map_err(|e| {
            AllocError::Other(Error::Invalid(format!("mock allocation of {bytes} bytes: {e}")))
        })?;
        // SAFETY: a non-zero size.
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return Err(AllocError::OutOfMemory("the host has no memory for the mock device".into()));
        }
        // SAFETY: the layout's bytes.
        unsafe {
            std::ptr::write_bytes(base, REDZONE_BYTE, REDZONE);
            std::ptr::write_bytes(base.add(REDZONE), POISON_BYTE, size);
            std::ptr::write_bytes(base.add(REDZONE + size), REDZONE_BYTE, REDZONE);
        }
        let data = base as u64 + REDZONE as u64;
        st.allocs.insert(data, Alloc { base: base as usize, layout, size, used: bytes });
        st.used_bytes += size;
        Ok(data)
    }
}

/// C = alpha · D + beta · C, D the product (column-major m×n); beta 0 leaves C unread (it may
/// hold NaN), as cuBLAS does.
///
/// # Safety
/// C's extent (ldc, m, n, c_type) lies in a live allocation.
unsafe fn store_c(g: &Gemm, d: &[f32], m: usize, n: usize) {
    let (alpha, beta) = (g.alpha, g.beta);
    for j in 0..n {
        for i in 0..m {
            let at = g.c + ((i + j * g.ldc as usize) * g.c_type.size()) as u64;
            // SAFETY: inside C's extent.
            unsafe {
                let old = if beta == 0.0 { 0.0 } else { beta * read(at, g.c_type) };
                write(at, g.c_type, alpha * d[i + j * m] + old);
            }
        }
    }
}

/// op(A)·op(B) for A read transposed from bf16 rows (lda apart) and n ≤ 8 columns of B.
///
/// # Safety
/// A's and B's extents lie in live allocations.
unsafe fn gemv_bf16_rows(g: &Gemm, m: usize, n: usize, k: usize) -> Vec<f32> {
    let cols: Vec<Vec<f32>> = (0..n)
        .map(|j| {
            (0..k)
                .map(|l| {
                    let idx = if g.transb == Transpose::N {
                        l + j * g.ldb as usize
                    } else {
                        j + l * g.ldb as usize
                    };
                    // SAFETY: inside B's extent.
                    unsafe { read(g.b + (idx * g.b_type.size()) as u64, g.b_type) }
                })
                .collect()
        })
        .collect();
    let mut rows = vec![0f32; m * n];
    rows.par_chunks_mut(n).enumerate().for_each(|(i, out)| {
        // SAFETY: row i of A's transposed store: k bf16 values at A + i·lda.
        let a = unsafe { std::slice::from_raw_parts((g.a as *const u16).add(i * g.lda as usize), k) };
        for (o, b) in out.iter_mut().zip(&cols) {
            let mut acc = [0f32; 8];
            let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
            let (ar, br) = (ac.remainder(), bc.remainder());
            for (x, y) in ac.zip(bc) {
                for t in 0..8 {
                    acc[t] += f32::from_bits((x[t] as u32) << 16) * y[t];
                }
            }
            let tail: f32 = ar.iter().zip(br).map(|(&x, y)| f32::from_bits((x as u32) << 16) * y).sum();
            *o = acc.iter().sum::<f32>() + tail;
        }
    });
    // Column-major m×n.
    let mut d = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            d[i + j * m] = rows[i * n + j];
        }
    }
    d
}

/// Elements at `ptr` as f32.
///
/// # Safety
/// `ptr` holds `n` elements of `t`.
unsafe fn to_f32(ptr: u64, t: DType, n: usize) -> Vec<f32> {
    match t {
        // SAFETY: the caller's contract; device buffers are 256-byte aligned.
        DType::F32 => unsafe { std::slice::from_raw_parts(ptr as *const f32, n) }.to_vec(),
        DType::Bf16 => {
            // SAFETY: as above.
            let s = unsafe { std::slice::from_raw_parts(ptr as *const u16, n) };
            s.par_iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect()
        }
    }
}

/// # Safety
/// `at` holds one element of `t`.
unsafe fn read(at: u64, t: DType) -> f32 {
    // SAFETY: the caller's contract.
    unsafe {
        match t {
            DType::F32 => (at as *const f32).read_unaligned(),
            DType::Bf16 => half::bf16::from_bits((at as *const u16).read_unaligned()).to_f32(),
        }
    }
}

/// # Safety
/// `at` holds one element of `t`.
unsafe fn write(at: u64, t: DType, v: f32) {
    // SAFETY: the caller's contract.
    unsafe {
        match t {
            DType::F32 => (at as *mut f32).write_unaligned(v),
            DType::Bf16 => (at as *mut u16).write_unaligned(half::bf16::from_f32(v).to_bits()),
        }
    }
}

fn error_string(code: i32) -> String {
    // SAFETY: returns a static C string for every code.
    unsafe { CStr::from_ptr((ffi::MOCK.error_string)(code)) }.to_string_lossy().into_owned()
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.flush();
        let mut st = lock(&self.state);
        st.capture = None;
        st.queue.clear();
        // SAFETY: nothing runs any more; every allocation and the stream are ours.
        unsafe {
            scalpel_mock_stream_destroy(self.stream.0);
            for (_, a) in std::mem::take(&mut st.allocs) {
                std::alloc::dealloc(a.base as *mut u8, a.layout);
            }
            for (p, layout) in std::mem::take(&mut st.host) {
                std::alloc::dealloc(p as *mut u8, layout);
            }
        }
    }
}

impl Gpu for Mock {
    fn describe(&self) -> String {
        format!(
            "mock GPU (the CUDA kernels on the CPU: schedule {}, {} threads, {:.1} GiB)",
            self.opts.schedule,
            self.opts.threads,
            self.opts.memory as f64 / 1073741824.0
        )
    }

    fn kernels(&self) -> &'static Kernels {
        &ffi::MOCK
    }

    fn stream(&self) -> ScalpelStream {
        self.stream.0 as ScalpelStream
    }

    fn bind(&self) -> Result<()> {
        CURRENT.with(|c| c.set(self.stream.0 as usize));
        Ok(())
    }

    fn launched(&self) -> Result<()> {
        // A kernel launch takes the thread's current context, as on a GPU: a launch from a
        // thread this device was never made current on is refused (the driver's layer binds
        // in each of its own calls; launches are the backend's to bind).
        let current = CURRENT.with(|c| c.get()) == self.stream.0 as usize;
        let mut st = lock(&self.state);
        self.take_launches(&mut st, current);
        if !current {
            return Err(Error::Device(
                "a kernel was launched on a thread where this device's context is not current \
                 (CUDA_ERROR_INVALID_CONTEXT): bind the device first"
                    .into(),
            ));
        }
        Ok(())
    }

    fn is_mock(&self) -> bool {
        true
    }

    fn alloc(&self, bytes: usize) -> std::result::Result<u64, AllocError> {
        self.alloc_bytes(bytes)
    }

    unsafe fn free(&self, ptr: u64) {
        {
            let mut st = lock(&self.state);
            if st.capture.is_some() {
                st.deferred_frees.push(ptr);
                return;
            }
        }
        // Queued work may still use it: run it first (cuMemFree synchronizes too).
        let _ = self.flush();
        let _exec = lock(&self.exec);
        let mut st = lock(&self.state);
        if let Some(a) = st.allocs.remove(&ptr) {
            st.used_bytes -= a.size;
            // SAFETY: allocated in alloc_bytes with this layout; nothing uses it any more.
            unsafe { std::alloc::dealloc(a.base as *mut u8, a.layout) };
        }
    }

    fn mem_info(&self) -> Result<(usize, usize)> {
        let st = lock(&self.state);
        Ok((self.opts.memory.saturating_sub(st.used_bytes), self.opts.memory))
    }

    fn fresh(&self, ptr: u64, used: usize) -> Result<()> {
        self.enqueue(Op::Fresh { ptr, used })
    }

    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        {
            let mut st = lock(&self.state);
            self.refuse_if_capturing(&mut st, "a copy from pageable host memory")?;
        }
        self.enqueue(Op::Write { dst, data: Arc::new(src.to_vec()) })
    }

    unsafe fn htod_pinned(&self, dst: u64, src: *const u8, len: usize) -> Result<()> {
        self.enqueue(Op::WritePinned { dst, src: src as usize, len })
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.enqueue(Op::Copy { dst, src, len: bytes })
    }

    unsafe fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        self.enqueue(Op::Fill { dst, byte, len: bytes })
    }

    unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        {
            let mut st = lock(&self.state);
            self.refuse_if_capturing(&mut st, "a copy to the host")?;
        }
        self.flush()?;
        let _exec = lock(&self.exec);
        self.check_range("a copy to the host", src, dst.len()).map_err(|m| {
            let m = format!("mock GPU: {m}");
            lock(&self.state).sticky = Some(m.clone());
            Error::Device(m)
        })?;
        // SAFETY: checked against a live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.flush()
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        // The driver's calls bind the context themselves; so does this one.
        self.bind()?;
        // What cublasGemmEx refuses before it runs anything.
        let (rows_a, rows_b) = (
            if g.transa == Transpose::N { g.m } else { g.k },
            if g.transb == Transpose::N { g.k } else { g.n },
        );
        if g.m < 0
            || g.n < 0
            || g.k < 0
            || g.lda < rows_a.max(1)
            || g.ldb < rows_b.max(1)
            || g.ldc < g.m.max(1)
        {
            return Err(Error::Device(format!(
                "cuBLAS GemmEx m={} n={} k={}: CUBLAS_STATUS_INVALID_VALUE (lda {} ldb {} ldc {} with transa {:?} transb {:?})",
                g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.transa, g.transb
            )));
        }
        let supported = g.a_type == g.b_type && (g.a_type == DType::Bf16 || g.c_type == DType::F32);
        if !supported {
            return Err(Error::Device(format!(
                "cuBLAS GemmEx: CUBLAS_STATUS_NOT_SUPPORTED (A {:?}, B {:?}, C {:?} with f32 compute)",
                g.a_type, g.b_type, g.c_type
            )));
        }
        self.enqueue(Op::Gemm(*g))
    }

    fn host_alloc(&self, bytes: usize) -> Result<*mut u8> {
        let layout = Layout::from_size_align(bytes.max(1), 64).map_err(|e| Error::Invalid(e.to_string()))?;
        // SAFETY: a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(Error::OutOfMemory(format!("{bytes} bytes of host memory")));
        }
        lock(&self.state).host.insert(p as usize, layout);
        Ok(p)
    }

    unsafe fn host_free(&self, ptr: *mut u8, _bytes: usize) {
        if let Some(layout) = lock(&self.state).host.remove(&(ptr as usize)) {
            // SAFETY: allocated in host_alloc with this layout.
            unsafe { std::alloc::dealloc(ptr, layout) };
        }
    }

    fn mark(&self) -> Result<Mark> {
        let slot = Arc::new(Mutex::new(None));
        self.enqueue(Op::Mark(slot.clone()))?;
        Ok(Mark(Box::new(slot)))
    }

    fn elapsed_ms(&self, start: &Mark, end: &Mark) -> Result<f32> {
        self.flush()?;
        let get = |m: &Mark| -> Result<Instant> {
            m.0.downcast_ref::<Arc<Mutex<Option<Instant>>>>()
                .and_then(|s| *lock(s))
                .ok_or_else(|| Error::Invalid("elapsed_ms: a mark of another device, or one not run".into()))
        };
        let (a, b) = (get(start)?, get(end)?);
        Ok(b.saturating_duration_since(a).as_secs_f32() * 1e3)
    }

    fn begin_capture(&self) -> Result<()> {
        self.flush()?;
        let mut st = lock(&self.state);
        if st.capture.is_some() {
            return Err(Error::Device("mock GPU: a graph is already being recorded".into()));
        }
        st.capture = Some(Capture { ops: Vec::new(), broken: None });
        Ok(())
    }

    fn end_capture(&self) -> Result<Graph> {
        let (capture, frees) = {
            let mut st = lock(&self.state);
            self.take_launches(&mut st, true);
            let c = st
                .capture
                .take()
                .ok_or_else(|| Error::Device("mock GPU: no graph is being recorded".into()))?;
            (c, std::mem::take(&mut st.deferred_frees))
        };
        for p in frees {
            // SAFETY: asked for by the owner while recording; the recorded work never ran.
            unsafe { self.free(p) };
        }
        if let Some(why) = capture.broken {
            return Err(Error::Device(format!("mock GPU: the CUDA graph recording was invalidated: {why}")));
        }
        Ok(Graph(Box::new(MockGraph { ops: capture.ops })))
    }

    fn replay(&self, graph: &Graph) -> Result<()> {
        let g = graph
            .0
            .downcast_ref::<MockGraph>()
            .ok_or_else(|| Error::Invalid("replay: a graph of another device".into()))?;
        let mut st = lock(&self.state);
        Self::sticky(&st)?;
        self.take_launches(&mut st, true);
        for op in &g.ops {
            match &mut st.capture {
                Some(c) => c.ops.push(op.clone()),
                None => st.queue.push_back(op.clone()),
            }
        }
        Ok(())
    }
}
