//! A weight as its file stores it: the tensor type (a GGUF block format, F16, BF16 or F32), the
//! shape in the forward pass's layout, and the bytes — a view into the memory-mapped file where
//! the layout allows (nothing is copied, and the pages are shared with the page cache), owned
//! where they had to be rearranged (llama.cpp's q/k row order) or made in memory (random weights,
//! the f32 reference path).

use std::sync::Arc;

use super::bytes::Bytes;
use super::quant::{self, GgmlType};
use crate::error::{Error, Result};

/// How weights reach a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightMode {
    /// In the format the file stores them (quantized blocks, f16, bf16): products read them
    /// as they are, 4-8x fewer bytes than f32.
    #[default]
    Stored,
    /// Dequantized to f32 on load: the reference path.
    F32,
}

enum Source {
    Mapped { file: Arc<Bytes>, start: usize, len: usize },
    Owned(Vec<u8>),
    F32(Vec<f32>),
}

pub struct Stored {
    pub dtype: GgmlType,
    pub shape: Vec<usize>,
    source: Source,
}

impl Stored {
    /// A tensor inside a mapped (or loaded) file.
    pub fn mapped(dtype: GgmlType, shape: Vec<usize>, file: Arc<Bytes>, start: usize, len: usize) -> Self {
        Stored { dtype, shape, source: Source::Mapped { file, start, len } }
    }

    pub fn owned(dtype: GgmlType, shape: Vec<usize>, bytes: Vec<u8>) -> Self {
        Stored { dtype, shape, source: Source::Owned(bytes) }
    }

    pub fn from_f32(data: Vec<f32>, shape: &[usize]) -> Self {
        Stored { dtype: GgmlType::F32, shape: shape.to_vec(), source: Source::F32(data) }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The stored bytes (little-endian, as in the file).
    pub fn bytes(&self) -> &[u8] {
        match &self.source {
            Source::Mapped { file, start, len } => &file[*start..*start + *len],
            Source::Owned(v) => v,
            // SAFETY: any f32 slice is also a valid byte slice of four times its length.
            Source::F32(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) },
        }
    }

    /// Whether the bytes are the file's own pages (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.source, Source::Mapped { .. })
    }

    /// Bytes per row of a matrix (each row holds whole blocks in every GGUF format).
    pub fn row_bytes(&self) -> usize {
        self.bytes().len() / self.shape[0].max(1)
    }

    /// The values as f32: dequantized, or the f32 data itself (not copied).
    pub fn into_f32(self) -> Result<Vec<f32>> {
        match self.source {
            Source::F32(v) => Ok(v),
            _ => self.to_f32(),
        }
    }

    /// The values as f32 (the reference dequantizers of `quant`).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        quant::dequantize(self.dtype, self.bytes(), self.numel())
    }

    /// This tensor in f32, for the f32-on-load path.
    pub fn to_f32_stored(self) -> Result<Self> {
        let shape = self.shape.clone();
        Ok(Stored::from_f32(self.into_f32()?, &shape))
    }

    /// A copy whose row `i` is this tensor's row `from(i)` (whole rows of blocks move together).
    pub fn with_rows(&self, from: impl Fn(usize) -> usize) -> Result<Self> {
        let rows = self.shape[0];
        let rb = self.row_bytes();
        if rb * rows != self.bytes().len() {
            return Err(Error::Invalid(format!("{} bytes are not {rows} rows", self.bytes().len())));
        }
        let src = self.bytes();
        let mut out = Vec::with_capacity(src.len());
        for i in 0..rows {
            let r = from(i);
            out.extend_from_slice(&src[r * rb..(r + 1) * rb]);
        }
        Ok(Stored::owned(self.dtype, self.shape.clone(), out))
    }
}
