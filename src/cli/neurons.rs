//! `scalpel neurons`: the FFN neurons that fire most on each token, or one neuron everywhere.

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, PromptArgs, on_device};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::neurons::{activations, neuron, top_per_token};
use crate::interp::words::{pad, quote, token_strings};
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct NeuronsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The layer whose neurons (blocks.L.mlp_post) to read.
    #[arg(long, allow_negative_numbers = true)]
    pub layer: i64,
    /// How many neurons per token.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Show this one neuron's activation on every token instead.
    #[arg(long)]
    pub neuron: Option<usize>,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: NeuronsArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let c = &files.config;
        let layer = super::common::resolve_layer(args.layer, c.n_layers, "--layer")?;
        if let Some(n) = args.neuron
            && n >= c.intermediate_size
        {
            return Err(Error::Invalid(format!(
                "--neuron {n}: the layer has neurons 0..{}",
                c.intermediate_size - 1
            )));
        }
        let tok = &files.tokenizer;
        let (_, ids) = args.prompt.encode_fitted(tok, c.context_length, 0)?;
        let strings = token_strings(tok, &ids)?;
        let model = Model::load(backend, &files)?;
        let acts = activations(&model, &ids, layer)?;
        match args.neuron {
            Some(n) => {
                let values = neuron(&acts, n)?;
                if args.json {
                    println!(
                        "{}",
                        json!({ "tokens": strings, "layer": layer, "neuron": n, "activations": values })
                    );
                } else {
                    let max = values.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                    println!("layer {} neuron {n}:", layer);
                    for (s, v) in strings.iter().zip(&values) {
                        let bar = "#".repeat((v.abs() / max * 30.0).round() as usize);
                        println!(
                            "  {} {v:>9.4}  {}{bar}",
                            pad(&quote(s), 16),
                            if *v < 0.0 { "-" } else { " " }
                        );
                    }
                }
            }
            None => {
                let top = top_per_token(&acts, args.top.max(1));
                if args.json {
                    println!("{}", json!({ "tokens": strings, "layer": layer, "top": top }));
                } else {
                    println!("layer {}: strongest neurons per token (neuron:activation)", layer);
                    for (s, fs) in strings.iter().zip(&top) {
                        let cells: Vec<String> =
                            fs.iter().map(|f| format!("{}:{:.3}", f.neuron, f.activation)).collect();
                        println!("  {} {}", pad(&quote(s), 16), cells.join("  "));
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn run(args: NeuronsArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
