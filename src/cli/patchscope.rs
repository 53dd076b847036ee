//! `scalpel patchscope`: ask the model, in words, what a hidden state holds.

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device, resolve_position};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::patchscope::{DEFAULT_PLACEHOLDER, DEFAULT_TARGET, Patch, run as patch_run, unpatched};
use crate::interp::words::{find_word, quote, quote_all, token_strings};
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct PatchscopeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt whose hidden state is read.
    #[arg(long)]
    pub source: String,
    /// The source layer (its resid_post); default: the middle layer.
    #[arg(long, allow_negative_numbers = true)]
    pub source_layer: Option<i64>,
    /// The source position (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub source_pos: i64,
    /// The prompt the state is patched into (default: an identity prompt that makes the model
    /// repeat what it sees).
    #[arg(long, default_value = DEFAULT_TARGET)]
    pub target: String,
    /// The placeholder in the target whose position receives the state (its last occurrence).
    #[arg(long, default_value = DEFAULT_PLACEHOLDER)]
    pub placeholder: String,
    /// The target layer (its resid_post is replaced); default: the source layer.
    #[arg(long, allow_negative_numbers = true)]
    pub target_layer: Option<i64>,
    /// Tokens to generate after the patched prefill.
    #[arg(long, short = 'n', default_value_t = 12)]
    pub max_tokens: usize,
    /// Run every source layer (target layer = source layer unless --target-layer) and print one
    /// line per layer.
    #[arg(long)]
    pub sweep: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: PatchscopeArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        let n = files.config.n_layers;
        if args.source.is_empty() || args.target.is_empty() {
            return Err(Error::Invalid("--source and --target must not be empty".into()));
        }
        let source = tok.encode(&args.source)?;
        let target = tok.encode(&args.target)?;
        let sp = resolve_position(args.source_pos, source.len(), "--source-pos")?;
        let strings = token_strings(tok, &target)?;
        let tp = *find_word(&strings, &args.placeholder).last().ok_or_else(|| {
            Error::Invalid(format!(
                "the placeholder {} is not among the target's tokens {}",
                quote(&args.placeholder),
                quote_all(&strings)
            ))
        })?;
        let model = Model::load(backend, &files)?;
        let layer = |l: Option<i64>, what| l.map(|l| super::common::resolve_layer(l, n, what)).transpose();
        let (source_layer, target_layer) =
            (layer(args.source_layer, "--source-layer")?, layer(args.target_layer, "--target-layer")?);
        let layers: Vec<usize> =
            if args.sweep { (0..n).collect() } else { vec![source_layer.unwrap_or(n / 2)] };
        // One generation as text (end-of-sequence left out), its tokens, and the JSON entry.
        let said = |ids: Vec<u32>| -> Result<(String, serde_json::Value)> {
            let visible: Vec<u32> =
                ids.iter().copied().filter(|i| !files.config.eos_token_ids.contains(i)).collect();
            let text = tok.decode(&visible)?;
            let tokens = token_strings(tok, &ids)?;
            let entry = json!({ "generated_ids": ids, "tokens": tokens, "text": text });
            Ok((text, entry))
        };
        let (base_text, baseline) = said(unpatched(&model, &target, args.max_tokens)?)?;
        if !args.json {
            if args.sweep {
                println!("source layer → target layer: the first line generated");
                println!("  unpatched  {}", first_line(&base_text));
            } else {
                println!("target {} unpatched:\n{base_text}\n", quote(&args.target));
            }
        }
        let mut results = Vec::new();
        for l in layers {
            let patch = Patch {
                source_layer: l,
                source_pos: sp,
                target_layer: target_layer.unwrap_or(l),
                target_pos: tp,
            };
            let (text, mut entry) = said(patch_run(&model, &source, &target, &patch, args.max_tokens)?)?;
            if !args.json {
                if args.sweep {
                    println!("{l:>3} → {:>3}   {}", patch.target_layer, first_line(&text));
                } else {
                    println!(
                        "source {} position {sp} layer {l} → target position {tp} layer {}:\n{text}",
                        quote(&args.source),
                        patch.target_layer
                    );
                }
            }
            entry["source_layer"] = json!(l);
            entry["target_layer"] = json!(patch.target_layer);
            results.push(entry);
        }
        if args.json {
            println!(
                "{}",
                json!({ "source": args.source, "source_pos": sp, "target": args.target, "target_pos": tp, "unpatched": baseline, "results": results })
            );
        }
        Ok(())
    }
}

/// The first non-empty line of a generation, quoted, with "…" when more follows.
fn first_line(text: &str) -> String {
    let text = text.trim_start();
    let line = text.lines().next().unwrap_or("");
    let more = text.len() > line.len() && !text[line.len()..].trim().is_empty();
    format!("{}{}", quote(line), if more { " …" } else { "" })
}

pub fn run(args: PatchscopeArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
