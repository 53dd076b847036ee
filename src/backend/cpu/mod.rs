//! The CPU backend, the reference every device kernel is tested against, itself tested against
//! Hugging Face transformers: f32 activations and f32 arithmetic throughout. Weight matrices stay
//! in the format their file stores them (GGUF blocks, f16, bf16) and are multiplied on it by
//! [`qmatmul`], which dequantizes to exactly the f32 values of the reference dequantizers, so the
//! products equal dequantize-then-multiply up to summation order; weights loaded as f32 (the
//! reference path, `WeightMode::F32`) go through the `gemm` crate. The rest is plain loops,
//! parallel over rows or heads with rayon where the work is large enough.

pub mod qmatmul;
pub(crate) mod spin_pool;

use std::sync::Arc;

use rayon::prelude::*;

use self::qmatmul::{QMatrix, QType};
use super::{AttnParams, Backend, Device, PAGE, SeqSpan, Step, Tensor, check_pages, check_spans, pages_for};
use crate::error::{Error, Result};
use crate::model::config::{Activation, NormKind};
use crate::model::stored::Stored;

/// Below this many elements an op runs on one thread: rayon's fork/join costs more than it saves.
const PAR_MIN: usize = 1 << 15;

/// The CPU's thread count in all: RAYON_NUM_THREADS when set to a positive number (rayon's own
/// rule), else one per core.
pub fn configured_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Makes the calling thread one of the global rayon pool's workers, so that the ops it runs
/// split their work from inside the pool: it takes a share of each op itself and waits on the
/// others by spinning, where a thread outside the pool hands every op to the workers and sleeps
/// until they wake it. On the 2-core dev machine that hand-off cost ~40 µs per op: SmolLM2
/// decode went from 82 to 110-120 tok/s on 2 threads, and from 36 to 68 tok/s on one. The pool
/// keeps RAYON_NUM_THREADS (or one per core) threads in all, this one included.
///
/// For programs whose parallel work all starts on this thread (the CLI, the benches): with one
/// thread in all, this thread is the pool's only worker, and a parallel call from another
/// thread would wait until this one runs parallel work of its own. Call it first thing, before
/// anything builds the global pool (an error then).
pub fn use_this_thread_in_pool() -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .map_err(|e| Error::Invalid(format!("the CPU thread pool: {e}")))
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    /// The values, row-major; empty for a packed weight.
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
    packed: Option<Packed>,
}

/// A weight matrix kept as its file stores it.
#[derive(Clone)]
struct Packed {
    format: QType,
    stored: Arc<Stored>,
}

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.format == other.format && Arc::ptr_eq(&self.stored, &other.stored)
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes of {})", self.stored.bytes().len(), self.format.name())
    }
}

impl Packed {
    fn matrix(&self) -> Result<QMatrix<'_>> {
        let s = &self.stored;
        QMatrix::new(self.format, s.shape[0], s.shape[1], s.bytes())
            .map_err(|e| Error::Invalid(e.to_string()))
    }
}

impl Tensor for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn shape_mut(&mut self) -> &mut Vec<usize> {
        &mut self.shape
    }
}

impl CpuTensor {
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Invalid(format!("{} values for shape {shape:?}", data.len())));
        }
        Ok(CpuTensor { data, shape: shape.to_vec(), packed: None })
    }

    /// The stored format of a weight kept packed (None: plain f32 values).
    pub fn packed_format(&self) -> Option<&'static str> {
        self.packed.as_ref().map(|p| p.format.name())
    }

    /// The values as f32 (a packed weight dequantized).
    pub fn values(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match &self.packed {
            Some(p) => Ok(std::borrow::Cow::Owned(p.stored.to_f32()?)),
            None => Ok(std::borrow::Cow::Borrowed(&self.data)),
        }
    }
}

fn qerr(e: qmatmul::QError) -> Error {
    Error::Invalid(e.to_string())
}

pub struct CpuCache {
    /// Per layer, the pool: [pages · PAGE, kv_heads, head_dim], a sequence's position p at slot
    /// pages[p / PAGE] · PAGE + p % PAGE (one sequence in a cache of its own: slot p).
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// The positions it was made for.
    pub capacity: usize,
    pub pages: usize,
    /// kv_heads · head_dim.
    pub row: usize,
}

#[derive(Clone, Debug)]
pub struct CpuStep {
    pub ids: Vec<u32>,
    pub seqs: Vec<SeqSpan>,
    /// Each row's sequence (an index into `seqs`).
    pub row_seq: Vec<usize>,
    /// The highest page any sequence names.
    pub max_page: usize,
}

impl Step for CpuStep {
    fn seqs(&self) -> &[SeqSpan] {
        &self.seqs
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

impl CpuStep {
    /// Row `r`'s sequence and position.
    fn at(&self, r: usize) -> (&SeqSpan, usize) {
        let s = &self.seqs[self.row_seq[r]];
        (s, s.start + r - s.row)
    }
}

/// The pool slot of position `pos` of the sequence `s`.
fn slot(s: &SeqSpan, pos: usize) -> usize {
    s.pages[pos / PAGE] as usize * PAGE + pos % PAGE
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(Error::Invalid(what())) }
}

/// Runs `f` over chunks of `chunk` elements, in parallel when the total is large.
fn for_rows(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if data.len() >= PAR_MIN {
        data.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// RMSNorm's scale of one row, 1/√(mean(x²) + ε), the mean summed in f64: the reference's, and
/// what the microscope freezes when it splits a normalized sum into parts.
pub fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / row.len() as f64;
    1.0 / ((ms as f32) + eps).sqrt()
}

/// RMSNorm of consecutive groups of w.len() values, in place.
fn rms_norm_in_place(data: &mut [f32], w: &[f32], eps: f32, kind: NormKind) {
    let n = w.len();
    for_rows(data, n, |_, row| {
        let inv = inv_rms(row, eps);
        for (v, &g) in row.iter_mut().zip(w) {
            *v = (*v * inv) * kind.gain(g);
        }
    });
}

/// Rotates each head of x [T, heads·head_dim] by its row's position (rows of several sequences
/// each have their own), in Hugging Face's half-split layout. cos/sin as the reference computes
/// them: the angle an f32 product, its cosine rounded once.
pub fn rope_at(x: &mut CpuTensor, head_dim: usize, positions: &[usize], inv_freq: &[f32]) -> Result<()> {
    let half = head_dim / 2;
    check(inv_freq.len() == half && x.row_len().is_multiple_of(head_dim), || "rope: geometry".into())?;
    check(positions.len() == x.rows(), || "rope: a position per row".into())?;
    let row_len = x.row_len();
    let rows = x.rows();
    let mut table = Vec::with_capacity(rows * half);
    for &pos in positions {
        let pos = pos as f32;
        for &f in inv_freq {
            let a = (pos * f) as f64;
            table.push((a.cos() as f32, a.sin() as f32));
        }
    }
    for_rows(&mut x.data, row_len, |t, row| {
        let cs = &table[t * half..(t + 1) * half];
        for head in row.chunks_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for ((x1, x2), &(c, s)) in a.iter_mut().zip(b.iter_mut()).zip(cs) {
                let (u, v) = (*x1, *x2);
                *x1 = u * c - v * s;
                *x2 = v * c + u * s;
            }
        }
    });
    Ok(())
}

/// Scaled (and soft-capped) scores of one query row against keys first..=last of one KV head.
/// Scaled (and capped) scores of q against the keys at positions first..=last of sequence `seq`.
#[allow(clippy::too_many_arguments)]
fn scores(
    q: &[f32],
    k: &[f32],
    seq: &SeqSpan,
    kv_row: usize,
    kvh: usize,
    hd: usize,
    first: usize,
    last: usize,
    p: &AttnParams,
) -> Vec<f32> {
    (first..=last)
        .map(|pos| {
            let s = slot(seq, pos);
            let key = &k[s * kv_row + kvh * hd..s * kv_row + (kvh + 1) * hd];
            let x = dot(q, key) * p.scale;
            match p.softcap {
                Some(c) => c * (x / c).tanh(),
                None => x,
            }
        })
        .collect()
}

/// The dot product of two equally long rows, in eight interleaved partial sums: the compiler
/// keeps them in one vector register, where a single running sum is a chain of dependent adds
/// (four times slower on head_dim 64, and attention's cost in a decode step).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 8;
    let mut acc = [0f32; W];
    let (ac, bc) = (a.chunks_exact(W), b.chunks_exact(W));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..W {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn check_attention(
    q: &CpuTensor,
    cache: &CpuCache,
    layer: usize,
    step: &CpuStep,
    p: &AttnParams,
) -> Result<usize> {
    let t = q.rows();
    check(q.row_len() == p.n_heads * p.head_dim, || {
        format!("attention: q rows of {} for {} heads of {}", q.row_len(), p.n_heads, p.head_dim)
    })?;
    check(cache.row == p.n_kv_heads * p.head_dim, || {
        "attention: cache geometry differs from the layer's".into()
    })?;
    check(p.n_kv_heads > 0 && p.n_heads.is_multiple_of(p.n_kv_heads), || {
        "attention: heads not a multiple of KV heads".into()
    })?;
    check(layer < cache.k.len(), || format!("attention: layer {layer} past the cache"))?;
    check(t == step.len(), || format!("attention: {t} query rows for a step of {}", step.len()))?;
    check_pages(step.max_page, cache.pages, "attention")?;
    Ok(t)
}

impl Device for Cpu {
    type Step = CpuStep;
    type Graph = ();

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn reserve_weights(&self, _elements: u128, stored_bytes: u128) -> Result<()> {
        crate::mem::check_host_alloc(stored_bytes, "the model's weights")
    }
}

impl Backend for Cpu {
    type Tensor = CpuTensor;
    type Cache = CpuCache;

    /// Matrices in a format the products handle stay as stored (a view of the mapped file);
    /// vectors and f32 matrices become f32 values.
    fn weight(&self, w: Stored) -> Result<CpuTensor> {
        let format = QType::from_ggml(w.dtype).filter(|&f| f != QType::F32 && w.shape.len() == 2);
        match format {
            Some(format) => {
                let p = Packed { format, stored: Arc::new(w) };
                p.matrix()?;
                let shape = p.stored.shape.clone();
                Ok(CpuTensor { data: Vec::new(), shape, packed: Some(p) })
            }
            None => {
                let shape = w.shape.clone();
                CpuTensor::new(w.into_f32()?, &shape)
            }
        }
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(data.to_vec(), shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.values()?.into_owned())
    }

    fn new_cache(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<CpuCache> {
        let row = n_kv_heads * head_dim;
        let pages = pages_for(capacity).max(1);
        let per_layer = (pages * PAGE)
            .checked_mul(row)
            .ok_or_else(|| Error::Invalid(format!("KV cache of {capacity} positions overflows")))?;
        crate::mem::check_host_alloc(
            2 * n_layers as u128 * per_layer as u128 * 4,
            &format!("the KV cache ({n_layers} layers × {capacity} positions × {row} × 2, f32)"),
        )?;
        Ok(CpuCache {
            k: (0..n_layers).map(|_| vec![0.0; per_layer]).collect(),
            v: (0..n_layers).map(|_| vec![0.0; per_layer]).collect(),
            capacity,
            pages,
            row,
        })
    }

    fn cache_capacity(&self, cache: &CpuCache) -> usize {
        cache.capacity
    }

    fn cache_pages(&self, cache: &CpuCache) -> usize {
        cache.pages
    }

    fn copy_page(&self, cache: &mut CpuCache, from: usize, to: usize) -> Result<()> {
        check(from < cache.pages && to < cache.pages, || {
            format!("copy_page: pages {from} → {to} of {}", cache.pages)
        })?;
        let n = PAGE * cache.row;
        for layer in cache.k.iter_mut().chain(cache.v.iter_mut()) {
            layer.copy_within(from * n..(from + 1) * n, to * n);
        }
        Ok(())
    }

    fn batch(&self, ids: &[u32], seqs: &[SeqSpan]) -> Result<CpuStep> {
        let max_page = check_spans(ids.len(), seqs)?;
        let row_seq = seqs.iter().enumerate().flat_map(|(i, s)| std::iter::repeat_n(i, s.len)).collect();
        Ok(CpuStep { ids: ids.to_vec(), seqs: seqs.to_vec(), row_seq, max_page })
    }

    fn embed(&self, table: &CpuTensor, step: &CpuStep, scale: Option<f32>) -> Result<CpuTensor> {
        let (vocab, d) = (table.shape[0], table.row_len());
        let mut out = vec![0f32; step.ids.len() * d];
        for (&id, row) in step.ids.iter().zip(out.chunks_mut(d)) {
            let id = id as usize;
            check(id < vocab, || format!("token id {id} is outside the vocabulary of {vocab}"))?;
            match &table.packed {
                Some(p) => qmatmul::dequantize_rows(&p.matrix()?, id, row).map_err(qerr)?,
                None => row.copy_from_slice(&table.data[id * d..(id + 1) * d]),
            }
            if let Some(s) = scale {
                row.iter_mut().for_each(|x| *x *= s);
            }
        }
        CpuTensor::new(out, &[step.ids.len(), d])
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32, kind: NormKind) -> Result<CpuTensor> {
        let n = w.data.len();
        check(n > 0 && x.data.len().is_multiple_of(n), || {
            format!("rms_norm: {} values in groups of {n}", x.data.len())
        })?;
        let mut out = x.clone();
        rms_norm_in_place(&mut out.data, &w.data, eps, kind);
        Ok(out)
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        let (m, k) = (x.rows(), x.row_len());
        let n = w.shape[0];
        check(w.row_len() == k, || format!("matmul: [{m}, {k}] times [{n}, {}]ᵀ", w.row_len()))?;
        let mut out = vec![0f32; m * n];
        if let Some(p) = &w.packed {
            qmatmul::matmul(&p.matrix()?, &x.data, m, &mut out).map_err(qerr)?;
            return CpuTensor::new(out, &[m, n]);
        }
        // SAFETY: the pointers and strides describe the three buffers exactly: x is [m, k] row-major,
        // w is [n, k] row-major read as the [k, n] matrix wᵀ (row stride 1, column stride k), out is
        // [m, n] row-major; all are live for the duration of the call.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.data.as_ptr(),
                1,
                k as isize,
                w.data.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        CpuTensor::new(out, &[m, n])
    }

    fn add_assign(&self, x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
        check(x.shape == y.shape, || format!("add: shapes {:?} and {:?}", x.shape, y.shape))?;
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn rope_kv(
        &self,
        q: &mut CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        cache: &mut CpuCache,
        layer: usize,
        step: &CpuStep,
        head_dim: usize,
        inv_freq: &CpuTensor,
    ) -> Result<()> {
        let t = step.len();
        check(layer < cache.k.len(), || format!("rope_kv: layer {layer} past the cache"))?;
        check(k.row_len() == cache.row && v.shape == k.shape && q.rows() == t && k.rows() == t, || {
            format!("rope_kv: q {:?}, k {:?}, v {:?} for {t} positions", q.shape, k.shape, v.shape)
        })?;
        check_pages(step.max_page, cache.pages, "rope_kv")?;
        let positions: Vec<usize> = (0..t).map(|r| step.at(r).1).collect();
        rope_at(q, head_dim, &positions, &inv_freq.data)?;
        let mut k = k.clone();
        rope_at(&mut k, head_dim, &positions, &inv_freq.data)?;
        let n = cache.row;
        for r in 0..t {
            let (seq, pos) = step.at(r);
            let at = slot(seq, pos) * n;
            cache.k[layer][at..at + n].copy_from_slice(&k.data[r * n..(r + 1) * n]);
            cache.v[layer][at..at + n].copy_from_slice(&v.data[r * n..(r + 1) * n]);
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &CpuTensor,
        cache: &CpuCache,
        layer: usize,
        step: &CpuStep,
        p: &AttnParams,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let t = check_attention(q, cache, layer, step, p)?;
        let (hd, h) = (p.head_dim, p.n_heads);
        let group = h / p.n_kv_heads;
        let (k, v) = (&cache.k[layer], &cache.v[layer]);
        // One task per (head, query row): its output slice and log-sum-exp. A decode step's
        // heads run on the spin pool, whose helpers stay awake for the products around them
        // (on rayon, or on this thread alone, the next product paid to wake a sleeping worker).
        let one = |i: usize| {
            let (head, row) = (i / t, i % t);
            let (seq, pos) = step.at(row);
            let kvh = head / group;
            let qv = &q.data[row * h * hd + head * hd..row * h * hd + (head + 1) * hd];
            let first = p.first_key(pos);
            let s = scores(qv, k, seq, cache.row, kvh, hd, first, pos, p);
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f32> = s.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = weights.iter().sum();
            let mut out = vec![0f32; hd];
            for (j, w) in weights.iter().enumerate() {
                let key = slot(seq, first + j);
                let val = &v[key * cache.row + kvh * hd..key * cache.row + (kvh + 1) * hd];
                let w = w / sum;
                out.iter_mut().zip(val).for_each(|(o, x)| *o += w * x);
            }
            (out, max + sum.ln())
        };
        let keys = step.seqs.iter().map(|s| s.len * s.end()).sum::<usize>();
        let work: Vec<(Vec<f32>, f32)> = if h * keys * hd < 8 * PAR_MIN {
            let mut work = vec![(Vec::new(), 0.0); h * t];
            spin_pool::for_each_mut(&mut work, &|i, slot| *slot = one(i));
            work
        } else {
            (0..h * t).into_par_iter().map(one).collect()
        };
        let mut out = vec![0f32; t * h * hd];
        let mut lse = vec![0f32; h * t];
        for (i, (o, l)) in work.into_iter().enumerate() {
            let (head, row) = (i / t, i % t);
            out[row * h * hd + head * hd..row * h * hd + (head + 1) * hd].copy_from_slice(&o);
            lse[head * t + row] = l;
        }
        Ok((CpuTensor::new(out, &[t, h * hd])?, CpuTensor::new(lse, &[h, t])?))
    }

    fn attn_probs(
        &self,
        q: &CpuTensor,
        cache: &CpuCache,
        layer: usize,
        step: &CpuStep,
        seq: usize,
        p: &AttnParams,
        lse: &CpuTensor,
    ) -> Result<CpuTensor> {
        let t = check_attention(q, cache, layer, step, p)?;
        let (hd, h) = (p.head_dim, p.n_heads);
        check(lse.shape == [h, t], || format!("attn_probs: lse of shape {:?}", lse.shape))?;
        check(seq < step.seqs.len(), || format!("attn_probs: sequence {seq} of {}", step.seqs.len()))?;
        let span = &step.seqs[seq];
        let (n, s_len) = (span.len, span.end());
        let group = h / p.n_kv_heads;
        let k = &cache.k[layer];
        let mut out = vec![0f32; h * n * s_len];
        out.par_chunks_mut(s_len).enumerate().for_each(|(i, dst)| {
            let (head, i) = (i / n, i % n);
            let (row, pos) = (span.row + i, span.start + i);
            let qv = &q.data[row * h * hd + head * hd..row * h * hd + (head + 1) * hd];
            let first = p.first_key(pos);
            let s = scores(qv, k, span, cache.row, head / group, hd, first, pos, p);
            let l = lse.data[head * t + row];
            for (j, s) in s.iter().enumerate() {
                dst[first + j] = (s - l).exp();
            }
        });
        CpuTensor::new(out, &[h, n, s_len])
    }

    fn glu(&self, gate: &CpuTensor, up: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        check(gate.shape == up.shape, || format!("glu: shapes {:?} and {:?}", gate.shape, up.shape))?;
        let mut out = gate.clone();
        let row = out.row_len();
        for_rows(&mut out.data, row, |r, g| {
            let u = &up.data[r * row..(r + 1) * row];
            for (g, &u) in g.iter_mut().zip(u) {
                let a = match act {
                    Activation::Silu => silu(*g),
                    Activation::GeluTanh => gelu_tanh(*g),
                };
                *g = a * u;
            }
        });
        Ok(out)
    }

    fn softcap(&self, x: &mut CpuTensor, cap: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        Ok(())
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        let (r, n) = (x.rows(), x.row_len());
        check(!rows.is_empty() && rows.iter().all(|&i| i < r), || {
            format!("gather_rows: rows {rows:?} of {r}")
        })?;
        let mut shape = x.shape.clone();
        shape[0] = rows.len();
        CpuTensor::new(
            rows.iter().flat_map(|&i| x.data[i * n..(i + 1) * n].iter().copied()).collect(),
            &shape,
        )
    }

    fn write_rows(&self, x: &mut CpuTensor, first: usize, src: &CpuTensor) -> Result<()> {
        let n = x.row_len();
        check(src.row_len() == n && first + src.rows() <= x.rows(), || {
            format!("write_rows: {:?} at row {first} of {:?}", src.shape, x.shape)
        })?;
        x.data[first * n..(first + src.rows()) * n].copy_from_slice(&src.data);
        Ok(())
    }

    fn cosine_rows(&self, table: &CpuTensor, v: &CpuTensor) -> Result<CpuTensor> {
        let n = table.row_len();
        check(v.data.len() == n, || format!("cosine: vector of {} for rows of {n}", v.data.len()))?;
        let vv: f64 = v.data.iter().map(|&x| x as f64 * x as f64).sum();
        let cosine = |row: &[f32]| {
            let (mut dot, mut rr) = (0f64, 0f64);
            for (&a, &b) in row.iter().zip(&v.data) {
                dot += a as f64 * b as f64;
                rr += a as f64 * a as f64;
            }
            (dot / (rr * vv).sqrt().max(1e-30)) as f32
        };
        let out: Vec<f32> = match &table.packed {
            None => table.data.par_chunks(n).map(cosine).collect(),
            Some(p) => {
                // Rows dequantized a few hundred at a time, never the whole table.
                const ROWS: usize = 256;
                let q = p.matrix()?;
                let chunks: Vec<Result<Vec<f32>>> = (0..table.rows().div_ceil(ROWS))
                    .into_par_iter()
                    .map(|c| {
                        let first = c * ROWS;
                        let rows = ROWS.min(table.rows() - first);
                        let mut buf = vec![0f32; rows * n];
                        qmatmul::dequantize_rows(&q, first, &mut buf).map_err(qerr)?;
                        Ok(buf.chunks(n).map(cosine).collect())
                    })
                    .collect();
                chunks.into_iter().collect::<Result<Vec<_>>>()?.concat()
            }
        };
        CpuTensor::new(out, &[table.rows()])
    }

    fn add_rows(&self, x: &mut CpuTensor, v: &CpuTensor, scale: f32, rows: &[usize]) -> Result<()> {
        let n = x.row_len();
        check(v.data.len() == n, || format!("add: vector of {} for rows of {n}", v.data.len()))?;
        for &r in rows {
            check(r < x.rows(), || format!("add: row {r} of {}", x.rows()))?;
            x.data[r * n..(r + 1) * n].iter_mut().zip(&v.data).for_each(|(a, b)| *a += scale * b);
        }
        Ok(())
    }

    fn set_row(&self, x: &mut CpuTensor, row: usize, values: &CpuTensor) -> Result<()> {
        let n = x.row_len();
        check(values.data.len() == n && row < x.rows(), || {
            format!(
                "replace: a row of {} values for rows of {n} (row {row} of {})",
                values.data.len(),
                x.rows()
            )
        })?;
        x.data[row * n..(row + 1) * n].copy_from_slice(&values.data);
        Ok(())
    }

    fn ablate_rows(&self, x: &mut CpuTensor, u: &CpuTensor, rows: &[usize]) -> Result<()> {
        let n = x.row_len();
        check(u.data.len() == n, || format!("ablate: direction of {} for rows of {n}", u.data.len()))?;
        for &r in rows {
            check(r < x.rows(), || format!("ablate: row {r} of {}", x.rows()))?;
            let row = &mut x.data[r * n..(r + 1) * n];
            let dot: f64 = row.iter().zip(&u.data).map(|(a, b)| *a as f64 * *b as f64).sum();
            row.iter_mut().zip(&u.data).for_each(|(a, b)| *a -= (dot as f32) * b);
        }
        Ok(())
    }
}
