//! Activation patching: run a corrupted prompt, put one piece of the clean prompt's activations in
//! its place, and measure how much of the clean answer comes back — 0 where the piece carries
//! nothing of the difference, 1 where it carries all of it.
//!
//! Each patched run starts where the patch is: a patch at layer l and position p changes nothing
//! below layer l nor before position p (attention is causal), so the run goes from layer l on, over
//! positions p.., reading the corrupted run's cache for everything else. The position sweep walks p
//! from the last position down, so every run finds positions below its own exactly as the
//! corrupted run left them.

use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::{Logits, Model};
use crate::interp::capture::{capture, capture_in, row};
use crate::probe::{Captured, Edit, Point, Probes};

/// What is patched: one (layer, position) cell of a residual-width point, or one head at a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Site {
    /// `blocks.{l}.resid_pre`, per layer and position.
    #[value(alias = "resid_pre")]
    ResidPre,
    /// `blocks.{l}.attn_out`, per layer and position.
    #[value(alias = "attn_out")]
    AttnOut,
    /// `blocks.{l}.mlp_out`, per layer and position.
    #[value(alias = "mlp_out")]
    MlpOut,
    /// Each head's `blocks.{l}.attn_z` slice, per layer and head (all positions, or one).
    Heads,
}

impl std::str::FromStr for Site {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.replace('-', "_").as_str() {
            "resid_pre" => Ok(Site::ResidPre),
            "attn_out" => Ok(Site::AttnOut),
            "mlp_out" => Ok(Site::MlpOut),
            "heads" => Ok(Site::Heads),
            _ => Err(Error::Invalid(format!(
                "unknown patching site {s:?} (resid_pre, attn_out, mlp_out, heads)"
            ))),
        }
    }
}

impl Site {
    pub fn point(self, layer: usize) -> Point {
        match self {
            Site::ResidPre => Point::ResidPre(layer),
            Site::AttnOut => Point::AttnOut(layer),
            Site::MlpOut => Point::MlpOut(layer),
            Site::Heads => Point::AttnZ(layer),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Site::ResidPre => "resid_pre",
            Site::AttnOut => "attn_out",
            Site::MlpOut => "mlp_out",
            Site::Heads => "heads",
        }
    }
}

/// What is measured on the last position's logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// logit(answer) − logit(wrong).
    LogitDiff {
        answer: u32,
        wrong: u32,
    },
    Logit(u32),
    Prob(u32),
    LogProb(u32),
}

impl Metric {
    /// The metric called `name` — logit-diff (or logit_diff), logit, prob, logprob — of `answer`
    /// and, for logit-diff only, `wrong`; without a name, logit-diff when there is a wrong token
    /// and logprob otherwise: `scalpel patch --metric` and Python's `Model.patch(metric=)`.
    pub fn named(name: Option<&str>, answer: u32, wrong: Option<u32>) -> Result<Metric> {
        let name = name.unwrap_or(if wrong.is_some() { "logit-diff" } else { "logprob" });
        match (name.replace('_', "-").as_str(), wrong) {
            ("logit-diff", Some(wrong)) => Ok(Metric::LogitDiff { answer, wrong }),
            ("logit-diff", None) => Err(Error::Invalid("the logit-diff metric needs a wrong token".into())),
            ("logit" | "prob" | "logprob", Some(_)) => {
                Err(Error::Invalid(format!("a wrong token is only for the logit-diff metric, not {name}")))
            }
            ("logit", None) => Ok(Metric::Logit(answer)),
            ("prob", None) => Ok(Metric::Prob(answer)),
            ("logprob", None) => Ok(Metric::LogProb(answer)),
            _ => Err(Error::Invalid(format!("unknown metric {name:?} (logit-diff, logit, prob, logprob)"))),
        }
    }

    pub fn of(&self, logits: &[f32]) -> f32 {
        let lse = || super::log_sum_exp(logits);
        match *self {
            Metric::LogitDiff { answer, wrong } => logits[answer as usize] - logits[wrong as usize],
            Metric::Logit(a) => logits[a as usize],
            Metric::Prob(a) => (logits[a as usize] as f64 - lse()).exp() as f32,
            Metric::LogProb(a) => (logits[a as usize] as f64 - lse()) as f32,
        }
    }

    fn ids(&self) -> Vec<u32> {
        match *self {
            Metric::LogitDiff { answer, wrong } => vec![answer, wrong],
            Metric::Logit(a) | Metric::Prob(a) | Metric::LogProb(a) => vec![a],
        }
    }
}

/// One site's sweep: `normalized[l][i]` for layer l and position (or head) i, and the metric
/// itself in `raw`.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub site: Site,
    pub normalized: Vec<Vec<f32>>,
    pub raw: Vec<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct Patching {
    pub clean: f32,
    pub corrupted: f32,
    pub sweeps: Vec<Sweep>,
}

/// A clean and a corrupted prompt of the same length, run once each, ready to patch.
pub struct Patcher<'m, B: Backend> {
    model: &'m Model<B>,
    corrupted_ids: Vec<u32>,
    metric: Metric,
    pub clean: f32,
    pub corrupted: f32,
    clean_cap: BTreeMap<Point, Captured>,
    corrupted_cap: BTreeMap<Point, Captured>,
    cache: B::Cache,
}

impl<'m, B: Backend> Patcher<'m, B> {
    /// Runs both prompts: the clean one keeping `sites`' points at every layer, the corrupted one
    /// keeping its residual stream (where patched runs start) and its cache.
    pub fn new(
        model: &'m Model<B>,
        clean: &[u32],
        corrupted: &[u32],
        metric: Metric,
        sites: &[Site],
    ) -> Result<Self> {
        if clean.len() != corrupted.len() {
            return Err(Error::Invalid(format!(
                "the clean prompt has {} tokens and the corrupted one {}: patching pairs the runs position by position, so they must tokenize to the same length",
                clean.len(),
                corrupted.len()
            )));
        }
        model.config.check_ids(&metric.ids())?;
        let n = model.config.n_layers;
        let last = |ids: &[u32]| -> Result<f32> {
            let mut cache = model.new_cache(ids.len())?;
            let logits = model.forward(ids, 0, &mut cache, &mut Probes::none(), Logits::Last)?;
            Ok(metric.of(&model.backend.download(&logits)?))
        };
        // Measured without probes, as the patched runs are: patching nothing is then exactly 0
        // and patching the whole input exactly 1.
        let (clean_m, corrupted_m) = (last(clean)?, last(corrupted)?);
        let clean_cap = capture(model, clean, sites.iter().flat_map(|s| (0..n).map(|l| s.point(l))))?;
        let mut points: Vec<Point> = (0..n).map(Point::ResidPre).collect();
        if sites.contains(&Site::Heads) {
            points.extend((0..n).map(Point::AttnZ));
        }
        let mut cache = model.new_cache(corrupted.len())?;
        let corrupted_cap = capture_in(model, corrupted, points, Probes::none(), &mut cache)?;
        Ok(Patcher {
            model,
            corrupted_ids: corrupted.to_vec(),
            metric,
            clean: clean_m,
            corrupted: corrupted_m,
            clean_cap,
            corrupted_cap,
            cache,
        })
    }

    /// Where the patched metric lies between corrupted (0) and clean (1).
    pub fn normalize(&self, m: f32) -> f32 {
        (m - self.corrupted) / (self.clean - self.corrupted)
    }

    /// The metric of the corrupted run with `rows` (position, values) replaced at `point` (a
    /// point of layer `layer`, or `resid_pre` of it); the run starts at that layer and at the
    /// first patched position. With no rows it is the corrupted run itself.
    pub fn run(&mut self, layer: usize, point: Point, rows: &[(usize, Vec<f32>)]) -> Result<f32> {
        let from = rows.iter().map(|r| r.0).min().unwrap_or(0);
        let be = &self.model.backend;
        let resid = &self.corrupted_cap[&Point::ResidPre(layer)];
        let d = self.model.config.hidden_size;
        let t = self.corrupted_ids.len();
        let x = be.upload(&resid.data[from * d..], &[t - from, d])?;
        let mut probes = Probes::none();
        for (position, values) in rows {
            let row = be.upload(values, &[values.len()])?;
            probes.edit(point, Edit::Replace { position: *position, row })?;
        }
        let ids = &self.corrupted_ids[from..];
        let logits =
            self.model.forward_from(layer, x, ids, from, &mut self.cache, &mut probes, Logits::Last)?;
        Ok(self.metric.of(&be.download(&logits)?))
    }

    /// The clean run's values at `point`, position `position`.
    pub fn clean_row(&self, point: Point, position: usize) -> Vec<f32> {
        row(&self.clean_cap[&point], position).to_vec()
    }

    /// The corrupted run's `attn_z` row at `position` with head `head`'s slice from the clean run.
    fn mixed_head_row(&self, layer: usize, head: usize, position: usize) -> Vec<f32> {
        let hd = self.model.config.head_dim;
        let mut r = row(&self.corrupted_cap[&Point::AttnZ(layer)], position).to_vec();
        let clean = row(&self.clean_cap[&Point::AttnZ(layer)], position);
        r[head * hd..(head + 1) * hd].copy_from_slice(&clean[head * hd..(head + 1) * hd]);
        r
    }

    /// Rewrites the cache as the corrupted run left it (after a sweep changed it).
    fn restore_cache(&mut self) -> Result<()> {
        let resid = &self.corrupted_cap[&Point::ResidPre(0)];
        let x = self.model.backend.upload(&resid.data, &resid.shape)?;
        let ids = self.corrupted_ids.clone();
        self.model.forward_from(0, x, &ids, 0, &mut self.cache, &mut Probes::none(), Logits::Last)?;
        Ok(())
    }
}

/// Patches every (layer, position) of each position site and every (layer, head) of `Heads`
/// (over all positions, or only `head_position`), reporting the metric normalized so that the
/// corrupted run is 0 and the clean run 1.
pub fn patch<B: Backend>(
    model: &Model<B>,
    clean: &[u32],
    corrupted: &[u32],
    metric: Metric,
    sites: &[Site],
    head_position: Option<usize>,
) -> Result<Patching> {
    let c = &model.config;
    let (n, t, h) = (c.n_layers, clean.len(), c.n_heads);
    if let Some(p) = head_position
        && p >= t
    {
        return Err(Error::Invalid(format!("head position {p} is outside the {t} tokens")));
    }
    let mut p = Patcher::new(model, clean, corrupted, metric, sites)?;
    let gap = p.clean - p.corrupted;
    let distinct = gap.abs() > 1e-6 * p.clean.abs().max(p.corrupted.abs()).max(1.0);
    if !distinct {
        return Err(Error::Invalid(format!(
            "the clean and corrupted prompts give the same metric ({} and {}): there is no difference to restore; choose prompts or tokens the model tells apart",
            p.clean, p.corrupted
        )));
    }
    let positional: Vec<Site> = sites.iter().copied().filter(|s| *s != Site::Heads).collect();
    let runs = positional.len() * n * t + if sites.contains(&Site::Heads) { n * h } else { 0 };
    let bar = crate::progress::bar(runs as u64, "patching");
    let mut raw: BTreeMap<Site, Vec<Vec<f32>>> = BTreeMap::new();
    for s in &positional {
        raw.insert(*s, vec![vec![0.0; t]; n]);
    }
    for pos in (0..t).rev() {
        for s in &positional {
            for l in 0..n {
                if crate::mem::interrupted() {
                    return Err(Error::Interrupted("stopped while patching".into()));
                }
                let point = s.point(l);
                let values = p.clean_row(point, pos);
                raw.get_mut(s).unwrap()[l][pos] = p.run(l, point, &[(pos, values)])?;
                bar.inc(1);
            }
        }
    }
    if sites.contains(&Site::Heads) {
        p.restore_cache()?;
        let positions: Vec<usize> = match head_position {
            Some(q) => vec![q],
            None => (0..t).collect(),
        };
        let mut cells = vec![vec![0.0; h]; n];
        for (l, row) in cells.iter_mut().enumerate() {
            for (head, cell) in row.iter_mut().enumerate() {
                if crate::mem::interrupted() {
                    return Err(Error::Interrupted("stopped while patching".into()));
                }
                let rows: Vec<(usize, Vec<f32>)> =
                    positions.iter().map(|&q| (q, p.mixed_head_row(l, head, q))).collect();
                *cell = p.run(l, Point::AttnZ(l), &rows)?;
                bar.inc(1);
            }
        }
        raw.insert(Site::Heads, cells);
    }
    bar.finish_and_clear();
    let sweeps = sites
        .iter()
        .map(|s| {
            let raw = raw.remove(s).unwrap_or_default();
            let normalized = raw.iter().map(|r| r.iter().map(|&m| p.normalize(m)).collect()).collect();
            Sweep { site: *s, normalized, raw }
        })
        .collect();
    Ok(Patching { clean: p.clean, corrupted: p.corrupted, sweeps })
}
