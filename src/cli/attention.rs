//! `scalpel attention`: attention patterns from the engine's own attention, attention sinks, and
//! the search for heads where one word attends to another.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, PromptArgs, on_device, save_png};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::attention::{find, maps, prob, sinks};
use crate::interp::render::charts::{attention_grid, attention_heatmap};
use crate::interp::words::{pad, quote, require_word, token_strings};
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The layer to show (default: the last).
    #[arg(long, allow_negative_numbers = true)]
    pub layer: Option<i64>,
    /// One head; without it, every head of the layer.
    #[arg(long)]
    pub head: Option<usize>,
    /// Draw the pattern (one head) or a grid of every head of the layer.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Replace --png if it exists.
    #[arg(long)]
    pub force: bool,
    /// Rank every head of every layer by the attention mass its queries put on the first token.
    #[arg(long, conflicts_with = "find")]
    pub sinks: bool,
    /// Rank every (layer, head) by how strongly the --query word attends to the --key word.
    #[arg(long, requires_all = ["query", "key"])]
    pub find: bool,
    /// With --find: the attending word (its last occurrence).
    #[arg(long)]
    pub query: Option<String>,
    /// With --find: the attended-to word (every occurrence before the query).
    #[arg(long)]
    pub key: Option<String>,
    /// How many heads --sinks and --find list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: AttentionArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let c = &files.config;
        let tok = &files.tokenizer;
        let (_, ids) = args.prompt.encode_fitted(tok, c.context_length, 0)?;
        let strings = token_strings(tok, &ids)?;
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        if args.sinks || args.find {
            let (query, keys) = if args.find {
                let q = *require_word(&strings, args.query.as_deref().unwrap_or(""), "--query")?
                    .last()
                    .expect("non-empty");
                let keys: Vec<usize> = require_word(&strings, args.key.as_deref().unwrap_or(""), "--key")?
                    .into_iter()
                    .filter(|&k| k < q)
                    .collect();
                if keys.is_empty() {
                    return Err(Error::Invalid(
                        "--key must occur before the last --query token (attention is causal)".into(),
                    ));
                }
                (q, keys)
            } else {
                (0, vec![])
            };
            let model = Model::load(backend, &files)?;
            let all: Vec<usize> = (0..c.n_layers).collect();
            let m = maps(&model, &ids, &all)?;
            let ranked = if args.sinks { sinks(&m) } else { find(&m, query, &keys) };
            let ranked: Vec<_> = ranked.into_iter().take(args.top).collect();
            if args.json {
                println!(
                    "{}",
                    json!({ "tokens": strings, "query": args.find.then_some(query), "keys": keys, "heads": ranked })
                );
            } else if args.sinks {
                println!(
                    "heads by attention on the first token {} (mean over later queries):",
                    quote(&strings[0])
                );
                for h in &ranked {
                    println!("  layer {:>2} head {:>2}  {:.3}", h.layer, h.head, h.score);
                }
            } else {
                let kd: Vec<String> = keys.iter().map(|&k| format!("{k} {}", quote(&strings[k]))).collect();
                println!(
                    "heads where position {query} {} attends to {}:",
                    quote(&strings[query]),
                    kd.join(", ")
                );
                for h in &ranked {
                    println!("  layer {:>2} head {:>2}  {:.3}", h.layer, h.head, h.score);
                }
            }
            return Ok(());
        }
        let layer = super::common::resolve_layer(args.layer.unwrap_or(-1), c.n_layers, "--layer")?;
        if let Some(h) = args.head
            && h >= c.n_heads
        {
            return Err(Error::Invalid(format!("--head {h}: the model has heads 0..{}", c.n_heads - 1)));
        }
        let model = Model::load(backend, &files)?;
        let m = maps(&model, &ids, &[layer])?;
        let map = &m[&layer];
        let t = ids.len();
        let heads: Vec<usize> = match args.head {
            Some(h) => vec![h],
            None => (0..c.n_heads).collect(),
        };
        if args.json {
            let pats: Vec<_> = heads
                .iter()
                .map(|&h| json!({ "head": h, "probs": (0..t).map(|q| (0..t).map(|k| prob(map, h, q, k)).collect::<Vec<_>>()).collect::<Vec<_>>() }))
                .collect();
            println!("{}", json!({ "tokens": strings, "layer": layer, "heads": pats }));
        } else {
            for &h in &heads {
                println!(
                    "layer {layer} head {h}: each query's strongest key (and, where that is the first token — the \
                     attention sink most heads park on — the strongest other key beside it)"
                );
                let strongest = |q: usize, keys: std::ops::RangeInclusive<usize>| {
                    keys.max_by(|&a, &b| prob(map, h, q, a).total_cmp(&prob(map, h, q, b)))
                };
                for q in 0..t {
                    let best = strongest(q, 0..=q).unwrap_or(0);
                    let mut line = format!(
                        "  {q:>3} {} → {best:>3} {} {:.3}",
                        pad(&quote(&strings[q]), 16),
                        pad(&quote(&strings[best]), 16),
                        prob(map, h, q, best)
                    );
                    if best == 0
                        && let Some(other) = strongest(q, 1..=q)
                    {
                        line.push_str(&format!(
                            "   beside the sink: {other:>3} {} {:.3}",
                            pad(&quote(&strings[other]), 16),
                            prob(map, h, q, other)
                        ));
                    }
                    println!("{line}");
                }
            }
        }
        if let Some(path) = &args.png {
            let s = map.shape[2];
            let panel = |h: usize| map.data[h * t * s..(h + 1) * t * s].to_vec();
            let canvas = match args.head {
                Some(h) => attention_heatmap(
                    &format!("{} — layer {layer}, head {h}", files.label),
                    &strings,
                    &strings,
                    &panel(h),
                )?,
                None => {
                    let panels: Vec<(String, Vec<f32>)> =
                        heads.iter().map(|&h| (format!("head {h}"), panel(h))).collect();
                    attention_grid(
                        &format!("{} — layer {layer}, every head", files.label),
                        &strings,
                        &strings,
                        &panels,
                    )?
                }
            };
            save_png(&canvas, path, args.force)?;
        }
        Ok(())
    }
}

pub fn run(args: AttentionArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
