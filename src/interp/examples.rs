//! Top activating examples: the contexts in a corpus where a neuron, a direction or a head's
//! attention to a token is strongest — each window of text run once through the model, one probe
//! point kept, every position scored, the best K kept with their surroundings.

use std::collections::HashSet;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::capture::capture;
use crate::probe::{Captured, Point};

/// What is scored at each position.
#[derive(Clone, Debug)]
pub enum Probe {
    /// `blocks.{layer}.mlp_post[:, neuron]`.
    Neuron { layer: usize, neuron: usize },
    /// `blocks.{layer}.resid_post · unit` (a steering vector's direction, normalized).
    Direction { layer: usize, unit: Vec<f32> },
    /// The attention mass head `head` of `layer` puts, from each query, on keys that are `key`.
    HeadToToken { layer: usize, head: usize, key: u32 },
}

impl Probe {
    pub fn point(&self) -> Point {
        match self {
            Probe::Neuron { layer, .. } => Point::MlpPost(*layer),
            Probe::Direction { layer, .. } => Point::ResidPost(*layer),
            Probe::HeadToToken { layer, .. } => Point::AttnProbs(*layer),
        }
    }

    /// One score per position of `ids`, from the point's capture.
    fn scores(&self, cap: &Captured, ids: &[u32]) -> Vec<f32> {
        let t = ids.len();
        match self {
            Probe::Neuron { neuron, .. } => {
                let f = cap.shape[1];
                (0..t).map(|q| cap.data[q * f + neuron]).collect()
            }
            Probe::Direction { unit, .. } => {
                let d = unit.len();
                (0..t)
                    .map(|q| {
                        let row = &cap.data[q * d..(q + 1) * d];
                        row.iter().zip(unit).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32
                    })
                    .collect()
            }
            Probe::HeadToToken { head, key, .. } => {
                let s = cap.shape[2];
                (0..t)
                    .map(|q| {
                        let row = &cap.data[(head * t + q) * s..][..s];
                        // + 0.0: an empty sum is -0.0, shown as "-0.000".
                        (0..=q).filter(|&k| ids[k] == *key).map(|k| row[k]).sum::<f32>() + 0.0
                    })
                    .collect()
            }
        }
    }

    /// Checks the probe against the model's shape.
    pub fn check<B: Backend>(&self, model: &Model<B>) -> Result<()> {
        let c = &model.config;
        let bad = |m: String| Err(Error::Invalid(m));
        match self {
            Probe::Neuron { neuron, .. } if *neuron >= c.intermediate_size => {
                bad(format!("--neuron {neuron}: the layer has neurons 0..{}", c.intermediate_size - 1))
            }
            Probe::Direction { unit, .. } if unit.len() != c.hidden_size => bad(format!(
                "the direction has {} values but the model's residual stream {}",
                unit.len(),
                c.hidden_size
            )),
            Probe::HeadToToken { head, .. } if *head >= c.n_heads => {
                bad(format!("--head {head}: the model has heads 0..{}", c.n_heads - 1))
            }
            Probe::HeadToToken { key, .. } if *key as usize >= c.vocab_size => {
                bad(format!("token id {key} is outside the vocabulary of {}", c.vocab_size))
            }
            _ => Ok(()),
        }
    }
}

/// One context: `ids[focus]` scored `score`, with its neighbours' scores in `scores`.
#[derive(Clone, Debug)]
pub struct Example {
    pub score: f32,
    /// Index of the document in the corpus, and of the token in the document.
    pub document: usize,
    pub position: usize,
    pub ids: Vec<u32>,
    pub scores: Vec<f32>,
    pub focus: usize,
}

/// The K best examples seen so far, best first; ties keep the earlier one.
pub struct TopK {
    k: usize,
    pub examples: Vec<Example>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK { k: k.max(1), examples: Vec::new() }
    }

    fn admits(&self, score: f32) -> bool {
        score.is_finite() && (self.examples.len() < self.k || score > self.examples[self.k - 1].score)
    }

    fn insert(&mut self, e: Example) {
        let at = self.examples.iter().position(|x| e.score > x.score).unwrap_or(self.examples.len());
        self.examples.insert(at, e);
        self.examples.truncate(self.k);
    }
}

/// Scans a document's tokens in windows of at most `window` positions (each later window led by
/// `prefix`, the model's BOS where it adds one), scoring every position not in `skip` (special
/// tokens), and keeps the best in `top` with `context` tokens either side (within the window).
/// A window's first position is left out unless `include_first`: with nothing before it, it is
/// where a model without BOS parks its attention sink, with activations tens of times the others'
/// (SmolLM2's first token projects ~8x higher on any direction) that would fill every list.
#[allow(clippy::too_many_arguments)]
pub fn scan_document<B: Backend>(
    model: &Model<B>,
    probe: &Probe,
    ids: &[u32],
    prefix: &[u32],
    skip: &HashSet<u32>,
    document: usize,
    window: usize,
    context: usize,
    include_first: bool,
    top: &mut TopK,
) -> Result<()> {
    let window = window.max(prefix.len() + 1);
    let mut start = 0;
    while start < ids.len() {
        let lead: &[u32] = if start == 0 { &[] } else { prefix };
        let take = (window - lead.len()).min(ids.len() - start);
        let w: Vec<u32> = lead.iter().chain(&ids[start..start + take]).copied().collect();
        let cap = capture(model, &w, [probe.point()])?;
        let scores = probe.scores(&cap[&probe.point()], &w);
        for (q, &s) in scores.iter().enumerate() {
            if (q == 0 && !include_first) || skip.contains(&w[q]) || !top.admits(s) {
                continue;
            }
            let (a, b) = (q.saturating_sub(context), (q + context + 1).min(w.len()));
            top.insert(Example {
                score: s,
                document,
                position: start + q - lead.len(),
                ids: w[a..b].to_vec(),
                scores: scores[a..b].to_vec(),
                focus: q - a,
            });
        }
        start += take;
    }
    Ok(())
}
