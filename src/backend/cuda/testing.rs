//! Hooks for the kernel tests and the GPU benchmarks: filling and reading a KV cache directly,
//! bf16 copies, and timing on the stream.

use std::ffi::c_int;

use half::bf16;

use super::Cuda;
use super::ffi::ScalpelStream;
use super::gpu::{DType, Gpu};
use super::ops::check;
use super::tensor::{CudaCache, CudaTensor, to_f32};
use crate::error::{Error, Result};

impl CudaTensor {
    /// The tensor's device address (tests launch their own kernels on it).
    pub fn device_ptr(&self) -> u64 {
        self.block.ptr
    }
}

impl Cuda {
    /// Launches through a launcher of the caller's (the mock's self-test kernels) on this
    /// backend's stream, by the path every op takes.
    pub fn launch_raw(&self, name: &'static str, f: impl FnOnce(ScalpelStream) -> c_int) -> Result<()> {
        self.launch(name, |_, stream| f(stream))
    }

    /// The device layer itself, for tests of its contract (copies, GEMM arguments, capture).
    pub fn gpu(&self) -> &dyn Gpu {
        self.gpu.as_ref()
    }

    /// Writes k and v rows ([n, kv_heads · head_dim] each) into a layer's pool at slots 0..n
    /// (a single sequence's positions 0..n), for tests that build a cache without running RoPE.
    pub fn write_cache(&self, cache: &mut CudaCache, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        check(
            k.len() == v.len()
                && k.len().is_multiple_of(cache.row)
                && k.len() / cache.row <= cache.pages * crate::backend::PAGE,
            || "write_cache: rows".into(),
        )?;
        for (src, dst) in [(k, &cache.k[layer]), (v, &cache.v[layer])] {
            let bits: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            self.htod(dst.ptr, &bits)?;
        }
        Ok(())
    }

    /// The first `n` slots of a layer's k and v pools, as f32.
    pub fn read_cache(&self, cache: &CudaCache, layer: usize, n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut out = Vec::new();
        for src in [&cache.k[layer], &cache.v[layer]] {
            let mut bytes = vec![0u8; n * cache.row * 2];
            self.dtoh(&mut bytes, src.ptr)?;
            out.push(to_f32(&bytes, DType::Bf16));
        }
        let v = out.pop().expect("two");
        Ok((out.pop().expect("two"), v))
    }

    /// A bf16 copy of a tensor (for tests that feed kernels the dtype a norm would produce).
    pub fn to_bf16(&self, t: &CudaTensor) -> Result<CudaTensor> {
        if t.dtype == DType::Bf16 {
            return Ok(CudaTensor::dense(t.block.clone(), t.dtype, &t.shape));
        }
        let mut keep = None;
        self.as_bf16(t, &mut keep)?;
        keep.ok_or_else(|| Error::Invalid("to_bf16: no copy made".into()))
    }

    /// Milliseconds per call of `f`, from marks on the stream around `iters` calls after 3 warm-up
    /// calls (on the mock device: CPU time, no GPU figure).
    pub fn time_ms(&self, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        self.synchronize()?;
        let a = self.gpu.mark()?;
        for _ in 0..iters {
            f()?;
        }
        let b = self.gpu.mark()?;
        self.synchronize()?;
        Ok(self.gpu.elapsed_ms(&a, &b)? as f64 / iters.max(1) as f64)
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read plus bytes written), the ceiling for
    /// memory-bound kernels, measured on two buffers of `bytes`.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64> {
        let a = self.memory.alloc(bytes, false, "the bandwidth probe")?;
        let b = self.memory.alloc(bytes, false, "the bandwidth probe")?;
        // SAFETY: both blocks hold `bytes`.
        unsafe { self.gpu.memset(a.ptr, 0x3c, bytes)? };
        let ms = self.time_ms(20, || self.dtod(b.ptr, a.ptr, bytes))?;
        Ok(2.0 * bytes as f64 / (ms * 1e-3) / 1e9)
    }
}
