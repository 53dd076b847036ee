//! The transformer forward pass, written once over [`Backend`], with a probe point between
//! every step. Llama and Gemma 3 differ only in what [`Config`] says.

use crate::backend::{AttnParams, Backend, Step, Tensor};
use crate::error::{Error, Result};
use crate::model::ModelFiles;
use crate::model::config::Config;
use crate::model::stored::Stored;
pub use crate::model::stored::WeightMode;
use crate::model::weights::{LayerWeight, Weight, layer_weights};
use crate::probe::{Point, Probes, Span, StepProbes};

pub struct LayerParams<T> {
    attn_norm: T,
    wq: T,
    wk: T,
    wv: T,
    wo: T,
    q_norm: Option<T>,
    k_norm: Option<T>,
    post_attn_norm: Option<T>,
    ffn_norm: T,
    w_gate: T,
    w_up: T,
    w_down: T,
    post_ffn_norm: Option<T>,
}

/// The logits of a step of several sequences: one tensor, `rows[i]` the rows of sequence i.
pub struct BatchLogits<T> {
    pub logits: T,
    pub rows: Vec<std::ops::Range<usize>>,
}

/// A model's parameters on a backend.
pub struct Model<B: Backend> {
    pub config: Config,
    embed: B::Tensor,
    final_norm: B::Tensor,
    /// None when tied to the embedding table.
    lm_head: Option<B::Tensor>,
    layers: Vec<LayerParams<B::Tensor>>,
    rope: Vec<B::Tensor>,
    /// Declared last so it is dropped last: the tensors above live in its memory.
    pub backend: B,
}

/// Which rows the LM head is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation): skips T−1 rows of the largest matrix product.
    Last,
    All,
}

impl<B: Backend> Model<B> {
    /// Loads every weight from the files onto the backend, as the files' `weight_mode` says
    /// (stored, by default), one tensor at a time.
    pub fn load(backend: B, files: &ModelFiles) -> Result<Self> {
        Self::load_with(backend, files, files.weight_mode)
    }

    /// Loads every weight from the files onto the backend, as stored or as f32, one tensor at a
    /// time (so host memory holds at most one converted tensor beyond what the backend keeps).
    pub fn load_with(backend: B, files: &ModelFiles, mode: WeightMode) -> Result<Self> {
        let c = &files.config;
        let stored_bytes = |w: Weight| match mode {
            WeightMode::Stored => files.weights.stored_len(w, c) as u128,
            WeightMode::F32 => w.shape(c).iter().map(|&d| d as u128).product::<u128>() * 4,
        };
        Self::build(backend, c.clone(), stored_bytes, |w| {
            let stored = files.weights.load_stored(w, c)?.ok_or_else(|| {
                Error::format(
                    files.weights.path(),
                    files.weights.name_of(w, c),
                    "missing from the model file",
                )
            })?;
            Ok(Some(match mode {
                WeightMode::Stored => stored,
                WeightMode::F32 => stored.to_f32_stored()?,
            }))
        })
    }

    /// A model of `config`'s exact shapes with random weights (matrices ~ ±0.02, norms ~ 1), for
    /// benchmarks at sizes nobody needs to download.
    pub fn random(backend: B, config: Config, seed: u64) -> Result<Self> {
        let c = config.clone();
        let f32_bytes = |w: Weight| w.shape(&c).iter().map(|&d| d as u128).product::<u128>() * 4;
        Self::build(backend, config.clone(), f32_bytes, |w| {
            let shape = w.shape(&config);
            let n: usize = shape.iter().product();
            let salt = seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let (centre, spread) = if shape.len() == 1 { (1.0, 0.1) } else { (0.0, 0.02) };
            Ok(Some(Stored::from_f32(random_values(n, salt, centre, spread), &shape)))
        })
    }

    /// Loads every weight through `source` onto the backend, one tensor at a time. A tied LM
    /// head is not asked for. `stored_bytes` says what each weight will take, for the check
    /// before loading.
    fn build(
        backend: B,
        c: Config,
        stored_bytes: impl Fn(Weight) -> u128,
        source: impl Fn(Weight) -> Result<Option<Stored>>,
    ) -> Result<Self> {
        let per_layer = layer_weights(&c);
        let total = 3 + c.n_layers * per_layer.len();
        let mut weights: Vec<Weight> = vec![Weight::Embed, Weight::FinalNorm];
        if !c.tie_embeddings {
            weights.push(Weight::LmHead);
        }
        weights.extend((0..c.n_layers).flat_map(|l| per_layer.iter().map(move |&w| Weight::Layer(l, w))));
        let elements: u128 =
            weights.iter().map(|w| w.shape(&c).iter().map(|&d| d as u128).product::<u128>()).sum();
        backend.reserve_weights(elements, weights.iter().map(|&w| stored_bytes(w)).sum())?;
        let bar = crate::progress::bar(total as u64, "loading");
        let need = |w: Weight| -> Result<B::Tensor> {
            let data = source(w)?.ok_or_else(|| Error::Invalid(format!("weight {w:?} is missing")))?;
            let t = backend.weight(data)?;
            bar.inc(1);
            Ok(t)
        };
        let embed = need(Weight::Embed)?;
        let final_norm = need(Weight::FinalNorm)?;
        let lm_head = if c.tie_embeddings {
            bar.inc(1);
            None
        } else {
            Some(need(Weight::LmHead)?)
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let w = |lw: LayerWeight| need(Weight::Layer(l, lw));
            let opt = |cond: bool, lw: LayerWeight| if cond { w(lw).map(Some) } else { Ok(None) };
            layers.push(LayerParams {
                attn_norm: w(LayerWeight::AttnNorm)?,
                wq: w(LayerWeight::Q)?,
                wk: w(LayerWeight::K)?,
                wv: w(LayerWeight::V)?,
                wo: w(LayerWeight::O)?,
                q_norm: opt(c.qk_norm, LayerWeight::QNorm)?,
                k_norm: opt(c.qk_norm, LayerWeight::KNorm)?,
                post_attn_norm: opt(c.sandwich_norms, LayerWeight::PostAttnNorm)?,
                ffn_norm: w(LayerWeight::FfnNorm)?,
                w_gate: w(LayerWeight::Gate)?,
                w_up: w(LayerWeight::Up)?,
                w_down: w(LayerWeight::Down)?,
                post_ffn_norm: opt(c.sandwich_norms, LayerWeight::PostFfnNorm)?,
            });
        }
        bar.finish_and_clear();
        let rope = c
            .rope_inv_freq
            .iter()
            .map(|f| backend.weight(Stored::from_f32(f.clone(), &[f.len()])))
            .collect::<Result<Vec<_>>>()?;
        Ok(Model { config: c, backend, embed, final_norm, lm_head, layers, rope })
    }

    /// Parameters held (a tied LM head counted once).
    pub fn parameter_count(&self) -> usize {
        let n = |t: &B::Tensor| t.shape().iter().product::<usize>();
        let opt = |t: &Option<B::Tensor>| t.as_ref().map_or(0, n);
        let layers: usize = self
            .layers
            .iter()
            .map(|w| {
                n(&w.attn_norm)
                    + n(&w.wq)
                    + n(&w.wk)
                    + n(&w.wv)
                    + n(&w.wo)
                    + opt(&w.q_norm)
                    + opt(&w.k_norm)
                    + opt(&w.post_attn_norm)
                    + n(&w.ffn_norm)
                    + n(&w.w_gate)
                    + n(&w.w_up)
                    + n(&w.w_down)
                    + opt(&w.post_ffn_norm)
            })
            .sum();
        n(&self.embed) + n(&self.final_norm) + opt(&self.lm_head) + layers
    }

    /// The embedding table [vocab, hidden].
    pub fn embedding(&self) -> &B::Tensor {
        &self.embed
    }

    /// The unembedding [vocab, hidden]: the LM head, or the embedding when tied.
    pub fn unembedding(&self) -> &B::Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Rows of the unembedding (LM head) for `ids`, as f32 on the host: the direction each
    /// token's logit reads from the final normalized residual.
    pub fn unembedding_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.config.check_ids(ids)?;
        let step = self.backend.step(ids, 0)?;
        self.backend.download(&self.backend.embed(self.unembedding(), &step, None)?)
    }

    /// What multiplies each normalized value in the final norm (its weight, or 1 + weight).
    pub fn final_norm_gain(&self) -> Result<Vec<f32>> {
        let g = self.backend.download(&self.final_norm)?;
        Ok(g.into_iter().map(|w| self.config.norm_kind.gain(w)).collect())
    }

    pub fn new_cache(&self, capacity: usize) -> Result<B::Cache> {
        let c = &self.config;
        self.backend.new_cache(c.n_layers, c.n_kv_heads, c.head_dim, capacity)
    }

    fn attn_params(&self, layer: usize) -> AttnParams {
        let c = &self.config;
        AttnParams {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            scale: c.attn_scale,
            window: c.layers[layer].window,
            softcap: c.attn_softcap,
        }
    }

    /// Final norm and LM head (with soft-capping) applied to residual rows: the logit lens uses
    /// this on intermediate layers.
    pub fn unembed(&self, x: &B::Tensor) -> Result<B::Tensor> {
        let c = &self.config;
        let h = self.backend.rms_norm(x, &self.final_norm, c.rms_eps, c.norm_kind)?;
        self.head(&h)
    }

    fn head(&self, normed: &B::Tensor) -> Result<B::Tensor> {
        let mut logits = self.backend.matmul(normed, self.unembedding())?;
        if let Some(cap) = self.config.final_softcap {
            self.backend.softcap(&mut logits, cap)?;
        }
        Ok(logits)
    }

    /// Runs `ids` at positions start.. through the model, reading and extending `cache`, and
    /// returns logits for the last row or all rows. Probes see and edit every point on the way.
    /// A batch of one sequence (see [`Model::forward_batch`]) over the cache's pages in order.
    pub fn forward(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut B::Cache,
        probes: &mut Probes<B>,
        which: Logits,
    ) -> Result<B::Tensor> {
        let step = self.checked_step(ids, start, cache)?;
        self.forward_step(&step, cache, probes, which)
    }

    /// As [`Model::forward`], but from layer `first` on, with `x` [ids.len(), d] as the tokens'
    /// `resid_pre(first)`: the layers below are not run and their cache entries are left as they
    /// are. Activation patching runs this way: a patch at layer l changes nothing below l, so the
    /// corrupted run's cache and residual stream stand in for those layers.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_from(
        &self,
        first: usize,
        x: B::Tensor,
        ids: &[u32],
        start: usize,
        cache: &mut B::Cache,
        probes: &mut Probes<B>,
        which: Logits,
    ) -> Result<B::Tensor> {
        let c = &self.config;
        if first >= c.n_layers || x.shape() != [ids.len(), c.hidden_size] {
            return Err(Error::Invalid(format!(
                "forward from layer {first} of {} with a residual of {:?} for {} tokens",
                c.n_layers,
                x.shape(),
                ids.len()
            )));
        }
        let step = self.checked_step(ids, start, cache)?;
        let mut each = [probes];
        let out = self.run_layers(first, x, &step, cache, &mut StepProbes { each: &mut each }, &[which])?;
        Ok(out.logits)
    }

    /// The device's copy of `ids` at positions start.., after checking they fit the cache and
    /// the vocabulary.
    fn checked_step(&self, ids: &[u32], start: usize, cache: &B::Cache) -> Result<B::Step> {
        if ids.is_empty() {
            return Err(Error::Invalid("forward: no tokens".into()));
        }
        let capacity = self.backend.cache_capacity(cache);
        if start + ids.len() > capacity {
            return Err(Error::Invalid(format!(
                "forward: positions up to {} exceed the KV cache of {capacity}",
                start + ids.len()
            )));
        }
        self.config.check_ids(ids)?;
        self.backend.step(ids, start)
    }

    /// The forward pass of one sequence over tokens the device already holds (see
    /// [`Backend::step`]).
    pub fn forward_step(
        &self,
        step: &B::Step,
        cache: &mut B::Cache,
        probes: &mut Probes<B>,
        which: Logits,
    ) -> Result<B::Tensor> {
        let mut each = [probes];
        Ok(self.forward_batch(step, cache, &mut each, &[which])?.logits)
    }

    /// The forward pass of a step of several sequences (see [`Backend::batch`]): the products run
    /// once over every row, attention per sequence over its own pages, and each sequence has its
    /// own probes (`probes[i]` for the step's sequence i, positions in its own numbering) and its
    /// own choice of logit rows (`which[i]`). The logits come back as one tensor whose rows are
    /// each sequence's in turn, `rows[i]` saying where.
    pub fn forward_batch(
        &self,
        step: &B::Step,
        cache: &mut B::Cache,
        probes: &mut [&mut Probes<B>],
        which: &[Logits],
    ) -> Result<BatchLogits<B::Tensor>> {
        let seqs = step.seqs();
        if probes.len() != seqs.len() || which.len() != seqs.len() {
            return Err(Error::Invalid(format!(
                "forward: {} sequences with {} probe sets and {} logit choices",
                seqs.len(),
                probes.len(),
                which.len()
            )));
        }
        let _range =
            self.backend.range(|| format!("forward {} tokens of {} sequences", step.len(), seqs.len()));
        let probes = &mut StepProbes { each: probes };
        let be = &self.backend;
        let mut x = be.embed(&self.embed, step, self.config.embed_scale)?;
        probes.visit(be, Point::Embed, &mut x, &Span::of(seqs))?;
        self.run_layers(0, x, step, cache, probes, which)
    }

    /// Layers `first..` on the residual stream `x`, then the final norm and the LM head.
    fn run_layers(
        &self,
        first: usize,
        mut x: B::Tensor,
        step: &B::Step,
        cache: &mut B::Cache,
        probes: &mut StepProbes<'_, '_, B>,
        which: &[Logits],
    ) -> Result<BatchLogits<B::Tensor>> {
        let c = &self.config;
        let be = &self.backend;
        let spans = Span::of(step.seqs());
        let (eps, nk) = (c.rms_eps, c.norm_kind);
        // The sublayer output not yet added to the residual stream: the add is fused with the
        // next norm unless a probe needs the stream in between.
        let mut pending: Option<B::Tensor> = None;
        for (l, w) in self.layers.iter().enumerate().skip(first) {
            // Ctrl-C: a long prefill stops at the next layer rather than running to the end.
            if crate::mem::interrupted() {
                return Err(Error::Interrupted(format!("stopped in layer {l} of the forward pass")));
            }
            let _range = be.range(|| format!("layer {l}"));
            self.layer(l, w, &mut x, &mut pending, step, &spans, cache, probes)?;
        }
        let last = Point::ResidPost(c.n_layers - 1);
        if let Some(m) = pending.take() {
            be.add_assign(&mut x, &m)?;
        }
        probes.visit(be, last, &mut x, &spans)?;

        // Each sequence's rows that go through the LM head: its last (generation), or all of
        // them where it asked, or where its probes want the last two points.
        let full: Vec<bool> = probes
            .each
            .iter()
            .zip(which)
            .map(|(p, w)| *w == Logits::All || p.wants(Point::FinalNorm) || p.wants(Point::Logits))
            .collect();
        let mut head_spans = Vec::with_capacity(spans.len());
        let mut rows = Vec::with_capacity(spans.len());
        for (s, &all) in spans.iter().zip(&full) {
            let (first_row, n) = if all { (s.row, s.len) } else { (s.row + s.len - 1, 1) };
            head_spans.push(Span { row: rows.len(), len: n, start: s.start + first_row - s.row });
            rows.extend(first_row..first_row + n);
        }
        let x = if rows.len() == x.rows() { x } else { be.gather_rows(&x, &rows)? };
        let mut h = be.rms_norm(&x, &self.final_norm, eps, nk)?;
        probes.visit(be, Point::FinalNorm, &mut h, &head_spans)?;
        let mut logits = self.head(&h)?;
        probes.visit(be, Point::Logits, &mut logits, &head_spans)?;
        // What each sequence gets back: its last row, or all its rows (a sequence that wanted
        // its last row may have had all of them computed for its probes).
        let mut keep = Vec::with_capacity(rows.len());
        let mut out_rows = Vec::with_capacity(spans.len());
        for (s, w) in head_spans.iter().zip(which) {
            let mine = match w {
                Logits::Last => s.row + s.len - 1..s.row + s.len,
                Logits::All => s.row..s.row + s.len,
            };
            out_rows.push(keep.len()..keep.len() + mine.len());
            keep.extend(mine);
        }
        if keep.len() != logits.rows() {
            logits = be.gather_rows(&logits, &keep)?;
        }
        Ok(BatchLogits { logits, rows: out_rows })
    }

    /// One transformer block on the residual stream `x`; its MLP output is left in `pending` for
    /// the next add (fused with the next norm).
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        l: usize,
        w: &LayerParams<B::Tensor>,
        x: &mut B::Tensor,
        pending: &mut Option<B::Tensor>,
        step: &B::Step,
        spans: &[Span],
        cache: &mut B::Cache,
        probes: &mut StepProbes<'_, '_, B>,
    ) -> Result<()> {
        let c = &self.config;
        let be = &self.backend;
        let (eps, nk) = (c.rms_eps, c.norm_kind);
        let before =
            if l == 0 { vec![Point::ResidPre(0)] } else { vec![Point::ResidPost(l - 1), Point::ResidPre(l)] };
        let h = self.add_norm(x, pending.take(), &before, &w.attn_norm, probes, spans)?;
        let p = self.attn_params(l);
        let mut q = be.matmul(&h, &w.wq)?;
        let mut k = be.matmul(&h, &w.wk)?;
        let v = be.matmul(&h, &w.wv)?;
        if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
            q = be.rms_norm(&q, qn, eps, nk)?;
            k = be.rms_norm(&k, kn, eps, nk)?;
        }
        be.rope_kv(&mut q, &k, &v, cache, l, step, c.head_dim, &self.rope[c.layers[l].rope])?;
        let (mut attn, lse) = be.attention(&q, cache, l, step, &p)?;
        if probes.observes(Point::AttnProbs(l)) {
            for (i, (s, seq_probes)) in spans.iter().zip(probes.each.iter_mut()).enumerate() {
                if seq_probes.observes(Point::AttnProbs(l)) {
                    let probs = be.attn_probs(&q, cache, l, step, i, &p, &lse)?;
                    seq_probes.record(be, Point::AttnProbs(l), &probs, s.start)?;
                }
            }
        }
        if probes.wants(Point::AttnZ(l)) {
            let rows = attn.rows();
            attn.set_shape(&[rows, c.n_heads, c.head_dim])?;
            probes.visit(be, Point::AttnZ(l), &mut attn, spans)?;
            attn.set_shape(&[rows, c.n_heads * c.head_dim])?;
        }
        let mut o = be.matmul(&attn, &w.wo)?;
        let mut heads = match probes.requests(Point::HeadOut(l)) {
            true => Some(self.head_outputs(&attn, &o, w)?),
            false => None,
        };
        if let Some(n) = &w.post_attn_norm {
            o = be.rms_norm(&o, n, eps, nk)?;
        }
        if let Some(h) = &mut heads
            && probes.visit(be, Point::HeadOut(l), h, spans)?
        {
            o = sum_heads(be, h)?;
        }
        probes.visit(be, Point::AttnOut(l), &mut o, spans)?;

        let h = self.add_norm(x, Some(o), &[Point::ResidMid(l)], &w.ffn_norm, probes, spans)?;
        let gate = be.matmul(&h, &w.w_gate)?;
        let up = be.matmul(&h, &w.w_up)?;
        let mut act = be.glu(&gate, &up, c.activation)?;
        probes.visit(be, Point::MlpPost(l), &mut act, spans)?;
        let mut m = be.matmul(&act, &w.w_down)?;
        if let Some(n) = &w.post_ffn_norm {
            m = be.rms_norm(&m, n, eps, nk)?;
        }
        probes.visit(be, Point::MlpOut(l), &mut m, spans)?;
        *pending = Some(m);
        Ok(())
    }

    /// Each head's share of the attention output, [T, H, d]: head h's slice of the mixed values
    /// `attn` [T, H·head_dim] through its columns of the output projection, computed as one product
    /// of H·T rows (each row zero outside its head). With a norm after the sublayer (Gemma) each
    /// share is scaled as the whole output is, the norm's 1/rms frozen at the unsplit output `o`'s
    /// value, so the shares still sum to `attn_out`.
    fn head_outputs(&self, attn: &B::Tensor, o: &B::Tensor, w: &LayerParams<B::Tensor>) -> Result<B::Tensor> {
        let (be, c) = (&self.backend, &self.config);
        let (t, h, hd) = (attn.rows(), c.n_heads, c.head_dim);
        let z = be.download(attn)?;
        let mut spread = vec![0f32; h * t * h * hd];
        for head in 0..h {
            for row in 0..t {
                let from = row * h * hd + head * hd;
                let to = (head * t + row) * h * hd + head * hd;
                spread[to..to + hd].copy_from_slice(&z[from..from + hd]);
            }
        }
        let parts = be.download(&be.matmul(&be.upload(&spread, &[h * t, h * hd])?, &w.wo)?)?;
        let d = parts.len() / (h * t);
        // Per output row, what multiplies the projection: 1, or the frozen norm's gain/rms.
        let scale: Vec<f32> = match &w.post_attn_norm {
            None => vec![1.0; t * d],
            Some(n) => {
                let (o, g) = (be.download(o)?, be.download(n)?);
                let mut s = Vec::with_capacity(t * d);
                for row in o.chunks(d) {
                    let inv = crate::backend::cpu::inv_rms(row, c.rms_eps);
                    s.extend(g.iter().map(|&g| inv * c.norm_kind.gain(g)));
                }
                s
            }
        };
        let mut out = vec![0f32; t * h * d];
        for row in 0..t {
            for head in 0..h {
                let part = &parts[(head * t + row) * d..][..d];
                let dst = &mut out[(row * h + head) * d..][..d];
                for ((o, &p), &s) in dst.iter_mut().zip(part).zip(&scale[row * d..(row + 1) * d]) {
                    *o = p * s;
                }
            }
        }
        be.upload(&out, &[t, h, d])
    }

    /// Adds `delta` (if any) to the residual stream, lets probes see the stream at `points`, and
    /// returns its norm: one fused kernel when no probe asked for those points.
    fn add_norm(
        &self,
        x: &mut B::Tensor,
        delta: Option<B::Tensor>,
        points: &[Point],
        w: &B::Tensor,
        probes: &mut StepProbes<'_, '_, B>,
        spans: &[Span],
    ) -> Result<B::Tensor> {
        let (be, eps, nk) = (&self.backend, self.config.rms_eps, self.config.norm_kind);
        let watched = points.iter().any(|p| probes.wants(*p));
        match delta {
            Some(d) if !watched => be.add_rms_norm(x, &d, w, eps, nk),
            delta => {
                if let Some(d) = delta {
                    be.add_assign(x, &d)?;
                }
                for p in points {
                    probes.visit(be, *p, x, spans)?;
                }
                be.rms_norm(x, w, eps, nk)
            }
        }
    }
}

/// The attention output rebuilt from edited per-head shares [T, H, d]: their sum over heads.
fn sum_heads<B: Backend>(be: &B, heads: &B::Tensor) -> Result<B::Tensor> {
    let (t, h) = (heads.rows(), heads.shape()[1]);
    let d = heads.row_len() / h;
    let v = be.download(heads)?;
    let mut out = vec![0f32; t * d];
    for (row, dst) in out.chunks_mut(d).enumerate() {
        for part in v[row * h * d..(row + 1) * h * d].chunks(d) {
            dst.iter_mut().zip(part).for_each(|(o, p)| *o += p);
        }
    }
    be.upload(&out, &[t, d])
}

/// `n` values centre ± spread, uniform, from a counter-based hash (parallel and reproducible).
fn random_values(n: usize, seed: u64, centre: f32, spread: f32) -> Vec<f32> {
    use rayon::prelude::*;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            centre + spread * ((z >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}
