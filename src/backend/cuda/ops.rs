//! The Backend ops on the CUDA backend: each checks its shapes, allocates its output and goes
//! through one launch (src/backend/cuda/launch.rs); matrix products are one cublasGemmEx.

use half::bf16;
use rayon::prelude::*;

use super::gpu::{DType, Gemm, Transpose};
use super::tensor::{CudaCache, CudaStep, CudaTensor, Packed, StepLayout, to_f32};
use super::{Cuda, ffi};
use crate::backend::{AttnParams, Backend, PAGE, SeqSpan, Step, Tensor, check_pages, check_spans, pages_for};
use crate::error::{Error, Result};
use crate::model::config::{Activation, NormKind};
use crate::model::quant::GgmlType;
use crate::model::stored::Stored;
use crate::sample::SamplingParams;

pub(super) fn check(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(Error::Invalid(what())) }
}

/// Which attention kernel to run (tests hold each against the CPU; `Auto` is what the forward
/// pass uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKernel {
    Auto,
    Rows,
    TensorCores,
}

impl Cuda {
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
        let t = step.len();
        check(q.rows() == t && q.row_len() == p.n_heads * p.head_dim, || {
            format!("attention: q {:?}", q.shape)
        })?;
        check(cache.row == p.n_kv_heads * p.head_dim && layer < cache.k.len(), || {
            "attention: cache geometry".into()
        })?;
        check_pages(step.max_page, cache.pages, "attention")?;
        let mut keep = None;
        let qb = self.as_bf16(q, &mut keep)?;
        let out = self.alloc(DType::Bf16, &[t, p.n_heads * p.head_dim], "attention output")?;
        let lse = self.alloc(DType::F32, &[p.n_heads, t], "attention log-sum-exp")?;
        let g = geometry(p, t, cache.pages * PAGE);
        let sq = step.ffi();
        // SAFETY: a pure function of the structs.
        let need = unsafe { (self.k.attention_workspace)(&g, &sq) } as usize;
        // The split decode's partial results: pooled like every activation, so a recorded step
        // keeps the block it was recorded with.
        let workspace = match need {
            0 => None,
            n => Some(self.alloc(DType::F32, &[n], "the attention workspace")?),
        };
        let ws = workspace.as_ref().map_or(std::ptr::null_mut(), |w| w.mptr());
        let (kc, vc) = (cache.k[layer].ptr as *const u16, cache.v[layer].ptr as *const u16);
        let (o, l) = (out.mptr(), lse.mptr());
        // SAFETY: shapes and pages checked; the workspace is as large as the kernel asked.
        self.launch("attention", |k, s| unsafe {
            match kernel {
                AttnKernel::Auto => (k.attention)(s, qb.cptr(), kc, vc, &g, &sq, o, l, ws),
                AttnKernel::Rows => (k.attention_rows)(s, qb.cptr(), kc, vc, &g, &sq, o, l, ws),
                AttnKernel::TensorCores => (k.attention_prefill)(s, qb.cptr(), kc, vc, &g, &sq, o, l),
            }
        })?;
        Ok((out, lse))
    }

    /// The bf16 form of a tensor (itself when it already is).
    pub(super) fn as_bf16<'a>(
        &self,
        t: &'a CudaTensor,
        keep: &'a mut Option<CudaTensor>,
    ) -> Result<&'a CudaTensor> {
        if t.dtype == DType::Bf16 {
            return Ok(t);
        }
        let out = self.alloc(DType::Bf16, &t.shape, "a bf16 copy")?;
        // SAFETY: both buffers hold numel elements of their types.
        let out = self.launch_into("cast_bf16", out, |k, s, o| unsafe {
            (k.cast_bf16)(s, t.cptr(), o.mptr(), t.numel() as i64)
        })?;
        Ok(keep.insert(out))
    }

    /// A product with a packed weight: up to 8 rows of x (decode) dequantize W in registers;
    /// more (prefill) dequantize panels of W to bf16 for cuBLAS, never the whole matrix at once.
    fn matmul_packed(&self, x: &CudaTensor, w: &CudaTensor, p: Packed) -> Result<CudaTensor> {
        let (m, k, n) = (x.rows(), x.row_len(), w.rows());
        let out = self.alloc(DType::F32, &[m, n], "a matrix product")?;
        if m <= QMATVEC_MAX_ROWS {
            let (xp, xd) = (x.cptr::<std::ffi::c_void>(), x.dtype.ffi());
            // SAFETY: W holds n rows of row_bytes; x holds m × k values of its dtype; out m × n.
            return self.launch_into("qmatvec", out, |kern, s, o| unsafe {
                (kern.qmatvec)(
                    s,
                    w.cptr(),
                    p.format,
                    n as i32,
                    k as i32,
                    p.row_bytes as i32,
                    xp,
                    xd,
                    m as i32,
                    o.mptr(),
                )
            });
        }
        let mut keep = None;
        let xb = self.as_bf16(x, &mut keep)?;
        let rows = panel_rows(n, k);
        let panel = self.alloc(DType::Bf16, &[rows, k], "a dequantized weight panel")?;
        for first in (0..n).step_by(rows) {
            let nr = rows.min(n - first);
            // SAFETY: rows first..first + nr of W into the panel, which holds `rows` rows.
            self.launch("qdequant_bf16", |kern, s| unsafe {
                (kern.qdequant_bf16)(
                    s,
                    w.cptr(),
                    p.format,
                    k as i32,
                    p.row_bytes as i32,
                    first as i32,
                    nr as i32,
                    panel.mptr(),
                )
            })?;
            // Columns first.. of the row-major out[m, n] (column-major outᵀ, ldc n).
            let g = Gemm {
                transa: Transpose::T,
                transb: Transpose::N,
                m: nr as i32,
                n: m as i32,
                k: k as i32,
                alpha: 1.0,
                a: panel.ptr(),
                a_type: DType::Bf16,
                lda: k as i32,
                b: xb.ptr(),
                b_type: DType::Bf16,
                ldb: k as i32,
                beta: 0.0,
                c: out.ptr() + (first * 4) as u64,
                c_type: DType::F32,
                ldc: n as i32,
            };
            self.op("matmul", || {
                // SAFETY: the panel, x and the columns of out the arguments describe.
                unsafe { self.gpu.gemm(&g) }?;
                self.launched("cuBLAS GemmEx", 0)
            })?;
        }
        Ok(out)
    }

    /// Cosine search over a packed table, a bf16 panel at a time.
    fn cosine_rows_packed(&self, table: &CudaTensor, p: Packed, v: &CudaTensor) -> Result<CudaTensor> {
        let (n, rows) = (table.row_len(), table.rows());
        check(v.numel() == n && v.dtype == DType::F32, || "cosine_rows: shapes".into())?;
        let out = self.alloc(DType::F32, &[rows], "cosine similarities")?;
        let per = panel_rows(rows, n);
        let panel = self.alloc(DType::Bf16, &[per, n], "a dequantized table panel")?;
        for first in (0..rows).step_by(per) {
            let nr = per.min(rows - first);
            let dst = (out.ptr() + (first * 4) as u64) as *mut f32;
            // SAFETY: rows first..first + nr into the panel; their cosines into out[first..].
            self.launch("qdequant_bf16", |kern, s| unsafe {
                (kern.qdequant_bf16)(
                    s,
                    table.cptr(),
                    p.format,
                    n as i32,
                    p.row_bytes as i32,
                    first as i32,
                    nr as i32,
                    panel.mptr(),
                )
            })?;
            self.launch("cosine_rows", |kern, s| unsafe {
                (kern.cosine_rows)(s, panel.cptr(), v.cptr(), nr as i32, n as i32, dst)
            })?;
        }
        Ok(out)
    }

    /// Rows as the kernels take them: NULL for "every row", else a device list.
    fn rows_arg(&self, rows: &[usize], total: usize) -> Result<(Option<CudaTensor>, usize)> {
        if rows.len() == total && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok((None, total));
        }
        check(rows.iter().all(|&r| r < total), || format!("rows {rows:?} outside {total} rows"))?;
        let list: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let t = self.alloc(DType::F32, &[list.len()], "a row list")?;
        self.htod(t.ptr(), &list)?;
        Ok((Some(t), rows.len()))
    }
}

/// Up to this many rows of x, products with a packed weight dequantize it in registers.
const QMATVEC_MAX_ROWS: usize = 8;
/// A dequantized bf16 panel holds at most this many bytes.
const PANEL_BYTES: usize = 64 << 20;

/// Rows per bf16 panel of a [n, k] matrix: a multiple of 64, all of them when they fit.
fn panel_rows(n: usize, k: usize) -> usize {
    let rows = (PANEL_BYTES / (2 * k.max(1))).max(64) / 64 * 64;
    rows.min(n).max(1)
}

/// The device's name for a stored format it keeps packed (f32 and bf16 are not packed).
fn packed_format(t: GgmlType) -> Option<ffi::ScalpelQType> {
    use ffi::ScalpelQType as Q;
    Some(match t {
        GgmlType::F16 => Q::SCALPEL_Q_F16,
        GgmlType::Q4_0 => Q::SCALPEL_Q4_0,
        GgmlType::Q4_1 => Q::SCALPEL_Q4_1,
        GgmlType::Q5_0 => Q::SCALPEL_Q5_0,
        GgmlType::Q5_1 => Q::SCALPEL_Q5_1,
        GgmlType::Q8_0 => Q::SCALPEL_Q8_0,
        GgmlType::Q4K => Q::SCALPEL_Q4_K,
        GgmlType::Q5K => Q::SCALPEL_Q5_K,
        GgmlType::Q6K => Q::SCALPEL_Q6_K,
        _ => return None,
    })
}

pub(super) fn geometry(p: &AttnParams, t: usize, capacity: usize) -> ffi::ScalpelAttn {
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

impl Backend for Cuda {
    type Tensor = CudaTensor;
    type Cache = CudaCache;

    /// Matrices in a GGUF block format or f16 stay as stored (packed); bf16 matrices are bf16
    /// already; f32 matrices become bf16; vectors (norm weights, RoPE frequencies) stay f32.
    fn weight(&self, w: Stored) -> Result<CudaTensor> {
        let shape = w.shape.clone();
        let what = format!("a weight of shape {shape:?}");
        if shape.len() == 2 {
            let (rows, cols) = (shape[0], shape[1]);
            if let Some(format) = packed_format(w.dtype)
                && cols % 32 == 0
                && cols % w.dtype.block().0 == 0
                && rows > 0
            {
                let bytes = w.bytes();
                let block = self.memory.alloc(bytes.len(), false, &what)?;
                self.htod(block.ptr, bytes)?;
                let packed = Some(Packed { format, row_bytes: bytes.len() / rows });
                return Ok(CudaTensor { block, dtype: DType::Bf16, shape, packed });
            }
            if w.dtype == GgmlType::BF16 {
                let block = self.memory.alloc(w.bytes().len(), false, &what)?;
                self.htod(block.ptr, w.bytes())?;
                return Ok(CudaTensor::dense(block, DType::Bf16, &shape));
            }
        }
        let data = w.into_f32()?;
        if shape.len() == 1 {
            let block = self.memory.alloc(data.len() * 4, false, &what)?;
            self.htod(block.ptr, &data)?;
            return Ok(CudaTensor::dense(block, DType::F32, &shape));
        }
        let half: Vec<u16> = data.par_iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        drop(data);
        let block = self.memory.alloc(half.len() * 2, false, &what)?;
        self.htod(block.ptr, &half)?;
        Ok(CudaTensor::dense(block, DType::Bf16, &shape))
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        check(n == data.len(), || format!("{} values for shape {shape:?}", data.len()))?;
        let t = self.alloc(DType::F32, shape, "an upload")?;
        self.htod(t.ptr(), data)?;
        Ok(t)
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        if t.packed.is_some() {
            // The dequantized values, exactly: every row gathered in f32.
            let ids: Vec<u32> = (0..t.rows() as u32).collect();
            let all = self.embed(t, &self.step(&ids, 0)?, None)?;
            return self.download(&all);
        }
        let mut bytes = vec![0u8; t.bytes()];
        self.dtoh(&mut bytes, t.ptr())?;
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
        let pages = pages_for(capacity).max(1);
        let bytes = (pages * PAGE)
            .checked_mul(row * 2)
            .ok_or_else(|| Error::Invalid("KV cache size overflows".into()))?;
        let what =
            format!("the KV cache ({n_layers} layers × 2 × {pages} pages of {PAGE} positions × {row} bf16)");
        let mut k = Vec::with_capacity(n_layers);
        let mut v = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            k.push(self.memory.alloc(bytes, false, &what)?);
            v.push(self.memory.alloc(bytes, false, &what)?);
        }
        Ok(CudaCache { k, v, capacity, pages, row })
    }

    fn cache_capacity(&self, cache: &CudaCache) -> usize {
        cache.capacity
    }

    fn cache_pages(&self, cache: &CudaCache) -> usize {
        cache.pages
    }

    fn copy_page(&self, cache: &mut CudaCache, from: usize, to: usize) -> Result<()> {
        check(from < cache.pages && to < cache.pages, || {
            format!("copy_page: pages {from} → {to} of {}", cache.pages)
        })?;
        let n = (PAGE * cache.row * 2) as u64;
        for layer in cache.k.iter().chain(&cache.v) {
            self.dtod(layer.ptr + to as u64 * n, layer.ptr + from as u64 * n, n as usize)?;
        }
        Ok(())
    }

    fn batch(&self, ids: &[u32], seqs: &[SeqSpan]) -> Result<CudaStep> {
        let max_page = check_spans(ids.len(), seqs)?;
        let max_pages = seqs.iter().map(|s| s.pages.len()).max().unwrap_or(1).max(1);
        let layout = StepLayout::of(ids.len(), seqs, max_pages);
        let mut words = vec![0u32; layout.words()];
        layout.fill(ids, seqs, &mut words);
        let buf = self.memory.alloc(words.len() * 4, true, "the step's tokens")?;
        self.htod(buf.ptr, &words)?;
        Ok(CudaStep { buf, seqs: seqs.to_vec(), layout, max_page, staging: None })
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
        let token = self.token.ptr as *mut u32;
        // SAFETY: logits holds `vocab` f32, the token buffer one u32.
        self.launch("sample", |k, s| unsafe { (k.sample)(s, logits.cptr(), vocab, &p, u, token) })?;
        let mut out = [0u8; 4];
        self.dtoh(&mut out, self.token.ptr)?;
        let id = u32::from_le_bytes(out);
        if id == u32::MAX {
            return Err(Error::Invalid("the logits contain NaN: the forward pass produced garbage".into()));
        }
        Ok(Some(id))
    }

    fn embed(&self, table: &CudaTensor, step: &CudaStep, scale: Option<f32>) -> Result<CudaTensor> {
        let len = step.len();
        if let Some(p) = table.packed {
            let d = table.row_len();
            let out = self.alloc(DType::F32, &[len, d], "embeddings")?;
            // SAFETY: ids are below the table's rows (checked by the forward pass); out holds len × d.
            return self.launch_into("qembed", out, |k, s, o| unsafe {
                (k.qembed)(
                    s,
                    table.cptr(),
                    p.format,
                    d as i32,
                    p.row_bytes as i32,
                    step.ids_ptr(),
                    len as i32,
                    scale.unwrap_or(1.0),
                    o.mptr(),
                )
            });
        }
        check(table.dtype == DType::Bf16 && table.shape.len() == 2, || {
            "embed: the table must be a bf16 matrix".into()
        })?;
        let d = table.row_len();
        let out = self.alloc(DType::F32, &[len, d], "embeddings")?;
        // SAFETY: ids has len entries below the vocabulary (checked by the forward pass).
        self.launch_into("embed", out, |k, s, o| unsafe {
            (k.embed)(s, table.cptr(), step.ids_ptr(), len as i32, d as i32, scale.unwrap_or(1.0), o.mptr())
        })
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32, kind: NormKind) -> Result<CudaTensor> {
        let n = w.numel();
        check(w.dtype == DType::F32 && n > 0 && x.numel().is_multiple_of(n), || {
            format!("rms_norm: {:?} in groups of {n}", x.shape)
        })?;
        let out = self.alloc(DType::Bf16, &x.shape, "a normed activation")?;
        let groups = (x.numel() / n) as i32;
        // SAFETY: x and out hold numel elements; w holds n f32.
        self.launch_into("rms_norm", out, |k, s, o| unsafe {
            (k.rms_norm)(
                s,
                x.cptr(),
                x.dtype.ffi(),
                w.cptr(),
                groups,
                n as i32,
                eps,
                (kind == NormKind::OnePlus) as i32,
                o.mptr(),
            )
        })
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
        let rows = x.rows() as i32;
        let xp = x.mptr();
        // SAFETY: shapes checked above.
        self.launch_into("add_rms_norm", out, |k, s, o| unsafe {
            (k.add_rms_norm)(
                s,
                xp,
                delta.cptr(),
                delta.dtype.ffi(),
                w.cptr(),
                rows,
                n as i32,
                eps,
                (kind == NormKind::OnePlus) as i32,
                o.mptr(),
            )
        })
    }

    fn matmul(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let (m, k) = (x.rows(), x.row_len());
        let n = w.shape[0];
        check(w.dtype == DType::Bf16 && w.row_len() == k, || {
            format!("matmul: [{m}, {k}] times [{n}, {}]ᵀ", w.row_len())
        })?;
        if let Some(p) = w.packed {
            return self.matmul_packed(x, w, p);
        }
        let mut keep = None;
        let xb = self.as_bf16(x, &mut keep)?;
        let out = self.alloc(DType::F32, &[m, n], "a matrix product")?;
        // Row-major out[m, n] = x[m, k] · w[n, k]ᵀ is column-major outᵀ[n, m] = w · xᵀ:
        // A = w read transposed (lda k), B = x (ldb k), C ldc n.
        let g = Gemm {
            transa: Transpose::T,
            transb: Transpose::N,
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0,
            a: w.ptr(),
            a_type: DType::Bf16,
            lda: k as i32,
            b: xb.ptr(),
            b_type: DType::Bf16,
            ldb: k as i32,
            beta: 0.0,
            c: out.ptr(),
            c_type: DType::F32,
            ldc: n as i32,
        };
        self.op("matmul", || {
            // SAFETY: pointers and leading dimensions describe the three buffers exactly.
            unsafe { self.gpu.gemm(&g) }?;
            self.launched("cuBLAS GemmEx", 0)
        })?;
        Ok(out)
    }

    fn add_assign(&self, x: &mut CudaTensor, y: &CudaTensor) -> Result<()> {
        check(x.dtype == DType::F32 && x.shape == y.shape, || {
            format!("add: {:?} and {:?}", x.shape, y.shape)
        })?;
        let xp = x.mptr();
        // SAFETY: equal shapes.
        self.launch("add", |k, s| unsafe { (k.add)(s, xp, y.cptr(), y.dtype.ffi(), y.numel() as i64) })
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
        let t = step.len();
        check(layer < cache.k.len(), || format!("rope_kv: layer {layer} past the cache"))?;
        check(k.row_len() == cache.row && v.shape == k.shape && q.rows() == t && k.rows() == t, || {
            format!("rope_kv: q {:?}, k {:?}, v {:?} for {t} positions", q.shape, k.shape, v.shape)
        })?;
        check_pages(step.max_page, cache.pages, "rope_kv")?;
        check(inv_freq.numel() == head_dim / 2 && inv_freq.dtype == DType::F32, || {
            "rope_kv: frequencies".into()
        })?;
        let g = ffi::ScalpelAttn {
            n_heads: (q.row_len() / head_dim) as i32,
            n_kv_heads: (cache.row / head_dim) as i32,
            head_dim: head_dim as i32,
            t: t as i32,
            capacity: (cache.pages * PAGE) as i32,
            window: 0,
            scale: 1.0,
            softcap: 0.0,
        };
        let sq = step.ffi();
        let (qp, qd) = (q.mptr(), q.dtype.ffi());
        let (kc, vc) = (cache.k[layer].ptr as *mut u16, cache.v[layer].ptr as *mut u16);
        // SAFETY: shapes checked; the cache holds `capacity` rows.
        self.launch("rope_kv", |kern, s| unsafe {
            (kern.rope_kv)(
                s,
                qp,
                qd,
                k.cptr(),
                k.dtype.ffi(),
                v.cptr(),
                v.dtype.ffi(),
                kc,
                vc,
                &g,
                &sq,
                inv_freq.cptr(),
            )
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
        seq: usize,
        p: &AttnParams,
        lse: &CudaTensor,
    ) -> Result<CudaTensor> {
        let t = step.len();
        check(lse.shape == [p.n_heads, t] && q.rows() == t, || format!("attn_probs: lse {:?}", lse.shape))?;
        check(seq < step.seqs.len() && layer < cache.k.len(), || {
            format!("attn_probs: sequence {seq} of {}", step.seqs.len())
        })?;
        check_pages(step.max_page, cache.pages, "attn_probs")?;
        let span = &step.seqs[seq];
        let (n, s_len) = (span.len, span.end());
        let mut keep = None;
        let qb = self.as_bf16(q, &mut keep)?;
        let out = self.alloc(DType::F32, &[p.n_heads, n, s_len], "attention probabilities")?;
        let g = geometry(p, t, cache.pages * PAGE);
        let sq = step.ffi();
        let kc = cache.k[layer].ptr as *const u16;
        // SAFETY: out holds heads × n × s floats; the sequence's rows are in the step.
        self.launch_into("attn_probs", out, |k, s, o| unsafe {
            (k.attn_probs)(
                s,
                qb.cptr(),
                kc,
                &g,
                &sq,
                seq as i32,
                n as i32,
                lse.cptr(),
                s_len as i32,
                o.mptr(),
            )
        })
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
        // SAFETY: equal shapes.
        self.launch_into("glu", out, |k, s, o| unsafe {
            (k.glu)(s, gate.cptr(), up.cptr(), a, o.mptr(), gate.numel() as i64)
        })
    }

    fn softcap(&self, x: &mut CudaTensor, cap: f32) -> Result<()> {
        check(x.dtype == DType::F32, || "softcap: f32 only".into())?;
        let (xp, n) = (x.mptr(), x.numel() as i64);
        // SAFETY: numel elements.
        self.launch("softcap", |k, s| unsafe { (k.softcap)(s, xp, n, cap) })
    }

    fn gather_rows(&self, x: &CudaTensor, rows: &[usize]) -> Result<CudaTensor> {
        let (r, n) = (x.rows(), x.row_len());
        check(x.packed.is_none() && !rows.is_empty() && rows.iter().all(|&i| i < r), || {
            format!("gather_rows: rows {rows:?} of {r}")
        })?;
        let mut shape = x.shape.clone();
        shape[0] = rows.len();
        let out = self.alloc(x.dtype, &shape, "rows")?;
        let bytes = n * x.dtype.size();
        // One copy per run of consecutive rows (a sequence's rows are consecutive).
        let mut i = 0;
        while i < rows.len() {
            let mut j = i + 1;
            while j < rows.len() && rows[j] == rows[j - 1] + 1 {
                j += 1;
            }
            let src = x.ptr() + (rows[i] * bytes) as u64;
            self.dtod(out.ptr() + (i * bytes) as u64, src, (j - i) * bytes)?;
            i = j;
        }
        Ok(out)
    }

    fn write_rows(&self, x: &mut CudaTensor, first: usize, src: &CudaTensor) -> Result<()> {
        check(
            x.packed.is_none()
                && src.packed.is_none()
                && (src.dtype == x.dtype || x.dtype == DType::Bf16)
                && src.row_len() == x.row_len()
                && first + src.rows() <= x.rows(),
            || format!("write_rows: {:?} at row {first} of {:?}", src.shape, x.shape),
        )?;
        // A hook's values come back as f32; a bf16 point (a norm's output) takes them rounded.
        let mut keep = None;
        let src = if x.dtype == DType::Bf16 { self.as_bf16(src, &mut keep)? } else { src };
        let bytes = x.row_len() * x.dtype.size();
        self.dtod(x.ptr() + (first * bytes) as u64, src.ptr(), src.bytes())
    }

    fn cosine_rows(&self, table: &CudaTensor, v: &CudaTensor) -> Result<CudaTensor> {
        if let Some(p) = table.packed {
            return self.cosine_rows_packed(table, p, v);
        }
        let n = table.row_len();
        check(table.dtype == DType::Bf16 && v.numel() == n && v.dtype == DType::F32, || {
            "cosine_rows: shapes".into()
        })?;
        let out = self.alloc(DType::F32, &[table.rows()], "cosine similarities")?;
        let rows = table.rows() as i32;
        // SAFETY: shapes checked.
        self.launch_into("cosine_rows", out, |k, s, o| unsafe {
            (k.cosine_rows)(s, table.cptr(), v.cptr(), rows, n as i32, o.mptr())
        })
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
        let rp = list.as_ref().map_or(std::ptr::null(), |b| b.cptr::<i32>());
        let (xp, xd) = (x.mptr(), x.dtype.ffi());
        // SAFETY: row indices checked against x.
        self.launch("add_rows", |k, s| unsafe {
            (k.add_rows)(s, xp, xd, v.cptr(), scale, rp, count as i32, n as i32)
        })
    }

    fn set_row(&self, x: &mut CudaTensor, row: usize, values: &CudaTensor) -> Result<()> {
        let n = x.row_len();
        check(values.numel() == n && row < x.rows() && values.dtype == DType::F32, || {
            format!("replace: a row of {} values for rows of {n} (row {row} of {})", values.numel(), x.rows())
        })?;
        let (xp, xd) = (x.mptr(), x.dtype.ffi());
        // SAFETY: row < rows, n values.
        self.launch("set_row", |k, s| unsafe { (k.set_row)(s, xp, xd, values.cptr(), row as i32, n as i32) })
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
        let rp = list.as_ref().map_or(std::ptr::null(), |b| b.cptr::<i32>());
        let (xp, xd) = (x.mptr(), x.dtype.ffi());
        // SAFETY: row indices checked against x.
        self.launch("ablate_rows", |k, s| unsafe {
            (k.ablate_rows)(s, xp, xd, u.cptr(), rp, count as i32, n as i32)
        })
    }
}
