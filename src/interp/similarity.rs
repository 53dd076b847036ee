//! How one word's representation in two contexts relates, layer by layer ("apple" the fruit and
//! "Apple" the company drift apart with depth).

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

/// Cosine similarity of the residual stream at position `pa` of `a` and `pb` of `b`, at embed and
/// after every layer.
pub fn across_layers<B: Backend>(
    model: &Model<B>,
    a: &[u32],
    pa: usize,
    b: &[u32],
    pb: usize,
) -> Result<Vec<LayerSimilarity>> {
    let n = model.config.n_layers;
    let points: Vec<Point> = std::iter::once(Point::Embed).chain((0..n).map(Point::ResidPost)).collect();
    let ca = super::capture::capture(model, a, points.iter().copied())?;
    let cb = super::capture::capture(model, b, points.iter().copied())?;
    Ok(points
        .iter()
        .map(|p| LayerSimilarity {
            point: p.layer().map_or("embed".to_string(), |l| l.to_string()),
            cosine: super::cosine(super::capture::row(&ca[p], pa), super::capture::row(&cb[p], pb)),
        })
        .collect())
}
