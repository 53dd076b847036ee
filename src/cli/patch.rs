//! `scalpel patch`: activation patching, as tables, JSON and a heatmap.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, PromptArgs, on_device, resolve_position, save_png};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::patching::{Metric, Site, patch};
use crate::interp::render::canvas::visible;
use crate::interp::render::charts::{Grid, value_grids};
use crate::interp::words::{quote, quote_all, resolve_token, token_strings};
use crate::model::ModelFiles;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricKind {
    /// logit(answer) − logit(wrong); needs --wrong.
    LogitDiff,
    /// logit(answer).
    Logit,
    /// p(answer).
    Prob,
    /// log p(answer).
    Logprob,
}

#[derive(Args, Debug)]
#[command(
    long_about = "Activation patching: run the corrupted prompt, replace one piece of its activations \
    with the clean prompt's, and measure the answer at the last position. Each cell is normalized so the \
    corrupted run is 0 and the clean run 1: a cell near 1 carries what makes the two prompts answer \
    differently.\n\nSites: resid_pre, attn_out and mlp_out per (layer, position); heads per (layer, head), \
    over all positions or --head-position. Both prompts must tokenize to the same length.\n\n\
    Example: scalpel patch --clean 'The Eiffel Tower is in the city of' \
    --corrupted 'The Colosseum is in the city of' --answer Paris --wrong Rome --png patch.png"
)]
pub struct PatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The clean prompt: the one whose answer patching restores.
    #[arg(long, value_name = "TEXT")]
    pub clean: String,
    /// The corrupted prompt: the same number of tokens, differing where it matters.
    #[arg(long, value_name = "TEXT")]
    pub corrupted: String,
    /// Wrap both prompts in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// The clean answer token: its text (a word is taken with its leading space when that is one
    /// token) or #id.
    #[arg(long, value_name = "TOKEN")]
    pub answer: String,
    /// The corrupted prompt's answer, for the logit difference.
    #[arg(long, value_name = "TOKEN")]
    pub wrong: Option<String>,
    /// What is measured at the last position (default: logit-diff with --wrong, else logprob).
    #[arg(long, value_enum)]
    pub metric: Option<MetricKind>,
    /// What is patched, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Site::ResidPre, Site::AttnOut, Site::MlpOut])]
    pub sites: Vec<Site>,
    /// Patch heads at this position only (negative counts from the end) instead of all positions.
    #[arg(long, allow_negative_numbers = true)]
    pub head_position: Option<i64>,
    /// Draw the heatmaps (layers × positions or heads, −1 blue … 0 white … 1 red).
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Replace --png if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object (tokens, metric values, each site's grid) instead of tables.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: PatchArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        let ctx = files.config.context_length;
        let (_, clean) = PromptArgs::new(&args.clean, args.chat).encode_fitted(tok, ctx, 0)?;
        let (_, corrupted) = PromptArgs::new(&args.corrupted, args.chat).encode_fitted(tok, ctx, 0)?;
        let (clean_s, corrupted_s) = (token_strings(tok, &clean)?, token_strings(tok, &corrupted)?);
        if clean.len() != corrupted.len() {
            return Err(Error::Invalid(format!(
                "--clean has {} tokens {} and --corrupted {} {}: patching pairs positions, so the prompts must tokenize to the same length",
                clean.len(),
                quote_all(&clean_s),
                corrupted.len(),
                quote_all(&corrupted_s)
            )));
        }
        let (answer, answer_s) = resolve_token(tok, &args.answer, "--answer")?;
        let wrong = args.wrong.as_deref().map(|w| resolve_token(tok, w, "--wrong")).transpose()?;
        let metric = Metric::named(
            args.metric.map(|k| super::common::value_name(&k)).as_deref(),
            answer,
            wrong.as_ref().map(|w| w.0),
        )?;
        let metric_name = match &wrong {
            Some((_, w)) => format!("logit({}) − logit({})", quote(&answer_s), quote(w)),
            None if matches!(metric, Metric::Logit(_)) => format!("logit({})", quote(&answer_s)),
            None if matches!(metric, Metric::Prob(_)) => format!("p({})", quote(&answer_s)),
            None => format!("log p({})", quote(&answer_s)),
        };
        crate::info!("metric: {metric_name} at the last position");
        let mut sites = args.sites.clone();
        sites.dedup();
        let head_position =
            args.head_position.map(|p| resolve_position(p, clean.len(), "--head-position")).transpose()?;
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        let model = Model::load(backend, &files)?;
        let r = patch(&model, &clean, &corrupted, metric, &sites, head_position)?;
        let labels: Vec<String> = clean_s
            .iter()
            .zip(&corrupted_s)
            .map(|(a, b)| if a == b { a.clone() } else { format!("{}/{}", visible(a), visible(b)) })
            .collect();
        let columns = |s: Site| -> Vec<String> {
            match s {
                Site::Heads => (0..model.config.n_heads).map(|h| format!("h{h}")).collect(),
                _ => labels.clone(),
            }
        };
        if args.json {
            let sweeps: serde_json::Map<String, serde_json::Value> = r
                .sweeps
                .iter()
                .map(|s| (s.site.name().to_string(), json!({"normalized": s.normalized, "metric": s.raw})))
                .collect();
            println!(
                "{}",
                json!({
                    "clean_tokens": clean_s, "corrupted_tokens": corrupted_s,
                    "metric": metric_name, "clean": r.clean, "corrupted": r.corrupted,
                    "head_position": head_position, "sites": sweeps,
                    "layout": "each site: [layer][position], heads: [layer][head]; normalized = (metric − corrupted) / (clean − corrupted)",
                })
            );
        } else {
            println!(
                "{metric_name}: clean {:.4}, corrupted {:.4}; cells: 0 = corrupted, 1 = clean",
                r.clean, r.corrupted
            );
            for s in &r.sweeps {
                let cols = columns(s.site);
                let what = match (s.site, head_position) {
                    (Site::Heads, Some(p)) => format!("heads at position {p}"),
                    (Site::Heads, None) => "heads at every position".into(),
                    (site, _) => format!("{} at one position", site.name()),
                };
                println!("\npatching {what}:");
                let head: Vec<String> = cols.iter().map(|c| format!("{:>8}", clip(&visible(c), 8))).collect();
                println!("layer {}", head.join(""));
                for (l, row) in s.normalized.iter().enumerate() {
                    let cells: Vec<String> = row.iter().map(|v| format!("{v:>8.3}")).collect();
                    println!("{l:>5} {}", cells.join(""));
                }
            }
        }
        if let Some(path) = &args.png {
            let grids: Vec<Grid> = r
                .sweeps
                .iter()
                .map(|s| Grid {
                    name: match (s.site, head_position) {
                        (Site::Heads, Some(p)) => format!("heads at position {p}"),
                        (site, _) => site.name().to_string(),
                    },
                    rows: (0..s.normalized.len()).map(|l| l.to_string()).collect(),
                    cols: columns(s.site),
                    values: s.normalized.clone(),
                    x_title: if s.site == Site::Heads {
                        "head".into()
                    } else {
                        "position (clean/corrupted)".into()
                    },
                })
                .collect();
            let title =
                format!("activation patching — {} — {metric_name}, 0 = corrupted, 1 = clean", files.label);
            save_png(&value_grids(&title, &grids, "restored")?, path, args.force)?;
        }
        Ok(())
    }
}

/// The last `n` characters of `s` (a token's end says more than its start in a narrow column).
fn clip(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    c[c.len().saturating_sub(n)..].iter().collect()
}

pub fn run(args: PatchArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
