//! How one word's representation in two contexts relates, layer by layer ("apple" the fruit and
//! "Apple" the company drift apart with depth).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Result;
use crate::backend::Backend;
use crate::forward::Model;
use crate::probe::Point;

#[derive(Clone, Debug, Serialize)]
pub struct LayerSimilarity {
    /// "embed" or the layer number.
    pub point: String,
    pub cosine: f64,
}

/// The points compared: the embedding and every layer's output.
fn points(n_layers: usize) -> Vec<Point> {
    std::iter::once(Point::Embed).chain((0..n_layers).map(Point::ResidPost)).collect()
}

/// Per point, the mean of the residual stream over the tokens of `texts` (each text's first token
/// left out where it has others): what is subtracted to
/// centre the vectors. Later layers share a large common component (anisotropy) that keeps raw
/// cosines near 1 whatever the sense; the centred cosine compares what is left.
pub fn mean_residuals<B: Backend>(model: &Model<B>, texts: &[Vec<u32>]) -> Result<BTreeMap<Point, Vec<f32>>> {
    let d = model.config.hidden_size;
    let mut sums: BTreeMap<Point, Vec<f64>> = BTreeMap::new();
    let mut count = 0usize;
    for ids in texts {
        // The first token is left out: with nothing before it, it holds the attention sink's
        // activations, tens of times any other token's, and would be all the mean says.
        let skip = usize::from(ids.len() > 1);
        let cap = super::capture::capture(model, ids, points(model.config.n_layers))?;
        for (p, c) in cap {
            let acc = sums.entry(p).or_insert_with(|| vec![0.0; d]);
            for row in c.data.chunks(d).skip(skip) {
                acc.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
            }
        }
        count += ids.len() - skip;
    }
    if count == 0 {
        return Err(crate::Error::Invalid("no tokens to take the mean over".into()));
    }
    Ok(sums.into_iter().map(|(p, v)| (p, v.iter().map(|x| (x / count as f64) as f32).collect())).collect())
}

/// Cosine similarity of the residual stream at position `pa` of `a` and `pb` of `b`, at embed and
/// after every layer; with `centre`, of the two vectors minus that point's mean.
pub fn across_layers<B: Backend>(
    model: &Model<B>,
    a: &[u32],
    pa: usize,
    b: &[u32],
    pb: usize,
    centre: Option<&BTreeMap<Point, Vec<f32>>>,
) -> Result<Vec<LayerSimilarity>> {
    let points = points(model.config.n_layers);
    let ca = super::capture::capture(model, a, points.iter().copied())?;
    let cb = super::capture::capture(model, b, points.iter().copied())?;
    let centred = |row: &[f32], p: &Point| -> Vec<f32> {
        match centre {
            Some(m) => row.iter().zip(&m[p]).map(|(x, m)| x - m).collect(),
            None => row.to_vec(),
        }
    };
    Ok(points
        .iter()
        .map(|p| LayerSimilarity {
            point: p.layer().map_or("embed".to_string(), |l| l.to_string()),
            cosine: super::cosine(
                &centred(super::capture::row(&ca[p], pa), p),
                &centred(super::capture::row(&cb[p], pb), p),
            ),
        })
        .collect())
}
