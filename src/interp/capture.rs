//! Running a prompt once and keeping the probe points an analysis needs.

use std::collections::BTreeMap;

use crate::Result;
use crate::backend::Backend;
use crate::error::Error;
use crate::forward::{Logits, Model};
use crate::probe::{Captured, Point, Probes};

/// One forward pass over `ids` (positions 0..), capturing `points`; `probes` may already hold
/// edits (steering, ablation, a patch) that apply during the pass.
pub fn capture_with<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    points: impl IntoIterator<Item = Point>,
    probes: Probes<B>,
) -> Result<BTreeMap<Point, Captured>> {
    let capacity = crate::generate::cache_size(ids.len(), 0, model.config.context_length)?;
    capture_in(model, ids, points, probes, &mut model.new_cache(capacity)?)
}

/// [`capture_with`] into a KV cache the caller keeps (activation patching resumes passes from it).
pub fn capture_in<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    points: impl IntoIterator<Item = Point>,
    mut probes: Probes<B>,
    cache: &mut B::Cache,
) -> Result<BTreeMap<Point, Captured>> {
    for p in points {
        probes.capture(p);
    }
    model.forward(ids, 0, cache, &mut probes, Logits::Last)?;
    let mut out = BTreeMap::new();
    for (p, mut chunks) in probes.take_captured() {
        let c = chunks.pop().ok_or_else(|| Error::Invalid(format!("{p} was not captured")))?;
        out.insert(p, c);
    }
    Ok(out)
}

pub fn capture<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    points: impl IntoIterator<Item = Point>,
) -> Result<BTreeMap<Point, Captured>> {
    capture_with(model, ids, points, Probes::none())
}

/// Row `row` of a captured [T, n] tensor.
pub fn row(c: &Captured, row: usize) -> &[f32] {
    let n: usize = c.shape[1..].iter().product();
    &c.data[row * n..(row + 1) * n]
}
