//! Patchscopes: transplant a hidden state from one prompt into another and let the model say
//! what it holds. The default target is an identity prompt, so the model tends to repeat (and so
//! name) whatever the patched position represents.

use serde_json::{Value, json};

use crate::Result;
use crate::backend::Backend;
use crate::error::Error;
use crate::forward::Model;
use crate::generate::{GenerateOptions, generate};
use crate::interp::words::{find_word, quote, quote_all, token_strings};
use crate::model::tokenizer::Tokenizer;
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

/// A Patchscope as `scalpel patchscope` and Python's `Model.patchscope` ask for it, in their terms.
pub struct Scope<'a> {
    pub source: &'a str,
    /// Negative counts from the end.
    pub source_pos: i64,
    pub target: &'a str,
    /// The target position is this token's last occurrence.
    pub placeholder: &'a str,
    pub source_layers: Vec<usize>,
    /// None: each run's target layer is its source layer.
    pub target_layer: Option<usize>,
    pub max_tokens: usize,
}

/// Runs the target unpatched, then once per source layer patched; returns JSON {source,
/// source_pos, target, target_pos, unpatched: {generated_ids, tokens, text}, results: [{…,
/// source_layer, target_layer}]} (text without end-of-sequence tokens). `each` sees the unpatched
/// entry and then each layer's as it is done, so a sweep can be shown as it goes.
pub fn scope<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    s: &Scope,
    mut each: impl FnMut(&Value) -> Result<()>,
) -> Result<Value> {
    if s.source.is_empty() || s.target.is_empty() {
        return Err(Error::Invalid("the source and target prompts must not be empty".into()));
    }
    let source = tok.encode(s.source)?;
    let target = tok.encode(s.target)?;
    let sp = super::index_from_end(s.source_pos, source.len()).ok_or_else(|| {
        Error::Invalid(format!(
            "source position {} is outside the source's {} tokens",
            s.source_pos,
            source.len()
        ))
    })?;
    let strings = token_strings(tok, &target)?;
    let tp = *find_word(&strings, s.placeholder).last().ok_or_else(|| {
        Error::Invalid(format!(
            "the placeholder {} is not among the target's tokens {}",
            quote(s.placeholder),
            quote_all(&strings)
        ))
    })?;
    let eos = &model.config.eos_token_ids;
    let said = |ids: Vec<u32>| -> Result<Value> {
        let visible: Vec<u32> = ids.iter().copied().filter(|i| !eos.contains(i)).collect();
        Ok(
            json!({ "generated_ids": ids, "tokens": token_strings(tok, &ids)?, "text": tok.decode(&visible)? }),
        )
    };
    let unpatched = said(unpatched(model, &target, s.max_tokens)?)?;
    each(&unpatched)?;
    let mut results = Vec::new();
    for &l in &s.source_layers {
        let patch = Patch {
            source_layer: l,
            source_pos: sp,
            target_layer: s.target_layer.unwrap_or(l),
            target_pos: tp,
        };
        let mut entry = said(run(model, &source, &target, &patch, s.max_tokens)?)?;
        entry["source_layer"] = json!(l);
        entry["target_layer"] = json!(patch.target_layer);
        each(&entry)?;
        results.push(entry);
    }
    Ok(json!({
        "source": s.source, "source_pos": sp, "target": s.target, "target_pos": tp,
        "unpatched": unpatched, "results": results,
    }))
}
