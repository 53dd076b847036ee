//! The device layer under the CUDA backend: the one small interface through which the backend
//! touches a GPU — memory, copies, memsets, its stream, events, the cuBLAS product, graph capture
//! and replay, memory info — with two implementations: the NVIDIA driver and cuBLAS
//! ([`driver`], feature `cuda`), and the mock device ([`mock`]), which runs the same kernels on
//! the CPU. Everything above this interface (buffer planning, KV cache, workspaces, launch
//! arguments, decode graphs, sampling, probes, interventions) is the same code on both.
//!
//! Ordering is the stream's: every call here is queued behind the work before it and runs in
//! order; `dtoh` and `synchronize` wait for the stream. Pointers are device addresses as u64.

#[cfg(feature = "cuda")]
pub mod driver;
pub mod mock;

use std::any::Any;

use super::ffi::{Kernels, ScalpelStream};
use crate::error::Result;

/// Element types of device buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }
}

/// cuBLAS's `cublasOperation_t`, for the two the backend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    N,
    T,
}

/// One `cublasGemmEx` call, in cuBLAS's own column-major terms: C (m×n, ldc) = alpha · op(A)
/// (m×k) · op(B) (k×n) + beta · C, computed in f32 (CUBLAS_COMPUTE_32F). The mock checks and
/// computes exactly these arguments, so a wrong leading dimension fails there as it would here.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub transa: Transpose,
    pub transb: Transpose,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub a: u64,
    pub a_type: DType,
    pub lda: i32,
    pub b: u64,
    pub b_type: DType,
    pub ldb: i32,
    pub beta: f32,
    pub c: u64,
    pub c_type: DType,
    pub ldc: i32,
}

/// A point on the stream, for timing (a CUDA event, or the mock's clock reading).
pub struct Mark(pub(super) Box<dyn Any + Send + Sync>);

/// A recorded stream (a CUDA graph, or the mock's list of recorded work).
pub struct Graph(pub(super) Box<dyn Any>);

/// Why an allocation failed: out of memory (which the pool answers by releasing its cache and
/// trying again) or anything else.
pub enum AllocError {
    OutOfMemory(String),
    Other(crate::error::Error),
}

pub trait Gpu: Send + Sync {
    /// The device in a few words, with its free and total memory.
    fn describe(&self) -> String;
    /// The kernels built for this device.
    fn kernels(&self) -> &'static Kernels;
    /// The stream every launch and copy goes to.
    fn stream(&self) -> ScalpelStream;
    /// Makes the device's context current on the calling thread. Every other call here does so
    /// itself; kernel launchers run outside this interface, so the backend binds before each.
    fn bind(&self) -> Result<()> {
        Ok(())
    }
    /// Called after every kernel launcher: takes what it queued (the mock's launches wait in its
    /// C++ stream until then).
    fn launched(&self) -> Result<()> {
        Ok(())
    }
    fn is_mock(&self) -> bool {
        false
    }

    fn alloc(&self, bytes: usize) -> std::result::Result<u64, AllocError>;
    /// # Safety
    /// `ptr` came from `alloc` and no queued work uses it any more.
    unsafe fn free(&self, ptr: u64);
    /// Free and total bytes.
    fn mem_info(&self) -> Result<(usize, usize)>;
    /// A block of `size` bytes at `ptr` gets a new owner who uses its first `used` bytes (in
    /// stream order): the mock poisons them and guards the rest; the driver does nothing.
    fn fresh(&self, _ptr: u64, _used: usize) -> Result<()> {
        Ok(())
    }

    /// Copies pageable host memory in; `src` may be reused as soon as this returns.
    ///
    /// # Safety
    /// `dst` is a live allocation of at least `src.len()` bytes.
    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Copies page-locked host memory in, reading it when the copy runs (a recorded copy reads it
    /// again at every replay).
    ///
    /// # Safety
    /// `dst` holds `len` bytes; `src` (from `host_alloc`) holds `len` bytes until the copy has run.
    unsafe fn htod_pinned(&self, dst: u64, src: *const u8, len: usize) -> Result<()>;
    /// # Safety
    /// Both hold `bytes`.
    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()>;
    /// # Safety
    /// `dst` holds `bytes`.
    unsafe fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()>;
    /// Waits for the stream, then copies out.
    ///
    /// # Safety
    /// `src` holds `dst.len()` bytes.
    unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()>;
    /// Waits for everything queued; an asynchronous fault is reported here.
    fn synchronize(&self) -> Result<()>;
    /// Queues one cublasGemmEx.
    ///
    /// # Safety
    /// The pointers, types and leading dimensions describe live allocations.
    unsafe fn gemm(&self, g: &Gemm) -> Result<()>;

    /// Page-locked host memory (a recorded copy reads from it at every replay).
    fn host_alloc(&self, bytes: usize) -> Result<*mut u8>;
    /// # Safety
    /// `ptr` came from `host_alloc(bytes)` and no queued copy reads it.
    unsafe fn host_free(&self, ptr: *mut u8, bytes: usize);

    /// Records a point on the stream.
    fn mark(&self) -> Result<Mark>;
    /// Milliseconds between two recorded points (waits for the later one).
    fn elapsed_ms(&self, start: &Mark, end: &Mark) -> Result<f32>;

    /// From here to `end_capture`, work is recorded instead of run.
    fn begin_capture(&self) -> Result<()>;
    fn end_capture(&self) -> Result<Graph>;
    /// Queues the recorded work again.
    fn replay(&self, graph: &Graph) -> Result<()>;
}
