//! `scalpel attribute`: direct logit attribution at one position, as a table, JSON and bars.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, PromptArgs, on_device, resolve_position, save_png};
use crate::backend::Backend;
use crate::error::Result;
use crate::forward::Model;
use crate::interp::attribution::attribute;
use crate::interp::render::charts::{Series, bar_chart};
use crate::interp::words::{quote, resolve_token, token_strings};
use crate::model::ModelFiles;
use crate::probe::Point;

#[derive(Args, Debug)]
#[command(long_about = "Direct logit attribution: the final residual stream at one position is the \
    embedding plus every layer's attention output (split per head) and MLP output; each part is \
    projected on the unembedding direction of --answer (minus that of --wrong), through the final norm \
    with its scale (1/rms) frozen at this run's value, so the parts sum to the logit (difference) \
    before any final soft-capping. Direct effects only: what a part changes in later layers is not \
    counted here (use `scalpel patch` for that).")]
pub struct AttributeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The position whose logits are attributed (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub position: i64,
    /// The token whose logit is attributed: its text (a word is taken with its leading space
    /// when that is one token) or #id. Default: the model's top prediction there.
    #[arg(long, value_name = "TOKEN")]
    pub answer: Option<String>,
    /// Attribute logit(answer) − logit(wrong) instead.
    #[arg(long, value_name = "TOKEN")]
    pub wrong: Option<String>,
    /// How many heads to list, by the size of their share.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Draw the per-layer shares as bars.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Replace --png if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object with every part instead of the table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: AttributeArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        let (_, ids) = args.prompt.encode_fitted(tok, files.config.context_length, 0)?;
        let pos = resolve_position(args.position, ids.len(), "--position")?;
        let given = args.answer.as_deref().map(|a| resolve_token(tok, a, "--answer")).transpose()?;
        let wrong = args.wrong.as_deref().map(|w| resolve_token(tok, w, "--wrong")).transpose()?;
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        let model = Model::load(backend, &files)?;
        let answer = match given {
            Some(a) => a,
            None => {
                let cap = crate::interp::capture::capture(&model, &ids[..=pos], [Point::Logits])?;
                let id =
                    crate::interp::top_k(crate::interp::capture::row(&cap[&Point::Logits], pos), 1)[0] as u32;
                (id, tok.decode(&[id])?)
            }
        };
        let a = attribute(&model, &ids, pos, answer.0, wrong.as_ref().map(|w| w.0))?;
        let strings = token_strings(tok, &ids)?;
        let target = match &wrong {
            Some((_, w)) => format!("logit({}) − logit({})", quote(&answer.1), quote(w)),
            None => format!("logit({})", quote(&answer.1)),
        };
        if args.json {
            println!(
                "{}",
                json!({
                    "tokens": strings, "position": pos, "target": target,
                    "answer": {"id": answer.0, "token": answer.1},
                    "wrong": wrong.as_ref().map(|(id, t)| json!({"id": id, "token": t})),
                    "logit": a.logit, "direct": a.direct, "sum_of_parts": a.sum(),
                    "embed": a.embed, "layers": a.layers,
                })
            );
        } else {
            println!("direct logit attribution of {target} at position {pos} ({})", quote(&strings[pos]));
            println!(
                "the model's value {:.4}; the final residual's projection {:.4} (final norm's scale frozen, before soft-capping); the parts sum to {:.4}",
                a.logit,
                a.direct,
                a.sum()
            );
            println!("\n{:>6} {:>9} {:>9}", "layer", "attn", "mlp");
            println!("{:>6} {:>9.3}", "embed", a.embed);
            for (l, s) in a.layers.iter().enumerate() {
                println!("{l:>6} {:>9.3} {:>9.3}", s.attn, s.mlp);
            }
            let mut heads: Vec<(usize, usize, f32)> = a
                .layers
                .iter()
                .enumerate()
                .flat_map(|(l, s)| s.heads.iter().enumerate().map(move |(h, &v)| (l, h, v)))
                .collect();
            heads.sort_by(|x, y| y.2.abs().total_cmp(&x.2.abs()));
            println!("\nheads with the largest direct share:");
            for (l, h, v) in heads.iter().take(args.top) {
                println!("  L{l:<3} H{h:<3} {v:>+9.3}");
            }
        }
        if let Some(path) = &args.png {
            let n = a.layers.len();
            let mut labels = vec!["emb".to_string()];
            labels.extend((0..n).map(|l| l.to_string()));
            let nan = f64::NAN;
            let mut embed = vec![a.embed as f64];
            embed.extend(std::iter::repeat_n(nan, n));
            let mut attn = vec![nan];
            attn.extend(a.layers.iter().map(|s| s.attn as f64));
            let mut mlp = vec![nan];
            mlp.extend(a.layers.iter().map(|s| s.mlp as f64));
            let series = [
                Series { label: "embedding".into(), values: embed },
                Series { label: "attention".into(), values: attn },
                Series { label: "MLP".into(), values: mlp },
            ];
            let title = format!(
                "direct logit attribution — {} — {target} at {} (sum {:.2})",
                files.label,
                quote(&strings[pos]),
                a.sum()
            );
            save_png(&bar_chart(&title, &labels, "layer", "share of the logit", &series)?, path, args.force)?;
        }
        Ok(())
    }
}

pub fn run(args: AttributeArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
