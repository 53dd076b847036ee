//! FFN neurons: which fire most on each token (the `mlp_post` probe), or one neuron across the
//! prompt.

use serde::Serialize;

use crate::Result;
use crate::backend::Backend;
use crate::forward::Model;
use crate::probe::{Captured, Point};

pub fn activations<B: Backend>(model: &Model<B>, ids: &[u32], layer: usize) -> Result<Captured> {
    let mut caps = super::capture::capture(model, ids, [Point::MlpPost(layer)])?;
    Ok(caps.remove(&Point::MlpPost(layer)).expect("captured"))
}

#[derive(Clone, Debug, Serialize)]
pub struct Firing {
    pub neuron: usize,
    pub activation: f32,
}

/// For each token, the `k` neurons with the largest activation.
pub fn top_per_token(acts: &Captured, k: usize) -> Vec<Vec<Firing>> {
    let f = acts.shape[1];
    acts.data
        .chunks(f)
        .map(|row| {
            super::top_k(row, k).into_iter().map(|n| Firing { neuron: n, activation: row[n] }).collect()
        })
        .collect()
}

/// One neuron's activation on every token.
pub fn neuron(acts: &Captured, n: usize) -> crate::Result<Vec<f32>> {
    let f = acts.shape[1];
    if n >= f {
        return Err(crate::Error::Invalid(format!("--neuron {n}: the layer has neurons 0..{}", f - 1)));
    }
    Ok(acts.data.chunks(f).map(|row| row[n]).collect())
}
