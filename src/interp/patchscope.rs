//! Patchscopes: transplant a hidden state from one prompt into another and let the model say
//! what it holds. The default target is an identity prompt, so the model tends to repeat (and so
//! name) whatever the patched position represents.

use crate::Result;
use crate::backend::Backend;
use crate::error::Error;
use crate::forward::Model;
use crate::generate::{GenerateOptions, generate};
use crate::probe::{Edit, Point, Probes};
use crate::sample::SamplingParams;

pub const DEFAULT_TARGET: &str = "cat -> cat\n1135 -> 1135\nhello -> hello\n?";
pub const DEFAULT_PLACEHOLDER: &str = "?";

pub struct Patch {
    pub source_layer: usize,
    pub source_pos: usize,
    pub target_layer: usize,
    pub target_pos: usize,
}

/// The source's resid_post at (source_layer, source_pos) replaces the target's resid_post at
/// (target_layer, target_pos) during the prefill; then greedy generation for `max_tokens`.
pub fn run<B: Backend>(
    model: &Model<B>,
    source: &[u32],
    target: &[u32],
    patch: &Patch,
    max_tokens: usize,
) -> Result<Vec<u32>> {
    let n = model.config.n_layers;
    for (what, l) in [("source", patch.source_layer), ("target", patch.target_layer)] {
        if l >= n {
            return Err(Error::Invalid(format!("{what} layer {l}: the model has layers 0..{}", n - 1)));
        }
    }
    if patch.source_pos >= source.len() {
        return Err(Error::Invalid(format!(
            "source position {} past its {} tokens",
            patch.source_pos,
            source.len()
        )));
    }
    if patch.target_pos >= target.len() {
        return Err(Error::Invalid(format!(
            "target position {} past its {} tokens",
            patch.target_pos,
            target.len()
        )));
    }
    let point = Point::ResidPost(patch.source_layer);
    let caps = super::capture::capture(model, source, [point])?;
    let row = super::capture::row(&caps[&point], patch.source_pos);
    let mut probes = Probes::none();
    let row = model.backend.upload(row, &[row.len()])?;
    probes.edit(Point::ResidPost(patch.target_layer), Edit::Replace { position: patch.target_pos, row })?;
    greedy(model, target, max_tokens, &mut probes)
}

/// What the target prompt generates with nothing patched: the baseline a patched run is read against
/// (an identity prompt left alone repeats its own pattern, which a patch must change to say anything).
pub fn unpatched<B: Backend>(model: &Model<B>, target: &[u32], max_tokens: usize) -> Result<Vec<u32>> {
    greedy(model, target, max_tokens, &mut Probes::none())
}

fn greedy<B: Backend>(
    model: &Model<B>,
    ids: &[u32],
    max_tokens: usize,
    probes: &mut Probes<B>,
) -> Result<Vec<u32>> {
    let opts = GenerateOptions { max_tokens, sampling: SamplingParams::default(), stop_at_eos: true };
    Ok(generate(model, ids, &opts, probes, |_| Ok(true))?.generated_ids)
}
