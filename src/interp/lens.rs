//! The logit lens: the final norm and the LM head applied to every layer's residual stream, to
//! read what the model "would say" if it stopped at that layer.

use serde::Serialize;
use serde_json::{Value, json};

use crate::Result;
use crate::backend::Backend;
use crate::forward::Model;
use crate::model::tokenizer::Tokenizer;
use crate::probe::Point;

#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub id: u32,
    pub prob: f32,
    pub logprob: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Lens {
    /// [layer][position] → the top candidates, most likely first.
    pub top: Vec<Vec<Vec<Candidate>>>,
}

impl Lens {
    pub fn layers(&self) -> usize {
        self.top.len()
    }

    pub fn positions(&self) -> usize {
        self.top.first().map_or(0, Vec::len)
    }

    /// Labelled for people and programs (`scalpel lens --json`, Python's `Model.lens`):
    /// `[{layer, point, positions: [{position, input, top: [{id, token, prob, logprob}]}]}]`;
    /// `inputs` are the prompt's token texts.
    pub fn labelled(&self, tok: &Tokenizer, inputs: &[String]) -> Result<Vec<Value>> {
        self.top
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let positions = layer
                    .iter()
                    .enumerate()
                    .map(|(p, cands)| {
                        let top = cands
                            .iter()
                            .map(|c| {
                                let token = tok.decode(&[c.id])?;
                                Ok(json!({"id": c.id, "token": token, "prob": c.prob, "logprob": c.logprob}))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Ok(json!({"position": p, "input": inputs[p], "top": top}))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(json!({"layer": l, "point": format!("blocks.{l}.resid_post"), "positions": positions}))
            })
            .collect()
    }
}

/// Lens logits [T, vocab] for every layer: final norm and LM head on each resid_post.
pub fn lens_logits<B: Backend>(model: &Model<B>, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    let c = &model.config;
    let points: Vec<Point> = (0..c.n_layers).map(Point::ResidPost).collect();
    let caps = super::capture::capture(model, ids, points.iter().copied())?;
    points
        .iter()
        .map(|p| {
            let cap = &caps[p];
            let x = model.backend.upload(&cap.data, &cap.shape)?;
            model.backend.download(&model.unembed(&x)?)
        })
        .collect()
}

/// Top-`k` lens candidates at every layer's resid_post and every position of `ids`.
pub fn logit_lens<B: Backend>(model: &Model<B>, ids: &[u32], k: usize) -> Result<Lens> {
    let c = &model.config;
    let mut top = Vec::with_capacity(c.n_layers);
    for logits in lens_logits(model, ids)? {
        let rows = logits
            .chunks(c.vocab_size)
            .map(|row| {
                let lse = super::log_sum_exp(row);
                super::top_k(row, k)
                    .into_iter()
                    .map(|i| {
                        let lp = row[i] as f64 - lse;
                        Candidate { id: i as u32, prob: lp.exp() as f32, logprob: lp as f32 }
                    })
                    .collect()
            })
            .collect();
        top.push(rows);
    }
    Ok(Lens { top })
}
