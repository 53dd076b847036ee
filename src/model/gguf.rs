//! GGUF v2/v3 reader over a memory map.
//!
//! Every length, count and offset in the file is checked against the bytes that are really there
//! before anything is allocated for it: a file cannot make scalpel allocate what it merely claims.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::bytes::Bytes;

use super::quant::GgmlType;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays exist in the format; nothing real nests deeper than this.
const MAX_NESTING: u32 = 4;
/// No tensor in any real model has more elements than this (2^40 ≈ 1.1e12).
const MAX_TENSOR_ELEMENTS: u64 = 1 << 40;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Array),
}

/// Arrays are stored by element type so that memory stays proportional to the file's bytes
/// (a `Vec<Value>` of bytes would take 32 times the space the file claims).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Nested(Vec<Array>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::Nested(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn strings(&self) -> Option<&[String]> {
        match self {
            Array::Str(v) => Some(v),
            _ => None,
        }
    }

    /// Numeric arrays as f64, element by element (None for strings, bools and nested arrays).
    pub fn numbers(&self) -> Option<Vec<f64>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| x as f64).collect(),
            Array::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Array::U16(v) => v.iter().map(|&x| x as f64).collect(),
            Array::I16(v) => v.iter().map(|&x| x as f64).collect(),
            Array::U32(v) => v.iter().map(|&x| x as f64).collect(),
            Array::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Array::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Array::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Array::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Array::F64(v) => v.clone(),
            _ => return None,
        })
    }

    fn summary(&self) -> String {
        let head: Vec<String> = match self {
            Array::Str(v) => v.iter().take(4).map(|s| format!("{s:?}")).collect(),
            Array::Bool(v) => v.iter().take(4).map(|b| b.to_string()).collect(),
            Array::Nested(v) => v.iter().take(4).map(Array::summary).collect(),
            other => other.numbers().unwrap_or_default().iter().take(4).map(|x| x.to_string()).collect(),
        };
        let more = if self.len() > 4 { ", …" } else { "" };
        format!("[{}{}] ({} items)", head.join(", "), more, self.len())
    }
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short rendering for listings: arrays show their length and first items.
    pub fn summary(&self) -> String {
        match self {
            Value::Str(s) if s.chars().count() > 80 => {
                let head: String = s.chars().take(77).collect();
                format!("{head:?}…")
            }
            Value::Str(s) => format!("{s:?}"),
            Value::Array(a) => a.summary(),
            Value::Bool(b) => b.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: the innermost (contiguous) dimension first.
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape, outermost dimension first (the PyTorch order).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// The parsed header: metadata and tensor table, with every extent checked against the file.
#[derive(Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, field: &str, detail: impl Into<String>) -> Error {
        Error::format(self.path, field, detail)
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(
                field,
                format!(
                    "needs {n} bytes at offset {} but the file ends after {} (truncated?)",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        Ok(self.take(N, field)?.try_into().expect("length checked"))
    }

    fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }

    fn string(&mut self, field: &str) -> Result<String> {
        let len = self.u64(field)?;
        if len > self.remaining() as u64 {
            return Err(self.err(
                field,
                format!(
                    "string claims {len} bytes but only {} remain in the file (truncated?)",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len as usize, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(field, "string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, field: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(field)?[0]),
            1 => Value::I8(self.arr::<1>(field)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(field)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(field)?)),
            4 => Value::U32(self.u32(field)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(field)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(field)?)),
            7 => match self.arr::<1>(field)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(field, format!("bool has value {b}"))),
            },
            8 => Value::Str(self.string(field)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.err(field, format!("arrays nested deeper than {MAX_NESTING}")));
                }
                let elem_ty = self.u32(field)?;
                let count = self.u64(field)?;
                let min = min_value_size(elem_ty)
                    .ok_or_else(|| self.err(field, format!("unknown array element type {elem_ty}")))?;
                if count.saturating_mul(min) > self.remaining() as u64 {
                    return Err(self.err(
                        field,
                        format!(
                            "array claims {count} elements of type {elem_ty} but only {} bytes remain (truncated?)",
                            self.remaining()
                        ),
                    ));
                }
                Value::Array(self.array(elem_ty, count as usize, field, depth + 1)?)
            }
            10 => Value::U64(self.u64(field)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(field)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(field)?)),
            other => return Err(self.err(field, format!("unknown value type {other}"))),
        })
    }
}

impl Cursor<'_> {
    /// Reads `n` elements of type `ty`; the caller has checked that `n` minimal elements fit.
    fn array(&mut self, ty: u32, n: usize, field: &str, depth: u32) -> Result<Array> {
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let bytes = self.take(n * std::mem::size_of::<$t>(), field)?;
                Array::$variant(
                    bytes
                        .chunks_exact(std::mem::size_of::<$t>())
                        .map(|b| <$t>::from_le_bytes(b.try_into().expect("exact chunk")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            0 => fixed!(U8, u8),
            1 => fixed!(I8, i8),
            2 => fixed!(U16, u16),
            3 => fixed!(I16, i16),
            4 => fixed!(U32, u32),
            5 => fixed!(I32, i32),
            6 => fixed!(F32, f32),
            10 => fixed!(U64, u64),
            11 => fixed!(I64, i64),
            12 => fixed!(F64, f64),
            7 => {
                let bytes = self.take(n, field)?;
                let mut v = Vec::with_capacity(n);
                for &b in bytes {
                    match b {
                        0 => v.push(false),
                        1 => v.push(true),
                        b => return Err(self.err(field, format!("bool has value {b}"))),
                    }
                }
                Array::Bool(v)
            }
            8 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(field)?);
                }
                Array::Str(v)
            }
            9 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    match self.value(9, field, depth)? {
                        Value::Array(a) => v.push(a),
                        _ => unreachable!("type 9 reads an array"),
                    }
                }
                Array::Nested(v)
            }
            other => return Err(self.err(field, format!("unknown array element type {other}"))),
        })
    }
}

/// The fewest bytes a value of this type can take, used to bound counts before allocating.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

impl GgufHeader {
    /// Parses the header of a GGUF image. `path` only names the file in errors.
    pub fn parse(buf: &[u8], path: &Path) -> Result<Self> {
        let mut c = Cursor { buf, pos: 0, path };
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(c.err("magic", format!("expected \"GGUF\", found {magic:02x?}: not a GGUF file")));
        }
        let version = c.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(Error::Unsupported(format!(
                    "{}: GGUF version 1 (convert it with a current llama.cpp)",
                    path.display()
                )));
            }
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(Error::Unsupported(format!("{}: big-endian GGUF", path.display())));
            }
            v => return Err(c.err("version", format!("version {v} (expected 2 or 3)"))),
        }
        let n_tensors = c.u64("tensor_count")?;
        let n_kv = c.u64("metadata_kv_count")?;
        // A key-value pair takes at least 13 bytes, a tensor info at least 32.
        if n_kv.saturating_mul(13) > c.remaining() as u64 {
            return Err(
                c.err("metadata_kv_count", format!("{n_kv} pairs cannot fit in {} bytes", c.remaining()))
            );
        }
        if n_tensors.saturating_mul(32) > c.remaining() as u64 {
            return Err(
                c.err("tensor_count", format!("{n_tensors} tensors cannot fit in {} bytes", c.remaining()))
            );
        }

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&format!("type of {key}"))?;
            let value = c.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.err(&key, "metadata key appears twice"));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(c.err(
                        "general.alignment",
                        format!("{} is not a power of two up to 1 MiB", v.summary()),
                    ));
                }
            },
        };

        let mut infos = Vec::with_capacity(n_tensors as usize);
        let mut names = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor #{i}"))?;
            let n_dims = c.u32(&format!("n_dims of {name}"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(
                    c.err(&format!("n_dims of {name}"), format!("{n_dims} (expected 1..={MAX_DIMS})"))
                );
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&format!("dims of {name}"))?);
            }
            let type_id = c.u32(&format!("type of {name}"))?;
            let offset = c.u64(&format!("offset of {name}"))?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0 && n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    c.err(&format!("dims of {name}"), format!("{dims:?} is empty or implausibly large"))
                })?;
            let dtype = GgmlType::from_id(type_id).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{}: tensor {name} has unknown GGML type id {type_id}",
                    path.display()
                ))
            })?;
            let (block_elems, _) = dtype.block();
            if dims[0] % block_elems as u64 != 0 {
                return Err(c.err(
                    &format!("dims of {name}"),
                    format!(
                        "row length {} is not a multiple of the {}-element {} block",
                        dims[0],
                        block_elems,
                        dtype.name()
                    ),
                ));
            }
            let n_bytes = dtype.bytes_for(n_elements).expect("row checked against block size");
            if names.insert(name.clone(), i).is_some() {
                return Err(c.err(&name, "tensor name appears twice"));
            }
            infos.push((name, dims, dtype, offset, n_bytes));
        }

        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, dtype, rel, n_bytes) in infos {
            if rel % alignment != 0 {
                return Err(c.err(
                    &format!("offset of {name}"),
                    format!("{rel} is not a multiple of the alignment {alignment}"),
                ));
            }
            let offset = data_offset.checked_add(rel);
            let end = offset.and_then(|o| o.checked_add(n_bytes));
            match (offset, end) {
                (Some(offset), Some(end)) if end <= file_len => {
                    tensors.push(TensorInfo { name, dims, dtype, offset, n_bytes })
                }
                _ => {
                    return Err(c.err(
                        &format!("extent of {name}"),
                        format!(
                            "{n_bytes} bytes at data offset {rel} run past the end of the file ({file_len} bytes; truncated?)"
                        ),
                    ));
                }
            }
        }
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for w in by_offset.windows(2) {
            if w[0].offset + w[0].n_bytes > w[1].offset {
                return Err(
                    c.err(&format!("extent of {}", w[1].name), format!("overlaps tensor {}", w[0].name))
                );
            }
        }
        Ok(GgufHeader { version, metadata, tensors, alignment, data_offset })
    }
}

/// An open GGUF file: the checked header plus the memory map its tensors live in.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    index: HashMap<String, usize>,
    bytes: std::sync::Arc<Bytes>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_bytes(Bytes::map(path)?, path)
    }

    /// Parses a GGUF image already in memory; `path` only names it in errors.
    pub fn from_bytes(bytes: Bytes, path: &Path) -> Result<Self> {
        let header = GgufHeader::parse(&bytes, path)?;
        let index = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile { path: path.to_path_buf(), header, index, bytes: std::sync::Arc::new(bytes) })
    }

    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.header.tensors[i])
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes[t.offset as usize..(t.offset + t.n_bytes) as usize]
    }

    /// The tensor as stored: a view into the file's mapping (kept alive by the view).
    pub fn stored(&self, t: &TensorInfo) -> super::stored::Stored {
        super::stored::Stored::mapped(
            t.dtype,
            t.shape(),
            self.bytes.clone(),
            t.offset as usize,
            t.n_bytes as usize,
        )
    }

    /// Metadata accessors that name the key and the file when the value is missing or mistyped.
    pub fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| Error::format(&self.path, key, "missing"))?;
        v.as_u64().ok_or_else(|| {
            Error::format(&self.path, key, format!("expected an unsigned integer, found {}", v.summary()))
        })
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|_| self.req_u64(key)).transpose()
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::format(&self.path, key, format!("expected a number, found {}", v.summary()))
            }),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                Error::format(&self.path, key, format!("expected a string, found {}", v.summary()))
            }),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                Error::format(&self.path, key, format!("expected a bool, found {}", v.summary()))
            }),
        }
    }

    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_array().map(Some).ok_or_else(|| {
                Error::format(&self.path, key, format!("expected an array, found {}", v.summary()))
            }),
        }
    }
}

/// Writes GGUF v3 files: control vectors (`steer`), and test fixtures. Tensors are written as
/// given (F32 only), aligned to 32 bytes.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// `shape` row-major (outermost first), as everywhere else in scalpel.
    pub fn tensor(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> &mut Self {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.to_string(), dims, data));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend_from_slice(&value_type(v).to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, data) in &self.tensors {
            write_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes()); // F32
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + 4 * data.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let start = out.len().div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize;
        out.resize(start, 0);
        for ((_, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            for x in data {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn array_elem_type(a: &Array) -> u32 {
    match a {
        Array::U8(_) => 0,
        Array::I8(_) => 1,
        Array::U16(_) => 2,
        Array::I16(_) => 3,
        Array::U32(_) => 4,
        Array::I32(_) => 5,
        Array::F32(_) => 6,
        Array::Bool(_) => 7,
        Array::Str(_) => 8,
        Array::Nested(_) => 9,
        Array::U64(_) => 10,
        Array::I64(_) => 11,
        Array::F64(_) => 12,
    }
}

fn write_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&array_elem_type(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => each!(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => v.iter().for_each(|&b| out.push(b as u8)),
        Array::Str(v) => v.iter().for_each(|s| write_str(out, s)),
        Array::Nested(v) => v.iter().for_each(|inner| write_array(out, inner)),
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(b) => out.push(*b as u8),
        Value::Str(s) => write_str(out, s),
        Value::Array(a) => write_array(out, a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str("controlvector".into()))
            .meta("controlvector.layer_count", Value::U32(2))
            .meta("list", Value::Array(Array::Str(vec!["a".into(), "bc".into()])))
            .tensor("direction.1", &[3], vec![1.0, -2.0, 0.5])
            .tensor("direction.2", &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        w.to_bytes()
    }

    #[test]
    fn written_files_read_back() {
        let bytes = sample();
        let h = GgufHeader::parse(&bytes, Path::new("mem")).unwrap();
        assert_eq!(h.metadata["controlvector.layer_count"], Value::U32(2));
        assert_eq!(h.metadata["list"].as_array().unwrap().strings().unwrap(), ["a", "bc"]);
        assert_eq!(h.tensors[1].shape(), vec![2, 3]);
        assert_eq!(h.tensors[1].offset % 32, 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for n in 0..bytes.len() {
            assert!(GgufHeader::parse(&bytes[..n], Path::new("mem")).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn huge_claims_are_refused_before_allocating() {
        let mut bytes = sample();
        // tensor_count at offset 8: claim 2^60 tensors.
        bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = GgufHeader::parse(&bytes, Path::new("mem")).unwrap_err();
        assert!(e.to_string().contains("tensor_count"), "{e}");
    }
}
