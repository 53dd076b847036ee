//! What the CUDA backend's values are on the device: tensors (a pooled block, a dtype, a shape),
//! the tokens of a forward call, and the KV cache.

use std::sync::Arc;

use super::ffi;
use super::gpu::{DType, Gpu};
use super::memory::Block;
use crate::backend::{Step, Tensor};

impl DType {
    pub(super) fn ffi(self) -> ffi::ScalpelDType {
        match self {
            DType::F32 => ffi::ScalpelDType::SCALPEL_F32,
            DType::Bf16 => ffi::ScalpelDType::SCALPEL_BF16,
        }
    }
}

pub struct CudaTensor {
    pub(super) block: Arc<Block>,
    pub dtype: DType,
    pub(super) shape: Vec<usize>,
    /// A weight matrix kept in its file's format (then `dtype` is Bf16: what its panels
    /// dequantize to for the tensor cores).
    pub(super) packed: Option<Packed>,
}

/// How a packed weight's rows are stored.
#[derive(Clone, Copy, Debug)]
pub(super) struct Packed {
    pub format: ffi::ScalpelQType,
    pub row_bytes: usize,
}

impl Tensor for CudaTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn shape_mut(&mut self) -> &mut Vec<usize> {
        &mut self.shape
    }
}

impl CudaTensor {
    pub(super) fn dense(block: Arc<Block>, dtype: DType, shape: &[usize]) -> Self {
        CudaTensor { block, dtype, shape: shape.to_vec(), packed: None }
    }

    pub(super) fn ptr(&self) -> u64 {
        self.block.ptr
    }

    pub(super) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub(super) fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    pub(super) fn cptr<T>(&self) -> *const T {
        self.block.ptr as *const T
    }

    pub(super) fn mptr<T>(&self) -> *mut T {
        self.block.ptr as *mut T
    }
}

/// Page-locked host memory, so a recorded copy can be replayed from it.
pub(super) struct Pinned {
    pub ptr: *mut u32,
    pub words: usize,
    pub gpu: Arc<dyn Gpu>,
}

// SAFETY: the pointer is owned by this struct and only accessed through &self/&mut self.
unsafe impl Send for Pinned {}
unsafe impl Sync for Pinned {}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Nothing may still read it: a replay in flight does.
        let _ = self.gpu.synchronize();
        // SAFETY: allocated by host_alloc(words * 4) in Cuda::fixed_step.
        unsafe { self.gpu.host_free(self.ptr as *mut u8, self.words * 4) };
    }
}

/// The step's tokens on the device: [start (i32), ids (u32)…] in one buffer.
pub struct CudaStep {
    pub(super) buf: Arc<Block>,
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) staging: Option<Pinned>,
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
    pub(super) fn start_ptr(&self) -> *const i32 {
        self.buf.ptr as *const i32
    }

    pub(super) fn ids_ptr(&self) -> *const u32 {
        (self.buf.ptr + 4) as *const u32
    }
}

pub struct CudaCache {
    pub(super) k: Vec<Arc<Block>>,
    pub(super) v: Vec<Arc<Block>>,
    pub(super) capacity: usize,
    /// Values per position: kv_heads × head_dim.
    pub(super) row: usize,
    /// Split-sequence partial results of single-row (decode) attention.
    pub(super) workspace: Option<Arc<Block>>,
}

pub(super) fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DType::Bf16 => {
            bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
    }
}
