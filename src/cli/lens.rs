//! `scalpel lens`: the logit lens, as a table for one position and a heatmap for all.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, PromptArgs, on_device, resolve_position, save_png};
use crate::backend::Backend;
use crate::error::Result;
use crate::forward::Model;
use crate::interp::lens::logit_lens;
use crate::interp::render::charts::lens_heatmap;
use crate::interp::words::{pad, quote, token_strings};
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct LensArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// How many candidates to show per layer.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// The position to show in the table (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub position: i64,
    /// Also draw the heatmap (layers × positions, top-1 token per cell, colour = probability).
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Replace --png if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object with every layer and position.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: LensArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        let (_, ids) = args.prompt.encode_fitted(tok, files.config.context_length, 0)?;
        let pos = resolve_position(args.position, ids.len(), "--position")?;
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        let model = Model::load(backend, &files)?;
        let lens = logit_lens(&model, &ids, args.top.max(1))?;
        let strings = token_strings(tok, &ids)?;
        if args.json {
            let layers = lens.labelled(tok, &strings)?;
            println!(
                "{}",
                json!({
                    "tokens": strings, "ids": ids, "position": pos, "layers": layers,
                    "layout": "layers[l].positions[p].top[k]: what blocks.l.resid_post at input position p predicts (the next token), best first",
                })
            );
        } else {
            println!("logit lens at position {pos} ({}); top {} per layer:", quote(&strings[pos]), args.top);
            for (l, layer) in lens.top.iter().enumerate() {
                let cells: Vec<String> = layer[pos]
                    .iter()
                    .map(|c| Ok(format!("{} {:.3}", pad(&quote(&tok.decode(&[c.id])?), 14), c.prob)))
                    .collect::<Result<_>>()?;
                println!("{l:>3}  {}", cells.join("  "));
            }
        }
        if let Some(path) = &args.png {
            let cells: Vec<Vec<(String, f32)>> = lens
                .top
                .iter()
                .map(|layer| {
                    layer.iter().map(|c| Ok((tok.decode(&[c[0].id])?, c[0].prob))).collect::<Result<_>>()
                })
                .collect::<Result<_>>()?;
            let layers: Vec<String> = (0..lens.layers()).map(|l| format!("layer {l}")).collect();
            let title = format!("logit lens — {} — {}", files.label, quote(args.prompt.text()?));
            save_png(&lens_heatmap(&title, &strings, &layers, &cells)?, path, args.force)?;
        }
        Ok(())
    }
}

pub fn run(args: LensArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
