//! The device layer on a real GPU: the NVIDIA driver through cudarc (dynamically loaded, so a
//! binary without a GPU still starts), one stream, cuBLAS with a fixed workspace (so nothing
//! allocates while a graph is recorded), and the nvcc-compiled kernels.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
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

pub struct Driver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    workspace: u64,
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

    /// Opens device `ordinal`: a context, one stream, cuBLAS with a fixed workspace.
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
        // SAFETY: as above.
        if !unsafe { blas::is_culib_present() } {
            return Err(Error::Device(
                "cuBLAS (libcublas.so) was not found: install the CUDA toolkit or the nvidia-cublas wheel and \
                 put its lib directory on LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| err("cannot create a CUDA context", e))?;
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
        let blas_handle = CudaBlas::new(stream.clone()).map_err(|e| err("cannot start cuBLAS", e))?;
        // SAFETY: plain device allocation, freed in Drop.
        let workspace = unsafe { result::malloc_sync(CUBLAS_WORKSPACE) }
            .map_err(|e| err("cannot allocate the cuBLAS workspace", e))?;
        // SAFETY: the workspace outlives the handle (both owned here, freed after it); a fixed
        // workspace keeps cuBLAS from allocating while a graph is recorded.
        unsafe {
            blas::cublasSetWorkspace_v2(
                *blas_handle.handle(),
                workspace as *mut std::ffi::c_void,
                CUBLAS_WORKSPACE,
            )
            .result()
            .map_err(|e| err("cublasSetWorkspace", e))?;
        }
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        Ok(Driver { ctx, stream, blas: blas_handle, workspace, name })
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
        let _ = self.stream.synchronize();
        // SAFETY: allocated in new(); the stream is idle.
        let _ = unsafe { result::free_sync(self.workspace) };
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

    fn alloc(&self, bytes: usize) -> std::result::Result<u64, AllocError> {
        // SAFETY: plain device allocation; the caller owns the pointer.
        unsafe { result::malloc_sync(bytes) }.map_err(|e| match e.0 {
            drv::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => AllocError::OutOfMemory(e.to_string()),
            _ => AllocError::Other(err("cuMemAlloc", e)),
        })
    }

    unsafe fn free(&self, ptr: u64) {
        // SAFETY: the caller's contract.
        let _ = unsafe { result::free_sync(ptr) };
    }

    fn mem_info(&self) -> Result<(usize, usize)> {
        result::mem_get_info().map_err(|e| err("cuMemGetInfo", e))
    }

    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        // SAFETY: the caller's contract; a pageable source is staged before this returns.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| err("copy to the GPU", e))
    }

    unsafe fn htod_pinned(&self, dst: u64, src: *const u8, len: usize) -> Result<()> {
        // SAFETY: the caller's contract: src is page-locked and lives until the copy has run.
        let src = unsafe { std::slice::from_raw_parts(src, len) };
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| err("copy to the GPU", e))
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller's contract.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| err("copy on the GPU", e))
    }

    unsafe fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
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
        // SAFETY: the caller's contract.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
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
        // SAFETY: page-locked allocation owned by the caller.
        let p = unsafe { result::malloc_host(bytes, 0) }.map_err(|e| err("pinned host memory", e))?;
        Ok(p as *mut u8)
    }

    unsafe fn host_free(&self, ptr: *mut u8, _bytes: usize) {
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
        let g = graph
            .0
            .downcast_ref::<CudaGraph>()
            .ok_or_else(|| Error::Invalid("replay: a graph of another device".into()))?;
        g.launch().map_err(|e| err("cannot replay the CUDA graph", e))
    }
}
