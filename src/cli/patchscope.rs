//! `scalpel patchscope`: ask the model, in words, what a hidden state holds.

use clap::Args;
use serde_json::Value;

use super::common::{Device, ModelArgs, OnBackend, on_device};
use crate::backend::Backend;
use crate::error::Result;
use crate::forward::Model;
use crate::interp::patchscope::{DEFAULT_PLACEHOLDER, DEFAULT_TARGET, Scope, scope};
use crate::interp::words::quote;
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
        let n = files.config.n_layers;
        let layer = |l: Option<i64>, what| l.map(|l| super::common::resolve_layer(l, n, what)).transpose();
        let (source_layer, target_layer) =
            (layer(args.source_layer, "--source-layer")?, layer(args.target_layer, "--target-layer")?);
        let model = Model::load(backend, &files)?;
        let request = Scope {
            source: &args.source,
            source_pos: args.source_pos,
            target: &args.target,
            placeholder: &args.placeholder,
            source_layers: if args.sweep { (0..n).collect() } else { vec![source_layer.unwrap_or(n / 2)] },
            target_layer,
            max_tokens: args.max_tokens,
        };
        let text = |v: &Value| v["text"].as_str().unwrap_or_default().to_string();
        let out = scope(&model, &files.tokenizer, &request, |v| {
            match (args.json, args.sweep, v.get("source_layer")) {
                (true, _, _) => {}
                (false, true, None) => {
                    println!("source layer → target layer: the first line generated");
                    println!("  unpatched  {}", first_line(&text(v)));
                }
                (false, true, Some(l)) => {
                    let (l, tl) =
                        (l.as_u64().unwrap_or_default(), v["target_layer"].as_u64().unwrap_or_default());
                    println!("{l:>3} → {tl:>3}   {}", first_line(&text(v)))
                }
                (false, false, None) => println!("target {} unpatched:\n{}\n", quote(&args.target), text(v)),
                (false, false, Some(l)) => println!(
                    "source {} position {} layer {l} → target layer {}:\n{}",
                    quote(&args.source),
                    args.source_pos,
                    v["target_layer"],
                    text(v)
                ),
            }
            Ok(())
        })?;
        if args.json {
            println!("{out}");
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
