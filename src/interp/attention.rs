//! Attention patterns from the engine's own attention (the `attn_probs` probe): per-layer maps,
//! attention sinks, and the search for heads where one token looks at another.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Result;
use crate::backend::Backend;
use crate::forward::Model;
use crate::probe::{Captured, Point};

/// Attention probabilities [heads, T, T] of the chosen layers.
pub fn maps<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    layers: &[usize],
) -> Result<BTreeMap<usize, Captured>> {
    let caps = super::capture::capture(model, ids, layers.iter().map(|&l| Point::AttnProbs(l)))?;
    Ok(caps.into_iter().map(|(p, c)| (p.layer().expect("attn_probs has a layer"), c)).collect())
}

/// p[head, query, key] of a captured map.
pub fn prob(map: &Captured, head: usize, query: usize, key: usize) -> f32 {
    let (t, s) = (map.shape[1], map.shape[2]);
    map.data[head * t * s + query * s + key]
}

#[derive(Clone, Debug, Serialize)]
pub struct HeadScore {
    pub layer: usize,
    pub head: usize,
    pub score: f32,
}

fn ranked(mut v: Vec<HeadScore>) -> Vec<HeadScore> {
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then((a.layer, a.head).cmp(&(b.layer, b.head))));
    v
}

/// Heads ranked by the mean attention mass their queries (positions 1..) put on the first token.
pub fn sinks(maps: &BTreeMap<usize, Captured>) -> Vec<HeadScore> {
    let mut out = Vec::new();
    for (&layer, m) in maps {
        let (h, t) = (m.shape[0], m.shape[1]);
        for head in 0..h {
            let score = if t > 1 {
                (1..t).map(|q| prob(m, head, q, 0)).sum::<f32>() / (t - 1) as f32
            } else {
                prob(m, head, 0, 0)
            };
            out.push(HeadScore { layer, head, score });
        }
    }
    ranked(out)
}

/// Heads ranked by how sharply their queries look back at one earlier token other than the first:
/// the mean over queries 2.. of the largest p[q, k] with 1 <= k < q. Sinks (k = 0) and a token's
/// look at itself are left out, so previous-token and induction-like heads come first — the
/// patterns a picture shows best.
pub fn focused(maps: &BTreeMap<usize, Captured>) -> Vec<HeadScore> {
    let mut out = Vec::new();
    for (&layer, m) in maps {
        let t = m.shape[1];
        for head in 0..m.shape[0] {
            let score = if t > 2 {
                let best = |q: usize| (1..q).map(|k| prob(m, head, q, k)).fold(0f32, f32::max);
                (2..t).map(best).sum::<f32>() / (t - 2) as f32
            } else {
                0.0
            };
            out.push(HeadScore { layer, head, score });
        }
    }
    ranked(out)
}

/// Heads ranked by how much the token at `query` attends to the tokens at `keys` (summed).
pub fn find(maps: &BTreeMap<usize, Captured>, query: usize, keys: &[usize]) -> Vec<HeadScore> {
    let mut out = Vec::new();
    for (&layer, m) in maps {
        for head in 0..m.shape[0] {
            let score = keys.iter().filter(|&&k| k <= query).map(|&k| prob(m, head, query, k)).sum();
            out.push(HeadScore { layer, head, score });
        }
    }
    ranked(out)
}
