//! What the CUDA backend's values are on the device: tensors (a pooled block, a dtype, a shape),
//! the tokens of a forward call, and the KV cache.

use std::sync::Arc;

use super::ffi;
use super::gpu::{DType, Gpu};
use super::memory::Block;
use crate::backend::{SeqSpan, Step, Tensor};

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

/// The step's tokens on the device, in one buffer of 32-bit words (see [`StepLayout`]): ids,
/// each row's position and sequence, each sequence's first row, rows and page table, and the
/// prefill kernel's tiles.
pub struct CudaStep {
    pub(super) buf: Arc<Block>,
    pub(super) seqs: Vec<SeqSpan>,
    pub(super) layout: StepLayout,
    /// The highest page any sequence names.
    pub(super) max_page: usize,
    pub(super) staging: Option<Pinned>,
}

/// The sizes of a step's buffer: they fix where each array starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StepLayout {
    pub rows: usize,
    pub n_seqs: usize,
    pub max_pages: usize,
    pub n_tiles: usize,
    pub max_rows: usize,
}

impl StepLayout {
    pub fn of(rows: usize, seqs: &[SeqSpan], max_pages: usize) -> Self {
        let tile = ffi::SCALPEL_PREFILL_ROWS as usize;
        StepLayout {
            rows,
            n_seqs: seqs.len(),
            max_pages,
            n_tiles: seqs.iter().map(|s| s.len.div_ceil(tile)).sum(),
            max_rows: seqs.iter().map(|s| s.len).max().unwrap_or(0),
        }
    }

    pub fn words(&self) -> usize {
        3 * self.rows + 2 * self.n_seqs + self.n_seqs * self.max_pages + 2 * self.n_tiles
    }

    /// The buffer's contents for these ids and sequences (page tables padded with page 0,
    /// which no row reads: a row sees only its own positions).
    pub fn fill(&self, ids: &[u32], seqs: &[SeqSpan], words: &mut [u32]) {
        let (t, s) = (self.rows, self.n_seqs);
        words[..t].copy_from_slice(ids);
        let (pos, rest) = words[t..].split_at_mut(t);
        let (seq, rest) = rest.split_at_mut(t);
        let (row0, rest) = rest.split_at_mut(s);
        let (nrows, rest) = rest.split_at_mut(s);
        let (pages, tiles) = rest.split_at_mut(s * self.max_pages);
        let tile = ffi::SCALPEL_PREFILL_ROWS as usize;
        let mut k = 0;
        for (i, span) in seqs.iter().enumerate() {
            for j in 0..span.len {
                pos[span.row + j] = (span.start + j) as u32;
                seq[span.row + j] = i as u32;
            }
            row0[i] = span.row as u32;
            nrows[i] = span.len as u32;
            let table = &mut pages[i * self.max_pages..(i + 1) * self.max_pages];
            table.fill(0);
            table[..span.pages.len()].copy_from_slice(&span.pages);
            for m in (0..span.len).step_by(tile) {
                tiles[2 * k] = i as u32;
                tiles[2 * k + 1] = m as u32;
                k += 1;
            }
        }
    }
}

impl Step for CudaStep {
    fn seqs(&self) -> &[SeqSpan] {
        &self.seqs
    }

    fn len(&self) -> usize {
        self.layout.rows
    }
}

impl CudaStep {
    pub(super) fn ids_ptr(&self) -> *const u32 {
        self.buf.ptr as *const u32
    }

    /// The arrays as the kernels read them.
    pub(super) fn ffi(&self) -> ffi::ScalpelSeqs {
        let l = &self.layout;
        let at = |word: usize| (self.buf.ptr + 4 * word as u64) as *const i32;
        let (t, s) = (l.rows, l.n_seqs);
        let pages = 3 * t + 2 * s;
        ffi::ScalpelSeqs {
            pos: at(t),
            seq: at(2 * t),
            row0: at(3 * t),
            rows: at(3 * t + s),
            pages: at(pages),
            tiles: at(pages + s * l.max_pages),
            n_seqs: s as i32,
            max_pages: l.max_pages as i32,
            n_tiles: l.n_tiles as i32,
            max_rows: l.max_rows as i32,
        }
    }
}

pub struct CudaCache {
    /// Per layer, the pool of pages: [pages · PAGE, kv_heads, head_dim] bf16.
    pub(super) k: Vec<Arc<Block>>,
    pub(super) v: Vec<Arc<Block>>,
    /// The positions it was made for.
    pub(super) capacity: usize,
    pub(super) pages: usize,
    /// Values per position: kv_heads × head_dim.
    pub(super) row: usize,
}

pub(super) fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DType::Bf16 => {
            bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
    }
}
