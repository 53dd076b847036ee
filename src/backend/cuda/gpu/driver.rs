//! The device layer on a real GPU: the NVIDIA driver through cudarc (dynamically loaded, so a
//! binary without a GPU still starts), one stream, cuBLAS with a fixed workspace (so nothing
//! allocates while a graph is recorded), and the nvcc-compiled kernels.
//!
//! A driver context is current per thread, and the caller may be any thread (Python's, a
//! server's engine thread): every call here makes the device's context current first
//! (`bind`, a cuCtxGetCurrent when it already is), and the backend binds before each kernel
//! launch. There is one context per device and process, the primary context, retained once and
//! never released: the kernels' runtime state (loaded modules, each kernel's shared-memory
//! opt-in) lives in it, and a second `Driver` must find it as the first left it.

use std::sync::{Arc, Mutex};

use cudarc::cublas::sys as blas;
use cudarc::driver::sys as drv;
use cudarc::driver::{CudaContext, CudaEvent, CudaGraph, CudaStream, result};

use super::{AllocError, DType, Gemm, Gpu, Graph, Mark, Transpose};
use crate::backend::cuda::ffi::{self, Kernels, ScalpelStream};
use crate::error::{Error, Result};

const CUBLAS_WORKSPACE: usize = 32 << 20;

/// A driver or cuBLAS failure, keeping the library's own error as the source.
fn err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::DeviceCall { what: what.to_string(), source: Box::new(e) }
}

/// The process's context of device `ordinal`, made on first use and kept for the process's life.
fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    static CONTEXTS: Mutex<Vec<(usize, Arc<CudaContext>)>> = Mutex::new(Vec::new());
    let mut all = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = all.iter().find(|(o, _)| *o == ordinal) {
        return Ok(c.clone());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| err("cannot create a CUDA context", e))?;
    all.push((ordinal, ctx.clone()));
    Ok(ctx)
}

/// A cuBLAS handle on the stream with its fixed workspace, made at the first product: a program
/// that needs no GEMM (most kernel tests) runs where libcublas is missing or broken.
struct Blas {
    handle: blas::cublasHandle_t,
    workspace: u64,
}

// SAFETY: the handle is used under the Driver's mutex, on the one stream.
unsafe impl Send for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        // Errors are ignored: after a fault the context is gone and so is the handle (cudarc's
        // own CudaBlas unwraps here, and a panic in drop while unwinding aborts the process).
        // SAFETY: made in Driver::blas; the stream was synchronized by Driver's drop.
        let _ = unsafe { cudarc::cublas::result::destroy_handle(self.handle) };
        let _ = unsafe { result::free_sync(self.workspace) };
    }
}

pub struct Driver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Mutex<Option<Blas>>,
    name: String,
}

impl Driver {
    /// Whether a CUDA driver and at least one device are present.
    pub fn available() -> bool {
        // SAFETY: only probes for the shared library.
        if !unsafe { drv::is_culib_present() } {
            return false;
        }
        CudaContext::device_count().is_ok_and(|n| n > 0)
    }

    /// Opens device `ordinal`: its context (shared by the process) and a stream of its own.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes for the shared libraries.
        if !unsafe { drv::is_culib_present() } {
            return Err(Error::Device(
                "no CUDA driver: libcuda.so was not found (is the NVIDIA driver installed?)".into(),
            ));
        }
        let n = CudaContext::device_count().map_err(|e| err("cannot query CUDA devices", e))?;
        if n <= 0 {
            return Err(Error::Device("the CUDA driver reports no GPU".into()));
        }
        if ordinal >= n as usize {
            return Err(Error::Device(format!("GPU {ordinal} requested but only {n} present")));
        }
        let ctx = context(ordinal)?;
        ctx.bind_to_thread().map_err(|e| err("cannot make the CUDA context current", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| err("compute capability", e))?;
        if major < 8 {
            return Err(Error::Device(format!(
                "scalpel's kernels need compute capability 8.0 or newer (bf16 tensor cores); this GPU is {major}.{minor}"
            )));
        }
        // One stream for everything: cross-stream event tracking would only cost time, and
        // recording a graph needs a stream other than the legacy default one.
        // SAFETY: every buffer is used on this one stream only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| err("cannot create a stream", e))?;
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        Ok(Driver { ctx, stream, blas: Mutex::new(None), name })
    }

    /// The cuBLAS handle, made now if this is the first product.
    fn blas(&self) -> Result<std::sync::MutexGuard<'_, Option<Blas>>> {
        let mut guard = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            // SAFETY: only probes for the shared library.
            if !unsafe { blas::is_culib_present() } {
                return Err(Error::Device(
                    "cuBLAS (libcublas.so) was not found: install the CUDA toolkit or the nvidia-cublas wheel and \
                     put its lib directory on LD_LIBRARY_PATH"
                        .into(),
                ));
            }
            self.bind()?;
            let handle =
                cudarc::cublas::result::create_handle().map_err(|e| err("cannot start cuBLAS", e))?;
            // SAFETY: plain device allocation, freed with the handle.
            let workspace = match unsafe { result::malloc_sync(CUBLAS_WORKSPACE) } {
                Ok(w) => w,
                Err(e) => {
                    let _ = unsafe { cudarc::cublas::result::destroy_handle(handle) };
                    return Err(err("cannot allocate the cuBLAS workspace", e));
                }
            };
            let made = Blas { handle, workspace };
            // SAFETY: the handle is ours; the stream outlives it (Driver drops blas first); a fixed
            // workspace keeps cuBLAS from allocating while a graph is recorded.
            unsafe {
                cudarc::cublas::result::set_stream(handle, self.stream.cu_stream() as _)
                    .map_err(|e| err("cublasSetStream", e))?;
                blas::cublasSetWorkspace_v2(handle, workspace as *mut std::ffi::c_void, CUBLAS_WORKSPACE)
                    .result()
                    .map_err(|e| err("cublasSetWorkspace", e))?;
            }
            *guard = Some(made);
        }
        Ok(guard)
    }

    fn timing_event(&self) -> Result<CudaEvent> {
        // cudarc's default (None) disables timing, and elapsed_ms on such events fails.
        self.ctx
            .new_event(Some(drv::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| err("cannot create a CUDA event", e))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.bind();
        let _ = self.stream.synchronize();
        // Before the stream it was set to goes.
        drop(self.blas.get_mut().map(Option::take));
    }
}

fn data_type(t: DType) -> blas::cudaDataType_t {
    match t {
        DType::F32 => blas::cudaDataType_t::CUDA_R_32F,
        DType::Bf16 => blas::cudaDataType_t::CUDA_R_16BF,
    }
}

fn op(t: Transpose) -> blas::cublasOperation_t {
    match t {
        Transpose::N => blas::cublasOperation_t::CUBLAS_OP_N,
        Transpose::T => blas::cublasOperation_t::CUBLAS_OP_T,
    }
}

impl Gpu for Driver {
    fn describe(&self) -> String {
        let (free, total) = self.mem_info().unwrap_or((0, 0));
        format!(
            "{} ({:.1} GiB free of {:.1} GiB)",
            self.name,
            free as f64 / 1073741824.0,
            total as f64 / 1073741824.0
        )
    }

    fn kernels(&self) -> &'static Kernels {
        &ffi::REAL
    }

    fn stream(&self) -> ScalpelStream {
        self.stream.cu_stream() as ScalpelStream
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| err("cannot make the CUDA context current", e))
    }

    fn alloc(&self, bytes: usize) -> std::result::Result<u64, AllocError> {
        self.bind().map_err(AllocError::Other)?;
        // SAFETY: plain device allocation; the caller owns the pointer.
        unsafe { result::malloc_sync(bytes) }.map_err(|e| match e.0 {
            drv::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => AllocError::OutOfMemory(e.to_string()),
            _ => AllocError::Other(err("cuMemAlloc", e)),
        })
    }

    unsafe fn free(&self, ptr: u64) {
        let _ = self.bind();
        // SAFETY: the caller's contract.
        let _ = unsafe { result::free_sync(ptr) };
    }

    fn mem_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        result::mem_get_info().map_err(|e| err("cuMemGetInfo", e))
    }

    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller's contract; a pageable source is staged before this returns.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| err("copy to the GPU", e))
    }

    unsafe fn htod_pinned(&self, dst: u64, src: *const u8, len: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller's contract: src is page-locked and lives until the copy has run.
        let src = unsafe { std::slice::from_raw_parts(src, len) };
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| err("copy to the GPU", e))
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller's contract.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| err("copy on the GPU", e))
    }

    unsafe fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller's contract.
        unsafe { result::memset_d8_async(dst, byte, bytes, self.stream.cu_stream()) }
            .map_err(|e| err("memset", e))
    }

    unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        self.synchronize()?;
        // SAFETY: the caller's contract; the stream is idle.
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(|e| err("copy from the GPU", e))
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| err("CUDA error", e))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        let (alpha, beta) = (g.alpha, g.beta);
        let blas = self.blas()?;
        let handle = blas.as_ref().expect("made by blas()").handle;
        // SAFETY: the caller's contract.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                handle,
                op(g.transa),
                op(g.transb),
                g.m,
                g.n,
                g.k,
                &alpha as *const f32 as *const _,
                g.a as *const _,
                data_type(g.a_type),
                g.lda,
                g.b as *const _,
                data_type(g.b_type),
                g.ldb,
                &beta as *const f32 as *const _,
                g.c as *mut _,
                data_type(g.c_type),
                g.ldc,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| err(&format!("cuBLAS GemmEx m={} n={} k={}", g.m, g.n, g.k), e))
    }

    fn host_alloc(&self, bytes: usize) -> Result<*mut u8> {
        self.bind()?;
        // SAFETY: page-locked allocation owned by the caller.
        let p = unsafe { result::malloc_host(bytes, 0) }.map_err(|e| err("pinned host memory", e))?;
        Ok(p as *mut u8)
    }

    unsafe fn host_free(&self, ptr: *mut u8, _bytes: usize) {
        let _ = self.bind();
        // SAFETY: the caller's contract.
        let _ = unsafe { result::free_host(ptr as *mut std::ffi::c_void) };
    }

    fn mark(&self) -> Result<Mark> {
        let e = self.timing_event()?;
        e.record(&self.stream).map_err(|e| err("cannot record a CUDA event", e))?;
        Ok(Mark(Box::new(e)))
    }

    fn elapsed_ms(&self, start: &Mark, end: &Mark) -> Result<f32> {
        let (a, b) = match (start.0.downcast_ref::<CudaEvent>(), end.0.downcast_ref::<CudaEvent>()) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(Error::Invalid("elapsed_ms: marks of another device".into())),
        };
        self.synchronize()?;
        a.elapsed_ms(b).map_err(|e| err("CUDA event timing", e))
    }

    fn begin_capture(&self) -> Result<()> {
        self.synchronize()?;
        // cuBLAS is made before a recording, never inside one (it allocates); without it the
        // recording still works for steps with no GEMM, and a GEMM reports why it cannot run.
        drop(self.blas());
        self.stream
            .begin_capture(drv::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| err("cannot start recording a CUDA graph", e))
    }

    fn end_capture(&self) -> Result<Graph> {
        let g: CudaGraph = self
            .stream
            .end_capture(drv::CUgraphInstantiate_flags(0))
            .map_err(|e| err("cannot finish recording the CUDA graph", e))?
            .ok_or_else(|| Error::Device("recording the CUDA graph produced nothing".into()))?;
        Ok(Graph(Box::new(g)))
    }

    fn replay(&self, graph: &Graph) -> Result<()> {
        self.bind()?;
        let g = graph
            .0
            .downcast_ref::<CudaGraph>()
            .ok_or_else(|| Error::Invalid("replay: a graph of another device".into()))?;
        g.launch().map_err(|e| err("cannot replay the CUDA graph", e))
    }
}
