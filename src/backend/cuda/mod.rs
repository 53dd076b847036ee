//! The CUDA backend: bf16 parameters and KV cache, f32 residual stream and accumulation, the
//! hand-written kernels of kernels/ (through their bindgen-generated launchers) and cuBLAS for
//! matrix products, all on one stream; decode steps can be recorded as CUDA graphs.
//!
//! Every launch's return code is checked, and the name of the last kernel launched is kept so an
//! asynchronous fault reported at the next synchronization names where it came from
//! (SCALPEL_CUDA_SYNC=1 synchronizes after every launch to pin it exactly).

mod ffi;
pub mod memory;
mod profile;

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys as blas;
use cudarc::driver::sys as drv;
use cudarc::driver::{CudaContext, CudaGraph, CudaStream, result};
use half::bf16;
use rayon::prelude::*;

use self::memory::{Block, Memory};
use self::profile::Profiler;
use super::{AttnParams, Backend, OpTime, Step, Tensor};
use crate::error::{Error, Result};
use crate::model::config::{Activation, NormKind};
use crate::sample::SamplingParams;

const CUBLAS_WORKSPACE: usize = 32 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    fn ffi(self) -> ffi::ScalpelDType {
        match self {
            DType::F32 => ffi::ScalpelDType::SCALPEL_F32,
            DType::Bf16 => ffi::ScalpelDType::SCALPEL_BF16,
        }
    }
}

pub struct CudaTensor {
    block: Arc<Block>,
    pub dtype: DType,
    shape: Vec<usize>,
}

impl Tensor for CudaTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl CudaTensor {
    fn ptr(&self) -> u64 {
        self.block.ptr
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn cptr<T>(&self) -> *const T {
        self.block.ptr as *const T
    }

    fn mptr<T>(&self) -> *mut T {
        self.block.ptr as *mut T
    }
}

/// Page-locked host memory, so a recorded copy can be replayed from it.
struct Pinned {
    ptr: *mut u32,
    words: usize,
}

// SAFETY: the pointer is owned by this struct and only accessed through &self/&mut self.
unsafe impl Send for Pinned {}
unsafe impl Sync for Pinned {}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemHostAlloc in Cuda::fixed_step; the owner synchronized first.
        let _ = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// The step's tokens on the device: [start (i32), ids (u32)…] in one buffer.
pub struct CudaStep {
    buf: Arc<Block>,
    start: usize,
    len: usize,
    staging: Option<Pinned>,
}

impl Step for CudaStep {
    fn start(&self) -> usize {
        self.start
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl CudaStep {
    fn start_ptr(&self) -> *const i32 {
        self.buf.ptr as *const i32
    }

    fn ids_ptr(&self) -> *const u32 {
        (self.buf.ptr + 4) as *const u32
    }
}

pub struct CudaCache {
    k: Vec<Arc<Block>>,
    v: Vec<Arc<Block>>,
    capacity: usize,
    row: usize,
    /// Split-sequence partial results of single-row (decode) attention.
    workspace: Option<Arc<Block>>,
}

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    memory: Arc<Memory>,
    _blas_workspace: Arc<Block>,
    token: Arc<Block>,
    last_kernel: Mutex<&'static str>,
    sync_each: bool,
    profiler: Option<Profiler>,
    /// Fill every new activation with NaN bits, so an element a kernel forgot to write fails the
    /// comparison (kernel tests turn this on).
    poison: bool,
    name: String,
}

/// Which attention kernel to run (tests hold each against the CPU; `Auto` is what the forward
/// pass uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKernel {
    Auto,
    Rows,
    TensorCores,
}

fn device_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

fn error_string(code: i32) -> String {
    // SAFETY: cudaGetErrorString returns a static C string for every code.
    unsafe { CStr::from_ptr(ffi::scalpel_error_string(code)) }.to_string_lossy().into_owned()
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(Error::Invalid(what())) }
}

impl Cuda {
    /// Whether a CUDA driver and at least one device are present.
    pub fn available() -> bool {
        // SAFETY: only probes for the shared library.
        if !unsafe { drv::is_culib_present() } {
            return false;
        }
        CudaContext::device_count().is_ok_and(|n| n > 0)
    }

    /// Opens device `ordinal`: a context, one stream, cuBLAS with a fixed workspace.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes for the shared libraries.
        if !unsafe { drv::is_culib_present() } {
            return Err(Error::Device(
                "no CUDA driver: libcuda.so was not found (is the NVIDIA driver installed?)".into(),
            ));
        }
        let n = CudaContext::device_count().map_err(|e| device_err("cannot query CUDA devices", e))?;
        if n <= 0 {
            return Err(Error::Device("the CUDA driver reports no GPU".into()));
        }
        if ordinal >= n as usize {
            return Err(Error::Device(format!("GPU {ordinal} requested but only {n} present")));
        }
        // SAFETY: as above.
        if !unsafe { blas::is_culib_present() } {
            return Err(Error::Device(
                "cuBLAS (libcublas.so) was not found: install the CUDA toolkit or the nvidia-cublas wheel and \
                 put its lib directory on LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| device_err("cannot create a CUDA context", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| device_err("compute capability", e))?;
        if major < 8 {
            return Err(Error::Device(format!(
                "scalpel's kernels need compute capability 8.0 or newer (bf16 tensor cores); this GPU is {major}.{minor}"
            )));
        }
        // One stream for everything: cross-stream event tracking would only cost time, and
        // recording a graph needs a stream other than the legacy default one.
        // SAFETY: every buffer is used on this one stream only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| device_err("cannot create a stream", e))?;
        let blas_handle = CudaBlas::new(stream.clone()).map_err(|e| device_err("cannot start cuBLAS", e))?;
        let memory = Memory::new();
        let ws = memory.alloc(CUBLAS_WORKSPACE, false, "the cuBLAS workspace")?;
        // SAFETY: the workspace outlives the handle (both owned by Cuda); a fixed workspace keeps
        // cuBLAS from allocating while a graph is recorded.
        unsafe {
            blas::cublasSetWorkspace_v2(
                *blas_handle.handle(),
                ws.ptr as *mut std::ffi::c_void,
                CUBLAS_WORKSPACE,
            )
            .result()
            .map_err(|e| device_err("cublasSetWorkspace", format!("{e:?}")))?;
        }
        let token = memory.alloc(4, false, "the sampled token")?;
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        Ok(Cuda {
            ctx,
            stream,
            blas: blas_handle,
            memory,
            _blas_workspace: ws,
            token,
            last_kernel: Mutex::new("none yet"),
            sync_each: std::env::var("SCALPEL_CUDA_SYNC").is_ok_and(|v| v == "1"),
            profiler: None,
            poison: false,
            name,
        })
    }

    /// Times every op with CUDA events (for `generate --profile`); graphs are not recorded then.
    pub fn with_profiling(mut self) -> Self {
        self.profiler = Some(Profiler::new(self.ctx.clone()));
        self
    }

    /// The device's name, compute capability and memory.
    pub fn describe(&self) -> String {
        let (free, total) = result::mem_get_info().unwrap_or((0, 0));
        format!(
            "{} ({:.1} GiB free of {:.1} GiB)",
            self.name,
            free as f64 / 1073741824.0,
            total as f64 / 1073741824.0
        )
    }

    /// Device memory held by scalpel (weights, caches, pooled activations): now, and the peak.
    pub fn memory_usage(&self) -> (usize, usize) {
        self.memory.usage()
    }

    fn cu_stream(&self) -> ffi::ScalpelStream {
        self.stream.cu_stream() as ffi::ScalpelStream
    }

    /// Waits for the stream; an asynchronous fault is reported with the last kernel launched.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| {
            let last = *self.last_kernel.lock().expect("lock");
            Error::Device(format!("CUDA error {e} (last kernel launched: {last})"))
        })
    }

    /// Checks a launcher's return code, remembers the kernel, and synchronizes when asked to.
    fn launched(&self, kernel: &'static str, code: i32) -> Result<()> {
        *self.last_kernel.lock().expect("lock") = kernel;
        if code != 0 {
            return Err(Error::Device(format!(
                "kernel {kernel} failed to launch: {} ({code})",
                error_string(code)
            )));
        }
        if self.sync_each {
            self.synchronize()?;
        }
        Ok(())
    }

    /// Runs `f` inside an NVTX range (and a profiler measurement) named `op`.
    fn op<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let name = CString::new(op).expect("static op names have no NUL");
        // SAFETY: a valid C string; NVTX copies what it needs.
        unsafe { ffi::scalpel_nvtx_push(name.as_ptr()) };
        let mark = self.profiler.as_ref().map(|p| p.start(&self.stream)).transpose();
        let out = mark.and_then(|mark| {
            let out = f()?;
            if let (Some(p), Some(m)) = (&self.profiler, mark) {
                p.stop(op, m, &self.stream)?;
            }
            Ok(out)
        });
        // SAFETY: matches the push above.
        unsafe { ffi::scalpel_nvtx_pop() };
        out
    }

    /// Milliseconds per call of `f`, from CUDA events around `iters` calls after 3 warm-up calls.
    pub fn time_ms(&self, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        self.synchronize()?;
        let a = profile::timing_event(&self.ctx).map_err(|e| device_err("event", e))?;
        let b = profile::timing_event(&self.ctx).map_err(|e| device_err("event", e))?;
        a.record(&self.stream).map_err(|e| device_err("event", e))?;
        for _ in 0..iters {
            f()?;
        }
        b.record(&self.stream).map_err(|e| device_err("event", e))?;
        self.synchronize()?;
        Ok(a.elapsed_ms(&b).map_err(|e| device_err("event", e))? as f64 / iters.max(1) as f64)
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read plus bytes written), the ceiling for
    /// memory-bound kernels, measured on two buffers of `bytes`.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64> {
        let a = self.memory.alloc(bytes, false, "the bandwidth probe")?;
        let b = self.memory.alloc(bytes, false, "the bandwidth probe")?;
        // SAFETY: both blocks hold `bytes`.
        unsafe { result::memset_d8_async(a.ptr, 0x3c, bytes, self.stream.cu_stream()) }
            .map_err(|e| device_err("memset", e))?;
        let ms = self.time_ms(20, || self.dtod(b.ptr, a.ptr, bytes))?;
        Ok(2.0 * bytes as f64 / (ms * 1e-3) / 1e9)
    }

    /// New activations are filled with NaN bits (see the `poison` field).
    pub fn with_poison(mut self) -> Self {
        self.poison = true;
        self
    }

    fn alloc(&self, dtype: DType, shape: &[usize], what: &str) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        let block = self.memory.alloc(n * dtype.size(), true, what)?;
        if self.poison {
            // SAFETY: the block holds at least n * size bytes.
            unsafe { result::memset_d8_async(block.ptr, 0xff, n * dtype.size(), self.stream.cu_stream()) }
                .map_err(|e| device_err("poison", e))?;
        }
        Ok(CudaTensor { block, dtype, shape: shape.to_vec() })
    }

    /// Writes k and v rows ([n, kv_heads · head_dim] each) into a layer's cache at positions 0..n,
    /// for tests that build a cache without running RoPE.
    pub fn write_cache(&self, cache: &mut CudaCache, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        check(
            k.len() == v.len() && k.len() % cache.row == 0 && k.len() / cache.row <= cache.capacity,
            || "write_cache: rows".into(),
        )?;
        for (src, dst) in [(k, &cache.k[layer]), (v, &cache.v[layer])] {
            let bits: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            self.htod(dst.ptr, &bits)?;
            self.synchronize()?;
        }
        Ok(())
    }

    /// The first `n` positions of a layer's k and v caches, as f32.
    pub fn read_cache(&self, cache: &CudaCache, layer: usize, n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.synchronize()?;
        let mut out = Vec::new();
        for src in [&cache.k[layer], &cache.v[layer]] {
            let mut bytes = vec![0u8; n * cache.row * 2];
            // SAFETY: the cache holds capacity ≥ n rows.
            unsafe { result::memcpy_dtoh_sync(&mut bytes, src.ptr) }
                .map_err(|e| device_err("copy the cache", e))?;
            out.push(to_f32(&bytes, DType::Bf16));
        }
        let v = out.pop().expect("two");
        Ok((out.pop().expect("two"), v))
    }

    /// Attention with a chosen kernel (the Backend op uses `Auto`).
    pub fn attention_with(
        &self,
        kernel: AttnKernel,
        q: &CudaTensor,
        cache: &CudaCache,
        layer: usize,
        step: &CudaStep,
        p: &AttnParams,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let t = step.len;
        check(q.rows() == t && q.row_len() == p.n_heads * p.head_dim, || {
            format!("attention: q {:?}", q.shape)
        })?;
        check(cache.row == p.n_kv_heads * p.head_dim && layer < cache.k.len(), || {
            "attention: cache geometry".into()
        })?;
        check(step.end() <= cache.capacity, || "attention: positions past the cache".into())?;
        let mut keep = None;
        let qb = self.as_bf16(q, &mut keep)?;
        let out = self.alloc(DType::Bf16, &[t, p.n_heads * p.head_dim], "attention output")?;
        let lse = self.alloc(DType::F32, &[p.n_heads, t], "attention log-sum-exp")?;
        let g = self.geometry(p, t, cache.capacity);
        // SAFETY: a pure function of the struct.
        let need = unsafe { ffi::scalpel_attention_workspace(&g) } as usize;
        let ws = match (&cache.workspace, need) {
            (_, 0) => std::ptr::null_mut(),
            (Some(w), n) if n * 4 <= w.bytes => w.ptr as *mut f32,
            _ => {
                return Err(Error::Invalid(format!(
                    "attention: workspace of {need} floats missing or too small"
                )));
            }
        };
        let (kc, vc) = (cache.k[layer].ptr as *const u16, cache.v[layer].ptr as *const u16);
        self.op("attention", || {
            // SAFETY: shapes checked; the workspace is large enough.
            let code = unsafe {
                match kernel {
                    AttnKernel::Auto => ffi::scalpel_attention(
                        self.cu_stream(),
                        qb.cptr(),
                        kc,
                        vc,
                        &g,
                        step.start_ptr(),
                        out.mptr(),
                        lse.mptr(),
                        ws,
                    ),
                    AttnKernel::Rows => ffi::scalpel_attention_rows(
                        self.cu_stream(),
                        qb.cptr(),
                        kc,
                        vc,
                        &g,
                        step.start_ptr(),
                        out.mptr(),
                        lse.mptr(),
                        ws,
                    ),
                    AttnKernel::TensorCores => ffi::scalpel_attention_prefill(
                        self.cu_stream(),
                        qb.cptr(),
                        kc,
                        vc,
                        &g,
                        step.start_ptr(),
                        out.mptr(),
                        lse.mptr(),
                    ),
                }
            };
            self.launched("attention", code)
        })?;
        Ok((out, lse))
    }

    fn htod<T>(&self, dst: u64, src: &[T]) -> Result<()> {
        // SAFETY: dst is a live device allocation at least size_of_val(src) bytes long.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| device_err("copy to the GPU", e))
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: both are live device allocations of at least `bytes`.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| device_err("copy on the GPU", e))
    }

    /// The bf16 form of a tensor (itself when it already is).
    fn as_bf16<'a>(&self, t: &'a CudaTensor, keep: &'a mut Option<CudaTensor>) -> Result<&'a CudaTensor> {
        if t.dtype == DType::Bf16 {
            return Ok(t);
        }
        let out = self.alloc(DType::Bf16, &t.shape, "a bf16 copy")?;
        // SAFETY: both buffers hold numel elements of their types.
        let code =
            unsafe { ffi::scalpel_cast_bf16(self.cu_stream(), t.cptr(), out.mptr(), t.numel() as i64) };
        self.launched("cast_bf16", code)?;
        Ok(keep.insert(out))
    }

    /// A bf16 copy of a tensor (for tests that feed kernels the dtype a norm would produce).
    pub fn to_bf16(&self, t: &CudaTensor) -> Result<CudaTensor> {
        if t.dtype == DType::Bf16 {
            return Ok(CudaTensor { block: t.block.clone(), dtype: t.dtype, shape: t.shape.clone() });
        }
        let mut keep = None;
        self.as_bf16(t, &mut keep)?;
        keep.ok_or_else(|| Error::Invalid("to_bf16: no copy made".into()))
    }

    /// Rows as the kernels take them: NULL for "every row", else a device list.
    fn rows_arg(&self, rows: &[usize], total: usize) -> Result<(Option<Arc<Block>>, usize)> {
        if rows.len() == total && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok((None, total));
        }
        check(rows.iter().all(|&r| r < total), || format!("rows {rows:?} outside {total} rows"))?;
        let list: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let block = self.memory.alloc(list.len() * 4, true, "a row list")?;
        self.htod(block.ptr, &list)?;
        Ok((Some(block), rows.len()))
    }

    fn geometry(&self, p: &AttnParams, t: usize, capacity: usize) -> ffi::ScalpelAttn {
        ffi::ScalpelAttn {
            n_heads: p.n_heads as i32,
            n_kv_heads: p.n_kv_heads as i32,
            head_dim: p.head_dim as i32,
            t: t as i32,
            capacity: capacity as i32,
            window: p.window.map_or(0, |w| w as i32),
            scale: p.scale,
            softcap: p.softcap.unwrap_or(0.0),
        }
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DType::Bf16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    }
}

impl Backend for Cuda {
    type Tensor = CudaTensor;
    type Cache = CudaCache;
    type Step = CudaStep;
    type Graph = CudaGraph;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn supports_graphs(&self) -> bool {
        // Synchronizing after each launch (SCALPEL_CUDA_SYNC) is not allowed inside a recording.
        self.profiler.is_none()
            && !self.sync_each
            && std::env::var("SCALPEL_CUDA_GRAPHS").map_or(true, |v| v != "0")
    }

    fn op_times(&self) -> Result<Vec<OpTime>> {
        self.synchronize()?;
        Ok(self.profiler.as_ref().map(Profiler::report).transpose()?.unwrap_or_default())
    }

    fn device_memory(&self) -> Option<(usize, usize)> {
        Some(self.memory.usage())
    }

    fn ranges(&self) -> bool {
        // SAFETY: a plain query.
        unsafe { ffi::scalpel_nvtx_enabled() != 0 }
    }

    fn push_range(&self, name: &str) {
        if let Ok(c) = CString::new(name) {
            // SAFETY: a valid C string.
            unsafe { ffi::scalpel_nvtx_push(c.as_ptr()) };
        }
    }

    fn pop_range(&self) {
        // SAFETY: paired with push_range by the caller.
        unsafe { ffi::scalpel_nvtx_pop() };
    }

    /// Matrices are stored as bf16, vectors (norm weights, RoPE frequencies) as f32.
    fn weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        check(n == data.len(), || format!("{} values for shape {shape:?}", data.len()))?;
        let what = format!("a weight of shape {shape:?}");
        if shape.len() == 1 {
            let block = self.memory.alloc(n * 4, false, &what)?;
            self.htod(block.ptr, &data)?;
            return Ok(CudaTensor { block, dtype: DType::F32, shape: shape.to_vec() });
        }
        let half: Vec<u16> = data.par_iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        drop(data);
        let block = self.memory.alloc(n * 2, false, &what)?;
        self.htod(block.ptr, &half)?;
        // The host copy is freed on return: wait until the (pageable) copy has read it.
        self.synchronize()?;
        Ok(CudaTensor { block, dtype: DType::Bf16, shape: shape.to_vec() })
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        check(n == data.len(), || format!("{} values for shape {shape:?}", data.len()))?;
        let t = self.alloc(DType::F32, shape, "an upload")?;
        self.htod(t.ptr(), data)?;
        Ok(t)
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        self.synchronize()?;
        let mut bytes = vec![0u8; t.numel() * t.dtype.size()];
        // SAFETY: the tensor's block holds at least that many bytes; the stream is idle.
        unsafe { result::memcpy_dtoh_sync(&mut bytes, t.ptr()) }
            .map_err(|e| device_err("copy from the GPU", e))?;
        Ok(to_f32(&bytes, t.dtype))
    }

    fn new_cache(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<CudaCache> {
        let row = n_kv_heads * head_dim;
        let bytes =
            capacity.checked_mul(row * 2).ok_or_else(|| Error::Invalid("KV cache size overflows".into()))?;
        let what = format!("the KV cache ({n_layers} layers × 2 × {capacity} positions × {row} bf16)");
        let mut k = Vec::with_capacity(n_layers);
        let mut v = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            k.push(self.memory.alloc(bytes, false, &what)?);
            v.push(self.memory.alloc(bytes, false, &what)?);
        }
        // Single-row attention splits the sequence; its partial results live with the cache.
        let probe = ffi::ScalpelAttn {
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: head_dim as i32,
            t: 1,
            capacity: capacity as i32,
            window: 0,
            scale: 1.0,
            softcap: 0.0,
        };
        // SAFETY: a pure function of the struct.
        let per_head = unsafe { ffi::scalpel_attention_workspace(&probe) } as usize;
        Ok(CudaCache { k, v, capacity, row, workspace: None }).and_then(|mut c| {
            if per_head > 0 {
                // Sized for up to 128 query heads; attention checks the real count.
                c.workspace =
                    Some(self.memory.alloc(per_head * 128 * 4, false, "the attention workspace")?);
            }
            Ok(c)
        })
    }

    fn cache_capacity(&self, cache: &CudaCache) -> usize {
        cache.capacity
    }

    fn step(&self, ids: &[u32], start: usize) -> Result<CudaStep> {
        check(!ids.is_empty() && start <= i32::MAX as usize, || {
            "step: no tokens or position past i32".into()
        })?;
        let mut words = Vec::with_capacity(ids.len() + 1);
        words.push(start as u32);
        words.extend_from_slice(ids);
        let buf = self.memory.alloc(words.len() * 4, true, "the step's tokens")?;
        self.htod(buf.ptr, &words)?;
        Ok(CudaStep { buf, start, len: ids.len(), staging: None })
    }

    fn fixed_step(&self, len: usize) -> Result<CudaStep> {
        let words = len + 1;
        let buf = self.memory.alloc(words * 4, false, "a recorded step's tokens")?;
        // SAFETY: page-locked allocation owned by the returned Pinned.
        let ptr =
            unsafe { result::malloc_host(words * 4, 0) }.map_err(|e| device_err("pinned host memory", e))?;
        // SAFETY: the allocation holds `words` u32 values; zero them before first use.
        unsafe { std::ptr::write_bytes(ptr as *mut u32, 0, words) };
        Ok(CudaStep { buf, start: 0, len, staging: Some(Pinned { ptr: ptr as *mut u32, words }) })
    }

    fn set_step(&self, step: &mut CudaStep, ids: &[u32], start: usize) -> Result<()> {
        let staging = step
            .staging
            .as_mut()
            .ok_or_else(|| Error::Invalid("set_step on a step that is not fixed".into()))?;
        check(ids.len() == step.len, || format!("set_step: {} ids for a step of {}", ids.len(), step.len))?;
        // The previous replay may still read the staging: wait for it.
        self.synchronize()?;
        // SAFETY: the staging holds `words` = len + 1 values; no copy reads it now.
        let words = unsafe { std::slice::from_raw_parts_mut(staging.ptr, staging.words) };
        words[0] = start as u32;
        words[1..].copy_from_slice(ids);
        step.start = start;
        Ok(())
    }

    fn upload_step(&self, step: &CudaStep) -> Result<()> {
        let staging = step
            .staging
            .as_ref()
            .ok_or_else(|| Error::Invalid("upload_step on a step that is not fixed".into()))?;
        // SAFETY: pinned staging of `words` values into a device buffer of the same size.
        let src = unsafe { std::slice::from_raw_parts(staging.ptr, staging.words) };
        self.htod(step.buf.ptr, src)
    }

    fn begin_capture(&self) -> Result<()> {
        self.synchronize()?;
        self.stream
            .begin_capture(drv::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| device_err("cannot start recording a CUDA graph", e))
    }

    fn end_capture(&self) -> Result<CudaGraph> {
        self.stream
            .end_capture(drv::CUgraphInstantiate_flags(0))
            .map_err(|e| device_err("cannot finish recording the CUDA graph", e))?
            .ok_or_else(|| Error::Device("recording the CUDA graph produced nothing".into()))
    }

    fn replay(&self, graph: &CudaGraph) -> Result<()> {
        graph.launch().map_err(|e| device_err("cannot replay the CUDA graph", e))?;
        *self.last_kernel.lock().expect("lock") = "a replayed decode graph";
        Ok(())
    }

    fn sample(&self, logits: &CudaTensor, params: &SamplingParams, u: f64) -> Result<Option<u32>> {
        if params.repetition_penalty.is_some() || logits.dtype != DType::F32 || logits.rows() != 1 {
            return Ok(None);
        }
        let p = ffi::ScalpelSampling {
            temperature: params.temperature,
            top_k: params.top_k.map_or(0, |k| k.min(i32::MAX as usize) as i32),
            top_p: params.top_p.unwrap_or(1.0),
            min_p: params.min_p.unwrap_or(0.0),
        };
        let vocab = logits.numel() as i32;
        self.op("sample", || {
            // SAFETY: logits holds `vocab` f32, the token buffer one u32.
            let code = unsafe {
                ffi::scalpel_sample(self.cu_stream(), logits.cptr(), vocab, &p, u, self.token.ptr as *mut u32)
            };
            self.launched("sample", code)
        })?;
        self.synchronize()?;
        let mut out = [0u32];
        // SAFETY: a 4-byte device buffer; the stream is idle.
        unsafe { result::memcpy_dtoh_sync(&mut out, self.token.ptr) }
            .map_err(|e| device_err("copy the token", e))?;
        if out[0] == u32::MAX {
            return Err(Error::Invalid("the logits contain NaN: the forward pass produced garbage".into()));
        }
        Ok(Some(out[0]))
    }

    fn embed(&self, table: &CudaTensor, step: &CudaStep, scale: Option<f32>) -> Result<CudaTensor> {
        check(table.dtype == DType::Bf16 && table.shape.len() == 2, || {
            "embed: the table must be a bf16 matrix".into()
        })?;
        let d = table.row_len();
        let out = self.alloc(DType::F32, &[step.len, d], "embeddings")?;
        self.op("embed", || {
            // SAFETY: ids has step.len entries below the vocabulary (checked where they came from).
            let code = unsafe {
                ffi::scalpel_embed(
                    self.cu_stream(),
                    table.cptr(),
                    step.ids_ptr(),
                    step.len as i32,
                    d as i32,
                    scale.unwrap_or(1.0),
                    out.mptr(),
                )
            };
            self.launched("embed", code)
        })?;
        Ok(out)
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32, kind: NormKind) -> Result<CudaTensor> {
        let n = w.numel();
        check(w.dtype == DType::F32 && n > 0 && x.numel() % n == 0, || {
            format!("rms_norm: {:?} in groups of {n}", x.shape)
        })?;
        let out = self.alloc(DType::Bf16, &x.shape, "a normed activation")?;
        self.op("rms_norm", || {
            // SAFETY: x and out hold numel elements; w holds n f32.
            let code = unsafe {
                ffi::scalpel_rms_norm(
                    self.cu_stream(),
                    x.cptr(),
                    x.dtype.ffi(),
                    w.cptr(),
                    (x.numel() / n) as i32,
                    n as i32,
                    eps,
                    (kind == NormKind::OnePlus) as i32,
                    out.mptr(),
                )
            };
            self.launched("rms_norm", code)
        })?;
        Ok(out)
    }

    fn add_rms_norm(
        &self,
        x: &mut CudaTensor,
        delta: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        kind: NormKind,
    ) -> Result<CudaTensor> {
        let n = w.numel();
        check(x.dtype == DType::F32 && x.shape == delta.shape && x.row_len() == n, || {
            format!("add_rms_norm: {:?} + {:?} with a norm of {n}", x.shape, delta.shape)
        })?;
        let out = self.alloc(DType::Bf16, &x.shape, "a normed activation")?;
        self.op("add_rms_norm", || {
            // SAFETY: shapes checked above.
            let code = unsafe {
                ffi::scalpel_add_rms_norm(
                    self.cu_stream(),
                    x.mptr(),
                    delta.cptr(),
                    delta.dtype.ffi(),
                    w.cptr(),
                    x.rows() as i32,
                    n as i32,
                    eps,
                    (kind == NormKind::OnePlus) as i32,
                    out.mptr(),
                )
            };
            self.launched("add_rms_norm", code)
        })?;
        Ok(out)
    }

    fn matmul(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let (m, k) = (x.rows(), x.row_len());
        let n = w.shape[0];
        check(w.dtype == DType::Bf16 && w.row_len() == k, || {
            format!("matmul: [{m}, {k}] times [{n}, {}]ᵀ", w.row_len())
        })?;
        let mut keep = None;
        let xb = self.as_bf16(x, &mut keep)?;
        let out = self.alloc(DType::F32, &[m, n], "a matrix product")?;
        self.op("matmul", || {
            let (alpha, beta) = (1.0f32, 0.0f32);
            // Row-major out[m, n] = x[m, k] · w[n, k]ᵀ is column-major outᵀ[n, m] = w · xᵀ:
            // A = w read transposed (lda k), B = x (ldb k), C ldc n.
            // SAFETY: pointers and leading dimensions describe the three buffers exactly.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *self.blas.handle(),
                    blas::cublasOperation_t::CUBLAS_OP_T,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    n as i32,
                    m as i32,
                    k as i32,
                    &alpha as *const f32 as *const _,
                    w.ptr() as *const _,
                    blas::cudaDataType_t::CUDA_R_16BF,
                    k as i32,
                    xb.ptr() as *const _,
                    blas::cudaDataType_t::CUDA_R_16BF,
                    k as i32,
                    &beta as *const f32 as *const _,
                    out.ptr() as *mut _,
                    blas::cudaDataType_t::CUDA_R_32F,
                    n as i32,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| Error::Device(format!("cuBLAS GemmEx [{m}×{k}]·[{n}×{k}]ᵀ failed: {e:?}")))?;
            *self.last_kernel.lock().expect("lock") = "cuBLAS GemmEx";
            if self.sync_each {
                self.synchronize()?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn add_assign(&self, x: &mut CudaTensor, y: &CudaTensor) -> Result<()> {
        check(x.dtype == DType::F32 && x.shape == y.shape, || {
            format!("add: {:?} and {:?}", x.shape, y.shape)
        })?;
        self.op("add", || {
            // SAFETY: equal shapes.
            let code = unsafe {
                ffi::scalpel_add(self.cu_stream(), x.mptr(), y.cptr(), y.dtype.ffi(), x.numel() as i64)
            };
            self.launched("add", code)
        })
    }

    fn rope_kv(
        &self,
        q: &mut CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        cache: &mut CudaCache,
        layer: usize,
        step: &CudaStep,
        head_dim: usize,
        inv_freq: &CudaTensor,
    ) -> Result<()> {
        let t = step.len;
        check(layer < cache.k.len(), || format!("rope_kv: layer {layer} past the cache"))?;
        check(k.row_len() == cache.row && v.shape == k.shape && q.rows() == t && k.rows() == t, || {
            format!("rope_kv: q {:?}, k {:?}, v {:?} for {t} positions", q.shape, k.shape, v.shape)
        })?;
        check(step.end() <= cache.capacity, || {
            format!("rope_kv: positions up to {} past the cache of {}", step.end(), cache.capacity)
        })?;
        check(inv_freq.numel() == head_dim / 2 && inv_freq.dtype == DType::F32, || {
            "rope_kv: frequencies".into()
        })?;
        let g = ffi::ScalpelAttn {
            n_heads: (q.row_len() / head_dim) as i32,
            n_kv_heads: (cache.row / head_dim) as i32,
            head_dim: head_dim as i32,
            t: t as i32,
            capacity: cache.capacity as i32,
            window: 0,
            scale: 1.0,
            softcap: 0.0,
        };
        self.op("rope_kv", || {
            // SAFETY: shapes checked; the cache holds `capacity` rows.
            let code = unsafe {
                ffi::scalpel_rope_kv(
                    self.cu_stream(),
                    q.mptr(),
                    q.dtype.ffi(),
                    k.cptr(),
                    k.dtype.ffi(),
                    v.cptr(),
                    v.dtype.ffi(),
                    cache.k[layer].ptr as *mut u16,
                    cache.v[layer].ptr as *mut u16,
                    &g,
                    step.start_ptr(),
                    inv_freq.cptr(),
                )
            };
            self.launched("rope_kv", code)
        })
    }

    fn attention(
        &self,
        q: &CudaTensor,
        cache: &CudaCache,
        layer: usize,
        step: &CudaStep,
        p: &AttnParams,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.attention_with(AttnKernel::Auto, q, cache, layer, step, p)
    }

    fn attn_probs(
        &self,
        q: &CudaTensor,
        cache: &CudaCache,
        layer: usize,
        step: &CudaStep,
        p: &AttnParams,
        lse: &CudaTensor,
    ) -> Result<CudaTensor> {
        let t = step.len;
        let s = step.end();
        check(lse.shape == [p.n_heads, t] && q.rows() == t, || format!("attn_probs: lse {:?}", lse.shape))?;
        let mut keep = None;
        let qb = self.as_bf16(q, &mut keep)?;
        let out = self.alloc(DType::F32, &[p.n_heads, t, s], "attention probabilities")?;
        let g = self.geometry(p, t, cache.capacity);
        self.op("attn_probs", || {
            // SAFETY: out holds heads × t × s floats.
            let code = unsafe {
                ffi::scalpel_attn_probs(
                    self.cu_stream(),
                    qb.cptr(),
                    cache.k[layer].ptr as *const u16,
                    &g,
                    step.start_ptr(),
                    lse.cptr(),
                    s as i32,
                    out.mptr(),
                )
            };
            self.launched("attn_probs", code)
        })?;
        Ok(out)
    }

    fn glu(&self, gate: &CudaTensor, up: &CudaTensor, act: Activation) -> Result<CudaTensor> {
        check(gate.shape == up.shape && gate.dtype == DType::F32 && up.dtype == DType::F32, || {
            format!("glu: {:?} and {:?}", gate.shape, up.shape)
        })?;
        let out = self.alloc(DType::Bf16, &gate.shape, "MLP activations")?;
        let a = match act {
            Activation::Silu => ffi::ScalpelAct::SCALPEL_SILU,
            Activation::GeluTanh => ffi::ScalpelAct::SCALPEL_GELU_TANH,
        };
        self.op("glu", || {
            // SAFETY: equal shapes.
            let code = unsafe {
                ffi::scalpel_glu(self.cu_stream(), gate.cptr(), up.cptr(), a, out.mptr(), gate.numel() as i64)
            };
            self.launched("glu", code)
        })?;
        Ok(out)
    }

    fn softcap(&self, x: &mut CudaTensor, cap: f32) -> Result<()> {
        check(x.dtype == DType::F32, || "softcap: f32 only".into())?;
        self.op("softcap", || {
            // SAFETY: numel elements.
            let code = unsafe { ffi::scalpel_softcap(self.cu_stream(), x.mptr(), x.numel() as i64, cap) };
            self.launched("softcap", code)
        })
    }

    fn last_row(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let (r, n) = (x.rows(), x.row_len());
        check(r > 0, || "last_row of an empty tensor".into())?;
        let mut shape = x.shape.clone();
        shape[0] = 1;
        let out = self.alloc(x.dtype, &shape, "a row")?;
        let bytes = n * x.dtype.size();
        self.dtod(out.ptr(), x.ptr() + ((r - 1) * bytes) as u64, bytes)?;
        Ok(out)
    }

    fn cosine_rows(&self, table: &CudaTensor, v: &CudaTensor) -> Result<CudaTensor> {
        let n = table.row_len();
        check(table.dtype == DType::Bf16 && v.numel() == n && v.dtype == DType::F32, || {
            "cosine_rows: shapes".into()
        })?;
        let out = self.alloc(DType::F32, &[table.rows()], "cosine similarities")?;
        self.op("cosine_rows", || {
            // SAFETY: shapes checked.
            let code = unsafe {
                ffi::scalpel_cosine_rows(
                    self.cu_stream(),
                    table.cptr(),
                    v.cptr(),
                    table.rows() as i32,
                    n as i32,
                    out.mptr(),
                )
            };
            self.launched("cosine_rows", code)
        })?;
        Ok(out)
    }

    fn add_rows(&self, x: &mut CudaTensor, v: &CudaTensor, scale: f32, rows: &[usize]) -> Result<()> {
        let n = x.row_len();
        check(v.numel() == n && v.dtype == DType::F32, || {
            format!("add: vector of {} for rows of {n}", v.numel())
        })?;
        if rows.is_empty() {
            return Ok(());
        }
        let (list, count) = self.rows_arg(rows, x.rows())?;
        self.op("add_rows", || {
            let rp = list.as_ref().map_or(std::ptr::null(), |b| b.ptr as *const i32);
            // SAFETY: row indices checked against x.
            let code = unsafe {
                ffi::scalpel_add_rows(
                    self.cu_stream(),
                    x.mptr(),
                    x.dtype.ffi(),
                    v.cptr(),
                    scale,
                    rp,
                    count as i32,
                    n as i32,
                )
            };
            self.launched("add_rows", code)
        })
    }

    fn set_row(&self, x: &mut CudaTensor, row: usize, values: &CudaTensor) -> Result<()> {
        let n = x.row_len();
        check(values.numel() == n && row < x.rows() && values.dtype == DType::F32, || {
            format!("replace: row {row} of {} with {} values", x.rows(), values.numel())
        })?;
        self.op("set_row", || {
            // SAFETY: row < rows, n values.
            let code = unsafe {
                ffi::scalpel_set_row(
                    self.cu_stream(),
                    x.mptr(),
                    x.dtype.ffi(),
                    values.cptr(),
                    row as i32,
                    n as i32,
                )
            };
            self.launched("set_row", code)
        })
    }

    fn ablate_rows(&self, x: &mut CudaTensor, u: &CudaTensor, rows: &[usize]) -> Result<()> {
        let n = x.row_len();
        check(u.numel() == n && u.dtype == DType::F32, || {
            format!("ablate: direction of {} for rows of {n}", u.numel())
        })?;
        if rows.is_empty() {
            return Ok(());
        }
        let (list, count) = self.rows_arg(rows, x.rows())?;
        self.op("ablate_rows", || {
            let rp = list.as_ref().map_or(std::ptr::null(), |b| b.ptr as *const i32);
            // SAFETY: row indices checked against x.
            let code = unsafe {
                ffi::scalpel_ablate_rows(
                    self.cu_stream(),
                    x.mptr(),
                    x.dtype.ffi(),
                    u.cptr(),
                    rp,
                    count as i32,
                    n as i32,
                )
            };
            self.launched("ablate_rows", code)
        })
    }
}
