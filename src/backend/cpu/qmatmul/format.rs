//! The weight formats the products read, the matrix view over stored bytes, and the error type.
//!
//! Block layouts follow ggml's `ggml-common.h` (the same layouts scalpel's `model::quant` decodes).

use std::fmt;

/// An error from a product: a size that does not fit, or an instruction set this CPU lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QError(pub String);

impl fmt::Display for QError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QError {}

pub type QResult<T> = Result<T, QError>;

pub(super) fn invalid<T>(msg: String) -> QResult<T> {
    Err(QError(msg))
}

/// A stored weight format. Quantized formats hold fixed-size blocks of elements; the float formats
/// are "blocks" of one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl QType {
    pub const ALL: [QType; 11] = [
        QType::F32,
        QType::F16,
        QType::BF16,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q8_0,
        QType::Q4K,
        QType::Q5K,
        QType::Q6K,
    ];

    /// The type with this GGML type id (the id a GGUF tensor header stores), if it is one of ours.
    /// The format of a GGUF tensor type, if the products handle it.
    pub fn from_ggml(t: crate::model::quant::GgmlType) -> Option<QType> {
        use crate::model::quant::GgmlType as G;
        Some(match t {
            G::F32 => QType::F32,
            G::F16 => QType::F16,
            G::BF16 => QType::BF16,
            G::Q4_0 => QType::Q4_0,
            G::Q4_1 => QType::Q4_1,
            G::Q5_0 => QType::Q5_0,
            G::Q5_1 => QType::Q5_1,
            G::Q8_0 => QType::Q8_0,
            G::Q4K => QType::Q4K,
            G::Q5K => QType::Q5K,
            G::Q6K => QType::Q6K,
            _ => return None,
        })
    }

    /// The GGUF tensor type of this format.
    pub fn ggml(self) -> crate::model::quant::GgmlType {
        use crate::model::quant::GgmlType as G;
        match self {
            QType::F32 => G::F32,
            QType::F16 => G::F16,
            QType::BF16 => G::BF16,
            QType::Q4_0 => G::Q4_0,
            QType::Q4_1 => G::Q4_1,
            QType::Q5_0 => G::Q5_0,
            QType::Q5_1 => G::Q5_1,
            QType::Q8_0 => G::Q8_0,
            QType::Q4K => G::Q4K,
            QType::Q5K => G::Q5K,
            QType::Q6K => G::Q6K,
        }
    }

    pub fn from_ggml_id(id: u32) -> Option<QType> {
        Some(match id {
            0 => QType::F32,
            1 => QType::F16,
            2 => QType::Q4_0,
            3 => QType::Q4_1,
            6 => QType::Q5_0,
            7 => QType::Q5_1,
            8 => QType::Q8_0,
            12 => QType::Q4K,
            13 => QType::Q5K,
            14 => QType::Q6K,
            30 => QType::BF16,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "F32",
            QType::F16 => "F16",
            QType::BF16 => "BF16",
            QType::Q4_0 => "Q4_0",
            QType::Q4_1 => "Q4_1",
            QType::Q5_0 => "Q5_0",
            QType::Q5_1 => "Q5_1",
            QType::Q8_0 => "Q8_0",
            QType::Q4K => "Q4_K",
            QType::Q5K => "Q5_K",
            QType::Q6K => "Q6_K",
        }
    }

    /// Elements per block.
    pub const fn block_elems(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0 => 32,
            QType::Q4K | QType::Q5K | QType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q5_1 => 24,
            QType::Q8_0 => 34,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
        }
    }

    /// Bytes of a row of `cols` elements, or an error when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> QResult<usize> {
        if !cols.is_multiple_of(self.block_elems()) {
            return invalid(format!(
                "{} rows of {cols} elements: not a whole number of {}-element blocks",
                self.name(),
                self.block_elems()
            ));
        }
        Ok(cols / self.block_elems() * self.block_bytes())
    }
}

/// A row-major matrix of `rows` x `cols` weights stored as `ty`: each row is `cols / block_elems`
/// consecutive blocks, rows follow each other without padding (a GGUF 2-D tensor as stored, with
/// GGUF's `ne[0]` = `cols`).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: QType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// A checked view: `data` must be exactly `rows` rows of `cols` elements.
    pub fn new(ty: QType, rows: usize, cols: usize, data: &'a [u8]) -> QResult<Self> {
        let w = QMatrix { ty, rows, cols, data };
        w.validate()?;
        Ok(w)
    }

    /// Checks that `data` holds exactly `rows` rows of `cols` elements of `ty`. Every product calls
    /// this first, so a view built by hand with wrong fields gives an error, not a wrong answer.
    pub fn validate(&self) -> QResult<()> {
        let row = self.ty.row_bytes(self.cols)?;
        let need = row.checked_mul(self.rows).ok_or_else(|| {
            QError(format!("{} matrix [{}, {}] overflows usize bytes", self.ty.name(), self.rows, self.cols))
        })?;
        if self.data.len() != need {
            return invalid(format!(
                "{} matrix [{}, {}] needs {need} bytes, got {}",
                self.ty.name(),
                self.rows,
                self.cols,
                self.data.len()
            ));
        }
        Ok(())
    }

    /// Bytes per row (the view must be valid).
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems() * self.ty.block_bytes()
    }

    /// The stored bytes of row `r` (the view must be valid and `r < rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}
