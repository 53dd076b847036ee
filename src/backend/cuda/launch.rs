//! The one path every op and kernel launch takes: an NVTX range named after the op, a timing
//! measurement when profiling, the launcher's return code checked and turned into an error that
//! names the kernel, what the launcher queued collected (the mock's launches), the kernel
//! remembered for fault reports, and a synchronization after it under SCALPEL_CUDA_SYNC=1.

use std::ffi::{CStr, c_int};

use super::Cuda;
use super::ffi::{Kernels, ScalpelStream};
use super::tensor::CudaTensor;
use crate::backend::Device;
use crate::error::{Error, Result};

impl Cuda {
    /// Runs `f` as the op `name`: inside its NVTX range and, when profiling, its measurement.
    pub(super) fn op<T>(&self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _range = self.range(|| name.to_string());
        let start = match &self.profiler {
            Some(_) => Some(self.gpu.mark()?),
            None => None,
        };
        let out = f()?;
        if let (Some(p), Some(start)) = (&self.profiler, start) {
            p.record(name, start, self.gpu.mark()?);
        }
        Ok(out)
    }

    /// Launches one kernel through its launcher (the op `name`).
    pub(super) fn launch(
        &self,
        name: &'static str,
        f: impl FnOnce(&Kernels, ScalpelStream) -> c_int,
    ) -> Result<()> {
        self.op(name, || {
            // The launcher runs on whatever thread called (Python's, a server's): the context
            // must be current on it.
            self.gpu.bind()?;
            let code = f(self.k, self.gpu.stream());
            self.launched(name, code)
        })
    }

    /// Launches one kernel writing into a new tensor, and returns it.
    pub(super) fn launch_into(
        &self,
        name: &'static str,
        out: CudaTensor,
        f: impl FnOnce(&Kernels, ScalpelStream, &CudaTensor) -> c_int,
    ) -> Result<CudaTensor> {
        self.launch(name, |k, s| f(k, s, &out))?;
        Ok(out)
    }

    /// After a launcher (or a cuBLAS call, code 0): checks the code, collects what was queued,
    /// remembers the kernel, synchronizes when asked to.
    pub(super) fn launched(&self, name: &str, code: c_int) -> Result<()> {
        self.gpu.launched()?;
        name.clone_into(&mut self.last_kernel.lock().expect("lock"));
        if code != 0 {
            return Err(Error::Device(format!(
                "kernel {name} failed to launch: {} ({code})",
                self.error_string(code)
            )));
        }
        if self.sync_each {
            self.synchronize()?;
        }
        Ok(())
    }

    fn error_string(&self, code: c_int) -> String {
        // SAFETY: cudaGetErrorString (and the mock's) returns a static C string for every code.
        unsafe { CStr::from_ptr((self.k.error_string)(code)) }.to_string_lossy().into_owned()
    }
}
