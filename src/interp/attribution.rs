//! Direct logit attribution: the final residual stream at one position is a sum — the embedding
//! plus every layer's attention and MLP outputs (the attention split further per head) — and, with
//! the final norm's 1/rms frozen at the run's value, the logit of a token (or the difference of two)
//! is linear in it, so each part's share is its dot product with one direction.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::capture::{capture, row};
use crate::probe::Point;

/// One layer's direct contributions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerShare {
    pub attn: f32,
    pub mlp: f32,
    /// Per head; they sum to `attn`.
    pub heads: Vec<f32>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Attribution {
    pub position: usize,
    pub embed: f32,
    pub layers: Vec<LayerShare>,
    /// The final residual's projection: the logit (difference) before soft-capping, which the
    /// parts sum to up to float error.
    pub direct: f32,
    /// The logit (difference) the model computed, after soft-capping where the model has it.
    pub logit: f32,
}

impl Attribution {
    /// Sum of the parts (embedding, every attention and MLP output).
    pub fn sum(&self) -> f32 {
        self.embed + self.layers.iter().map(|l| l.attn + l.mlp).sum::<f32>()
    }
}

/// Attributes `target`'s logit at `position` of `ids` (minus `baseline`'s when given) to the parts
/// of the residual stream.
pub fn attribute<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    position: usize,
    target: u32,
    baseline: Option<u32>,
) -> Result<Attribution> {
    let c = &model.config;
    let (n, d, h) = (c.n_layers, c.hidden_size, c.n_heads);
    if position >= ids.len() {
        return Err(Error::Invalid(format!("position {position} is outside the {} tokens", ids.len())));
    }
    let mut token_ids = vec![target];
    token_ids.extend(baseline);
    // Before the pass, so a bad token costs no forward.
    c.check_ids(&token_ids)?;
    let mut points = vec![Point::Embed, Point::ResidPost(n - 1), Point::Logits];
    for l in 0..n {
        points.extend([Point::AttnOut(l), Point::MlpOut(l), Point::HeadOut(l)]);
    }
    let cap = capture(model, ids, points)?;
    let rows = model.unembedding_rows(&token_ids)?;
    let gain = model.final_norm_gain()?;
    let x = row(&cap[&Point::ResidPost(n - 1)], position);
    let inv = crate::backend::cpu::inv_rms(x, c.rms_eps) as f64;
    // The direction each part is read along: gain ⊙ (w_target − w_baseline) / rms(final residual).
    let u: Vec<f64> = (0..d)
        .map(|j| {
            let w = rows[j] as f64 - if baseline.is_some() { rows[d + j] as f64 } else { 0.0 };
            gain[j] as f64 * w * inv
        })
        .collect();
    let dot = |v: &[f32]| v.iter().zip(&u).map(|(&a, &b)| a as f64 * b).sum::<f64>() as f32;
    let layers = (0..n)
        .map(|l| {
            let heads = row(&cap[&Point::HeadOut(l)], position);
            LayerShare {
                attn: dot(row(&cap[&Point::AttnOut(l)], position)),
                mlp: dot(row(&cap[&Point::MlpOut(l)], position)),
                heads: heads.chunks(d).take(h).map(dot).collect(),
            }
        })
        .collect();
    let logits = row(&cap[&Point::Logits], position);
    let logit = logits[target as usize] - baseline.map_or(0.0, |b| logits[b as usize]);
    Ok(Attribution {
        position,
        embed: dot(row(&cap[&Point::Embed], position)),
        layers,
        direct: dot(x),
        logit,
    })
}
