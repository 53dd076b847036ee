//! The CUDA backend: bf16 parameters and KV cache, f32 residual stream and accumulation, the
//! hand-written kernels of kernels/ (through the launchers of kernels/scalpel_kernels.h) and
//! cuBLAS for matrix products, all on one stream; decode steps can be recorded as CUDA graphs.
//!
//! It runs on a real GPU ([`Cuda::new`], feature `cuda`) or on the mock device ([`Cuda::mock`]),
//! which runs the same kernels on the CPU; the two differ only below the [`gpu::Gpu`] interface.
//!
//! - [`gpu`]: the device layer (driver + cuBLAS, or the mock);
//! - [`memory`]: the allocation pool; [`tensor`]: tensors, steps, the KV cache;
//! - `launch`: the one path every kernel launch takes (range, timing, return code, fault report);
//! - `ops`: the Backend ops; `profile`: per-op timing; `testing`: hooks for the kernel tests.
//!
//! Every launch's return code is checked, and the name of the last kernel launched is kept so an
//! asynchronous fault reported at the next synchronization names where it came from
//! (SCALPEL_CUDA_SYNC=1 synchronizes after every launch to pin it exactly).

pub mod ffi;
pub mod gpu;
mod launch;
pub mod memory;
mod ops;
mod profile;
pub mod tensor;
mod testing;

use std::sync::{Arc, Mutex};

use self::gpu::{DType, Gpu};
use self::memory::{Block, Memory};
use self::profile::Profiler;
use super::{Device, OpTime, SeqSpan};
use crate::error::{Error, Result};

pub use self::gpu::mock::{MockOptions, Schedule};
pub use self::ops::AttnKernel;
pub use self::tensor::{CudaCache, CudaStep, CudaTensor};

pub struct Cuda {
    gpu: Arc<dyn Gpu>,
    k: &'static ffi::Kernels,
    memory: Arc<Memory>,
    /// Where device sampling writes the chosen token.
    token: Arc<Block>,
    last_kernel: Mutex<String>,
    sync_each: bool,
    profiler: Option<Profiler>,
    /// Fill every new activation with NaN bits, so an element a kernel forgot to write fails the
    /// comparison (kernel tests turn this on; the mock device always poisons).
    poison: bool,
}

impl Cuda {
    /// Whether a CUDA driver and at least one device are present (never true without the `cuda`
    /// feature; the mock device is not a GPU).
    pub fn available() -> bool {
        #[cfg(feature = "cuda")]
        return gpu::driver::Driver::available();
        #[cfg(not(feature = "cuda"))]
        false
    }

    /// Opens GPU `ordinal`.
    pub fn new(ordinal: usize) -> Result<Self> {
        #[cfg(feature = "cuda")]
        return Self::on(Arc::new(gpu::driver::Driver::new(ordinal)?));
        #[cfg(not(feature = "cuda"))]
        Err(Error::Device(format!(
            "GPU {ordinal}: this scalpel was built without CUDA (--no-default-features); rebuild with the \
             default features and nvcc available (scripts/setup.sh installs it), or use --device mock"
        )))
    }

    /// The mock device: this backend, with the kernels running on the CPU.
    pub fn mock(opts: MockOptions) -> Result<Self> {
        Self::on(Arc::new(gpu::mock::Mock::new(opts)))
    }

    fn on(gpu: Arc<dyn Gpu>) -> Result<Self> {
        let memory = Memory::new(gpu.clone());
        let token = memory.alloc(4, false, "the sampled token")?;
        Ok(Cuda {
            k: gpu.kernels(),
            poison: gpu.is_mock(),
            gpu,
            memory,
            token,
            last_kernel: Mutex::new("none yet".into()),
            sync_each: std::env::var("SCALPEL_CUDA_SYNC").is_ok_and(|v| v == "1"),
            profiler: None,
        })
    }

    /// Times every op (for `generate --profile`); graphs are not recorded then.
    pub fn with_profiling(mut self) -> Self {
        self.profiler = Some(Profiler::new());
        self
    }

    /// New activations are filled with NaN bits (see the `poison` field).
    pub fn with_poison(mut self) -> Self {
        self.poison = true;
        self
    }

    pub fn is_mock(&self) -> bool {
        self.gpu.is_mock()
    }

    /// The device's name and memory.
    pub fn describe(&self) -> String {
        self.gpu.describe()
    }

    /// Device memory held by scalpel (weights, caches, pooled activations): now, and the peak.
    pub fn memory_usage(&self) -> (usize, usize) {
        self.memory.usage()
    }

    /// Waits for the stream; an asynchronous fault is reported with the last kernel launched.
    pub fn synchronize(&self) -> Result<()> {
        self.gpu.synchronize().map_err(|e| {
            let last = self.last_kernel.lock().expect("lock").clone();
            match e {
                Error::DeviceCall { what, source } => {
                    Error::DeviceCall { what: format!("{what} (last kernel launched: {last})"), source }
                }
                Error::Device(m) => Error::Device(format!("{m} (last kernel launched: {last})")),
                other => other,
            }
        })
    }

    pub(super) fn alloc(&self, dtype: DType, shape: &[usize], what: &str) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        let block = self.memory.alloc(n * dtype.size(), true, what)?;
        if self.poison {
            // SAFETY: the block holds at least n * size bytes.
            unsafe { self.gpu.memset(block.ptr, 0xff, n * dtype.size())? };
        }
        Ok(CudaTensor::dense(block, dtype, shape))
    }

    fn htod<T: Copy>(&self, dst: u64, src: &[T]) -> Result<()> {
        // SAFETY: T is plain data; the bytes are read before this returns (pageable copy).
        let bytes =
            unsafe { std::slice::from_raw_parts(src.as_ptr() as *const u8, std::mem::size_of_val(src)) };
        // SAFETY: the callers pass a live allocation of at least that many bytes.
        unsafe { self.gpu.htod(dst, bytes) }
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: the callers pass live allocations of at least `bytes`.
        unsafe { self.gpu.dtod(dst, src, bytes) }
    }

    fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        self.synchronize()?;
        // SAFETY: the callers pass a live allocation of at least dst.len() bytes.
        unsafe { self.gpu.dtoh(dst, src) }
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        let _ = self.gpu.synchronize();
    }
}

impl Device for Cuda {
    type Step = CudaStep;
    type Graph = gpu::Graph;

    fn name(&self) -> &'static str {
        if self.gpu.is_mock() { "mock" } else { "cuda" }
    }

    fn supports_graphs(&self) -> bool {
        // Synchronizing after each launch (SCALPEL_CUDA_SYNC) is not allowed inside a recording.
        self.profiler.is_none()
            && !self.sync_each
            && std::env::var("SCALPEL_CUDA_GRAPHS").map_or(true, |v| v != "0")
    }

    fn fixed_step(&self, rows: usize, max_pages: usize) -> Result<CudaStep> {
        if rows == 0 || max_pages == 0 {
            return Err(Error::Invalid("fixed_step: no rows or no pages".into()));
        }
        // One row per sequence, as a decode step has.
        let seqs: Vec<SeqSpan> =
            (0..rows).map(|r| SeqSpan { row: r, len: 1, start: 0, pages: vec![0] }).collect();
        let layout = tensor::StepLayout::of(rows, &seqs, max_pages);
        let words = layout.words();
        let buf = self.memory.alloc(words * 4, false, "a recorded step's tokens")?;
        let ptr = self.gpu.host_alloc(words * 4)? as *mut u32;
        // SAFETY: the allocation holds `words` u32 values, zeroed before a slice is made of them.
        let staged = unsafe {
            std::ptr::write_bytes(ptr, 0, words);
            std::slice::from_raw_parts_mut(ptr, words)
        };
        layout.fill(&vec![0; rows], &seqs, staged);
        let staging = tensor::Pinned { ptr, words, gpu: self.gpu.clone() };
        Ok(CudaStep { buf, seqs, layout, max_page: 0, staging: Some(staging) })
    }

    fn set_step(&self, step: &mut CudaStep, ids: &[u32], seqs: &[SeqSpan]) -> Result<()> {
        let max_page = crate::backend::check_spans(ids.len(), seqs)?;
        let fits = ids.len() == step.layout.rows
            && seqs.len() == step.layout.n_seqs
            && seqs.iter().all(|s| s.len == 1 && s.pages.len() <= step.layout.max_pages);
        if !fits {
            return Err(Error::Invalid(format!(
                "set_step: {} ids of {} sequences for a step of {} single rows with {} pages each",
                ids.len(),
                seqs.len(),
                step.layout.rows,
                step.layout.max_pages
            )));
        }
        let staging = step
            .staging
            .as_mut()
            .ok_or_else(|| Error::Invalid("set_step on a step that is not fixed".into()))?;
        // The previous replay may still read the staging: wait for it.
        self.synchronize()?;
        // SAFETY: the staging holds `words` values; no copy reads it now.
        let words = unsafe { std::slice::from_raw_parts_mut(staging.ptr, staging.words) };
        step.layout.fill(ids, seqs, words);
        step.seqs = seqs.to_vec();
        step.max_page = max_page;
        Ok(())
    }

    fn upload_step(&self, step: &CudaStep) -> Result<()> {
        let staging = step
            .staging
            .as_ref()
            .ok_or_else(|| Error::Invalid("upload_step on a step that is not fixed".into()))?;
        // SAFETY: pinned staging of `words` values into a device buffer of the same size; it lives
        // as long as the step, which outlives every replay of the recording that reads it.
        unsafe { self.gpu.htod_pinned(step.buf.ptr, staging.ptr as *const u8, staging.words * 4) }
    }

    fn begin_capture(&self) -> Result<()> {
        self.synchronize()?;
        self.gpu.begin_capture()
    }

    fn end_capture(&self) -> Result<gpu::Graph> {
        self.gpu.end_capture()
    }

    fn replay(&self, graph: &gpu::Graph) -> Result<()> {
        self.gpu.replay(graph)?;
        *self.last_kernel.lock().expect("lock") = "a replayed decode graph".into();
        Ok(())
    }

    fn op_times(&self) -> Result<Vec<OpTime>> {
        self.synchronize()?;
        match &self.profiler {
            Some(p) => p.report(self.gpu.as_ref()),
            None => Ok(Vec::new()),
        }
    }

    fn device_memory(&self) -> Option<(usize, usize)> {
        Some(self.memory.usage())
    }

    fn ranges(&self) -> bool {
        // SAFETY: a plain query.
        unsafe { (self.k.nvtx_enabled)() != 0 }
    }

    fn push_range(&self, name: &str) {
        if let Ok(c) = std::ffi::CString::new(name) {
            // SAFETY: a valid C string; NVTX copies what it needs.
            unsafe { (self.k.nvtx_push)(c.as_ptr()) };
        }
    }

    fn pop_range(&self) {
        // SAFETY: paired with push_range by Range.
        unsafe { (self.k.nvtx_pop)() };
    }
}
