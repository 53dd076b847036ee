//! The operations the forward pass needs, as a trait with one implementation per device.
//!
//! Ops sit at the granularity the kernels do (a fused attention, a GLU), so a device backend can
//! implement each with one kernel, and every op has a CPU twin in `cpu.rs` that is the oracle
//! for it. Shapes are row-major; "rows" are token positions.

pub mod cpu;
pub mod cuda;
pub mod timed;

use crate::error::Result;
use crate::model::config::{Activation, NormKind};
use crate::sample::SamplingParams;

/// Per-layer attention settings.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier of q·k before softcapping and softmax.
    pub scale: f32,
    /// A query at position p sees keys in (p − window, p]; None = all earlier keys.
    pub window: Option<usize>,
    /// Gemma 2-style tanh soft-capping of the attention scores.
    pub softcap: Option<f32>,
}

impl AttnParams {
    /// The first key position a query at `pos` may attend to.
    pub fn first_key(&self, pos: usize) -> usize {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }
}

/// Time spent in one kind of op.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpTime {
    pub op: String,
    pub calls: usize,
    pub total_ms: f64,
}

pub trait Tensor {
    fn shape(&self) -> &[usize];

    fn shape_mut(&mut self) -> &mut Vec<usize>;

    /// The same values seen with another shape of the same size (row-major, nothing moves):
    /// `[T, heads·head_dim]` as `[T, heads, head_dim]` for a probe.
    fn set_shape(&mut self, shape: &[usize]) -> crate::Result<()> {
        let (have, want) = (self.shape().iter().product::<usize>(), shape.iter().product::<usize>());
        if have != want {
            return Err(crate::Error::Invalid(format!(
                "reshape: {:?} ({have} values) as {shape:?} ({want})",
                self.shape()
            )));
        }
        *self.shape_mut() = shape.to_vec();
        Ok(())
    }

    fn rows(&self) -> usize {
        self.shape()[0]
    }

    /// Elements per row (the product of all dimensions after the first).
    fn row_len(&self) -> usize {
        self.shape()[1..].iter().product()
    }
}

/// Positions per KV-cache page (the kernels' `SCALPEL_PAGE`).
pub const PAGE: usize = cuda::ffi::SCALPEL_PAGE as usize;

/// Pages that hold positions 0..positions.
pub fn pages_for(positions: usize) -> usize {
    positions.div_ceil(PAGE)
}

/// One sequence's share of a step: `len` consecutive rows from `row`, at positions
/// `start..start + len` of that sequence, whose keys and values live in `pages` (page i holds its
/// positions i·PAGE..(i+1)·PAGE; it covers at least 0..start + len). Positions before `start` are
/// what the pages already hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    pub row: usize,
    pub len: usize,
    pub start: usize,
    pub pages: Vec<u32>,
}

impl SeqSpan {
    /// One sequence alone in a cache of its own, whose pages are the cache's in order (what a
    /// single-sequence call runs on).
    pub fn alone(len: usize, start: usize) -> Self {
        SeqSpan { row: 0, len, start, pages: (0..pages_for(start + len) as u32).collect() }
    }

    /// One past its last position in this step.
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// Checks a step's layout: sequences in row order covering `rows` rows, each with at least one
/// row and pages covering its positions. Returns the highest page any of them names.
pub fn check_spans(rows: usize, seqs: &[SeqSpan]) -> Result<usize> {
    let bad = |what: String| Err(crate::error::Error::Invalid(format!("step: {what}")));
    if seqs.is_empty() || rows == 0 {
        return bad("no sequences or no tokens".into());
    }
    let mut next = 0;
    let mut max_page = 0;
    for (i, s) in seqs.iter().enumerate() {
        if s.row != next || s.len == 0 {
            return bad(format!("sequence {i} has rows {}..{} after row {next}", s.row, s.row + s.len));
        }
        if s.end() > i32::MAX as usize || pages_for(s.end()) > s.pages.len() {
            return bad(format!(
                "sequence {i} reaches position {} with {} pages of {PAGE}",
                s.end(),
                s.pages.len()
            ));
        }
        max_page = max_page.max(s.pages.iter().copied().max().unwrap_or(0) as usize);
        next += s.len;
    }
    if next != rows {
        return bad(format!("{rows} tokens but the sequences hold {next} rows"));
    }
    Ok(max_page)
}

/// Checks that the highest page a step names (`check_spans`' answer) is in a pool of `pages`.
pub fn check_pages(max_page: usize, pages: usize, what: &str) -> Result<()> {
    if max_page < pages {
        return Ok(());
    }
    Err(crate::error::Error::Invalid(format!("{what}: page {max_page} past the cache's {pages} pages")))
}

/// The tokens of one forward call — rows of one or several sequences, each at its own positions
/// over its own pages — as the device holds them. A recorded decode step keeps the same device
/// buffers from call to call, so a captured CUDA graph can replay it.
pub trait Step {
    /// The sequences of the step, in row order.
    fn seqs(&self) -> &[SeqSpan];
    /// Number of tokens (rows), all sequences together.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of the first sequence's first row (a single-sequence step's start).
    fn start(&self) -> usize {
        self.seqs()[0].start
    }

    /// One past the first sequence's last position.
    fn end(&self) -> usize {
        self.seqs()[0].end()
    }
}

/// What a device offers besides arithmetic: recorded decode steps (CUDA graphs), named ranges for
/// a profiler, its memory and per-op timing. Each method has a default for a device without the
/// capability (the CPU), which says so.
pub trait Device: Send + Sync {
    /// The tokens of one forward call as the device holds them.
    type Step: Step;
    /// A recorded decode step that can be replayed (a CUDA graph); `()` where there is none.
    type Graph;

    fn name(&self) -> &'static str;

    /// Whether decode steps can be recorded once and replayed.
    fn supports_graphs(&self) -> bool {
        false
    }
    /// A step of `rows` tokens of as many sequences, each with page tables of `max_pages`
    /// entries, whose device buffers and host staging never move: for recording a decode step.
    fn fixed_step(&self, _rows: usize, _max_pages: usize) -> Result<Self::Step> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }
    /// Writes the next call's ids, positions and page tables into a fixed step's host staging
    /// (one row per sequence).
    fn set_step(&self, _step: &mut Self::Step, _ids: &[u32], _seqs: &[SeqSpan]) -> Result<()> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }
    /// Copies a fixed step's staging to the device; recorded, so a replay copies the new values.
    fn upload_step(&self, _step: &Self::Step) -> Result<()> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }
    /// Starts recording the work issued until `end_capture`.
    fn begin_capture(&self) -> Result<()> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }
    fn end_capture(&self) -> Result<Self::Graph> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }
    /// Runs a recording again (asynchronously; a download waits for it).
    fn replay(&self, _graph: &Self::Graph) -> Result<()> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }

    /// Time spent per op since the backend was created, when it was asked to measure it.
    fn op_times(&self) -> Result<Vec<OpTime>> {
        Ok(Vec::new())
    }

    /// Device memory held (now, peak) in bytes, where the backend tracks it.
    fn device_memory(&self) -> Option<(usize, usize)> {
        None
    }

    /// Checks, before any weight is loaded, that the backend can hold weights of `elements`
    /// values that the loader hands over as `stored_bytes` (the file's format, or f32): an
    /// out-of-memory error that says how much, instead of a crash halfway through loading.
    fn reserve_weights(&self, _elements: u128, _stored_bytes: u128) -> Result<()> {
        Ok(())
    }

    /// Whether named ranges (NVTX) are worth emitting: a profiler reads them.
    fn ranges(&self) -> bool {
        false
    }
    fn push_range(&self, _name: &str) {}
    fn pop_range(&self) {}

    /// A named range (for Nsight timelines) that closes when dropped; nothing, and no name
    /// formatted, where no profiler reads ranges.
    fn range(&self, name: impl FnOnce() -> String) -> Range<'_, Self>
    where
        Self: Sized,
    {
        if self.ranges() {
            self.push_range(&name());
            Range { device: Some(self) }
        } else {
            Range { device: None }
        }
    }
}

/// An open named range; see [`Device::range`].
pub struct Range<'a, D: Device> {
    device: Option<&'a D>,
}

impl<D: Device> Drop for Range<'_, D> {
    fn drop(&mut self) {
        if let Some(d) = self.device {
            d.pop_range();
        }
    }
}

/// The operations of the forward pass and the interventions, one implementation per device.
pub trait Backend: Device {
    type Tensor: Tensor + Send + Sync;
    /// The key/value cache of every layer, preallocated for a number of positions.
    type Cache: Send;

    /// Picks the next token from one row of logits on the device with the uniform number `u`,
    /// by the rule of [`crate::sample::pick`]; None when this backend samples on the host (or
    /// cannot apply these parameters, e.g. a repetition penalty).
    fn sample(&self, _logits: &Self::Tensor, _params: &SamplingParams, _u: f64) -> Result<Option<u32>> {
        Ok(None)
    }

    /// Takes a parameter as its file stores it; the backend keeps it in that format where it
    /// can multiply on it, else in its own parameter precision.
    fn weight(&self, w: crate::model::stored::Stored) -> Result<Self::Tensor>;
    /// Copies activations in.
    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    /// Copies a tensor out as f32.
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;

    /// A KV cache of every layer: a pool of pages that holds at least `capacity` positions
    /// (`pages_for(capacity)` pages of [`PAGE`] positions).
    fn new_cache(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<Self::Cache>;
    /// The positions the cache was made for: what one sequence alone in it may use.
    fn cache_capacity(&self, cache: &Self::Cache) -> usize;
    /// Pages in the cache's pool.
    fn cache_pages(&self, cache: &Self::Cache) -> usize;
    /// Copies every layer's keys and values of page `from` to page `to` (copy on write of a shared
    /// prefix).
    fn copy_page(&self, cache: &mut Self::Cache, from: usize, to: usize) -> Result<()>;

    /// Hands the token ids of one forward call of one sequence, at positions start.., to the
    /// device: a step of one sequence over the cache's pages in order.
    fn step(&self, ids: &[u32], start: usize) -> Result<Self::Step> {
        self.batch(ids, &[SeqSpan::alone(ids.len(), start)])
    }

    /// Hands the token ids of one forward call of several sequences to the device (`seqs` in row
    /// order, see [`check_spans`]).
    fn batch(&self, ids: &[u32], seqs: &[SeqSpan]) -> Result<Self::Step>;

    /// out[t] = table[ids[t]] · scale.
    fn embed(&self, table: &Self::Tensor, step: &Self::Step, scale: Option<f32>) -> Result<Self::Tensor>;
    /// RMSNorm over consecutive groups of `w.len()` elements (a row, or one head of a row).
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32, kind: NormKind) -> Result<Self::Tensor>;
    /// x += delta, then RMSNorm of the new x: the residual add fused with the next norm.
    fn add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        delta: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
        kind: NormKind,
    ) -> Result<Self::Tensor> {
        self.add_assign(x, delta)?;
        self.rms_norm(x, w, eps, kind)
    }
    /// x [m, k] times wᵀ, w [n, k]: [m, n].
    fn matmul(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// Rotates q [T, heads·head_dim] in place and writes k rotated and v (both
    /// [T, kv_heads·head_dim]) into the layer's cache at the step's positions: RoPE fused into
    /// the cache write. Hugging Face's half-split layout; `inv_freq` has head_dim/2 entries.
    #[allow(clippy::too_many_arguments)]
    fn rope_kv(
        &self,
        q: &mut Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        cache: &mut Self::Cache,
        layer: usize,
        step: &Self::Step,
        head_dim: usize,
        inv_freq: &Self::Tensor,
    ) -> Result<()>;
    /// Causal attention of q [T, heads·head_dim], each row at its position over its own
    /// sequence's keys in the layer's cache (its positions 0..=its own). Returns the output
    /// [T, heads·head_dim] and each row's log-sum-exp of scaled scores [heads, T].
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        step: &Self::Step,
        p: &AttnParams,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// The softmax probabilities [heads, rows, end] that `attention` used for the rows of the
    /// step's sequence `seq` (end: one past its last position), recomputed from the step's
    /// log-sum-exp; masked entries are 0.
    #[allow(clippy::too_many_arguments)]
    fn attn_probs(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        step: &Self::Step,
        seq: usize,
        p: &AttnParams,
        lse: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// act(gate) ⊙ up.
    fn glu(&self, gate: &Self::Tensor, up: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// x ← cap · tanh(x / cap).
    fn softcap(&self, x: &mut Self::Tensor, cap: f32) -> Result<()>;
    /// The listed rows of x, in that order.
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor>;
    /// The last row of x.
    fn last_row(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        match x.rows() {
            0 => Err(crate::error::Error::Invalid("last_row of an empty tensor".into())),
            r => self.gather_rows(x, &[r - 1]),
        }
    }
    /// x[first..first + src.rows()] = src (rows of x's length; values in x's precision).
    fn write_rows(&self, x: &mut Self::Tensor, first: usize, src: &Self::Tensor) -> Result<()>;

    /// Cosine similarity of the vector v [n] with every row of table [rows, n]: [rows].
    fn cosine_rows(&self, table: &Self::Tensor, v: &Self::Tensor) -> Result<Self::Tensor>;

    /// x[r] += scale · v for each listed row (v has one row's length).
    fn add_rows(&self, x: &mut Self::Tensor, v: &Self::Tensor, scale: f32, rows: &[usize]) -> Result<()>;
    /// x[row] = values.
    fn set_row(&self, x: &mut Self::Tensor, row: usize, values: &Self::Tensor) -> Result<()>;
    /// x[r] ← x[r] − (x[r]·u) u for each listed row; u is a unit vector.
    fn ablate_rows(&self, x: &mut Self::Tensor, u: &Self::Tensor, rows: &[usize]) -> Result<()>;
}
