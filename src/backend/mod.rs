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

/// The tokens of one forward call and their positions, as the device holds them. A decode step
/// keeps the same device buffers from call to call, so a captured CUDA graph can replay it.
pub trait Step {
    /// Position of the first token.
    fn start(&self) -> usize;
    /// Number of tokens.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the last position.
    fn end(&self) -> usize {
        self.start() + self.len()
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
    /// A step of `len` tokens whose device buffers and host staging never move, for recording.
    fn fixed_step(&self, _len: usize) -> Result<Self::Step> {
        Err(crate::error::Error::Unsupported(format!("{}: recorded decode steps", self.name())))
    }
    /// Writes the next call's ids and start position into a fixed step's host staging.
    fn set_step(&self, _step: &mut Self::Step, _ids: &[u32], _start: usize) -> Result<()> {
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

    fn new_cache(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<Self::Cache>;
    fn cache_capacity(&self, cache: &Self::Cache) -> usize;

    /// Hands the token ids of one forward call, at positions start.., to the device.
    fn step(&self, ids: &[u32], start: usize) -> Result<Self::Step>;

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
    /// Causal attention of q [T, heads·head_dim] at the step's positions over the layer's cache
    /// (positions 0..end). Returns the output [T, heads·head_dim] and each row's log-sum-exp of
    /// scaled scores [heads, T].
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        step: &Self::Step,
        p: &AttnParams,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// The softmax probabilities [heads, T, end] that `attention` used, recomputed from its
    /// log-sum-exp; masked entries are 0.
    fn attn_probs(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        step: &Self::Step,
        p: &AttnParams,
        lse: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// act(gate) ⊙ up.
    fn glu(&self, gate: &Self::Tensor, up: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// x ← cap · tanh(x / cap).
    fn softcap(&self, x: &mut Self::Tensor, cap: f32) -> Result<()>;
    /// The last row of x.
    fn last_row(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Cosine similarity of the vector v [n] with every row of table [rows, n]: [rows].
    fn cosine_rows(&self, table: &Self::Tensor, v: &Self::Tensor) -> Result<Self::Tensor>;

    /// x[r] += scale · v for each listed row (v has one row's length).
    fn add_rows(&self, x: &mut Self::Tensor, v: &Self::Tensor, scale: f32, rows: &[usize]) -> Result<()>;
    /// x[row] = values.
    fn set_row(&self, x: &mut Self::Tensor, row: usize, values: &Self::Tensor) -> Result<()>;
    /// x[r] ← x[r] − (x[r]·u) u for each listed row; u is a unit vector.
    fn ablate_rows(&self, x: &mut Self::Tensor, u: &Self::Tensor, rows: &[usize]) -> Result<()>;
}
