//! `scalpel similarity`: one word in two contexts, compared at every layer.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device, save_png};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::render::charts::{Series, line_plot};
use crate::interp::similarity::across_layers;
use crate::interp::words::{quote, require_word, token_strings};
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct SimilarityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The first context.
    #[arg(long)]
    pub a: String,
    /// The word to follow in the first context (its first occurrence; the last token of it).
    #[arg(long)]
    pub a_token: String,
    /// The second context. Repeat --b (with a --b-token each) to compare several contexts with
    /// the first, one line each in the plot.
    #[arg(long, required = true)]
    pub b: Vec<String>,
    /// The word to follow in the second context (one per --b).
    #[arg(long, required = true)]
    pub b_token: Vec<String>,
    /// Centre the vectors first: subtract, at each layer, the mean residual over every token of
    /// the given contexts (--a and each --b). Raw cosines sit near 1 in later layers whatever the
    /// sense (every token shares a large common direction); centred ones compare what is left.
    #[arg(long, conflicts_with = "center_on")]
    pub center: bool,
    /// Centre on a reference set instead: the mean over every token of these texts (one per line).
    #[arg(long, value_name = "FILE")]
    pub center_on: Option<PathBuf>,
    /// Draw the similarity across layers as a line plot.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Replace --png if it exists.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: SimilarityArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        if args.b.len() != args.b_token.len() {
            return Err(Error::Invalid(format!(
                "{} --b contexts but {} --b-token words",
                args.b.len(),
                args.b_token.len()
            )));
        }
        if args.a.is_empty() || args.b.iter().any(String::is_empty) {
            return Err(Error::Invalid("--a and --b must not be empty".into()));
        }
        let ia = tok.encode(&args.a)?;
        let sa = token_strings(tok, &ia)?;
        let pa = require_word(&sa, &args.a_token, "--a-token")?[0];
        let mut others = Vec::new();
        for (b, w) in args.b.iter().zip(&args.b_token) {
            let ib = tok.encode(b)?;
            let sb = token_strings(tok, &ib)?;
            let pb = require_word(&sb, w, "--b-token")?[0];
            others.push((b, w, ib, sb, pb));
        }
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        let reference: Option<Vec<Vec<u32>>> = match (&args.center_on, args.center) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let texts: Vec<Vec<u32>> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| tok.encode(l))
                    .collect::<Result<_>>()?;
                if texts.is_empty() {
                    return Err(Error::Invalid(format!("{} holds no texts to centre on", path.display())));
                }
                Some(texts)
            }
            (None, true) => {
                Some(std::iter::once(ia.clone()).chain(others.iter().map(|o| o.2.clone())).collect())
            }
            (None, false) => None,
        };
        let shown = match (&args.center_on, args.center) {
            (Some(p), _) => format!("centred cosine (mean over every token of {} subtracted)", p.display()),
            (None, true) => "centred cosine (mean over every token of the contexts subtracted)".to_string(),
            (None, false) => "raw cosine (--center subtracts the contexts' mean)".to_string(),
        };
        let model = Model::load(backend, &files)?;
        let centre = reference.map(|r| crate::interp::similarity::mean_residuals(&model, &r)).transpose()?;
        let mut results = Vec::new();
        let mut series = Vec::new();
        for (b, w, ib, sb, pb) in &others {
            let sims = across_layers(&model, &ia, pa, ib, *pb, centre.as_ref())?;
            if !args.json {
                println!(
                    "{shown} of {} (position {pa} of {}) and {} (position {pb} of {}):",
                    quote(&sa[pa]),
                    quote(&args.a),
                    quote(&sb[*pb]),
                    quote(b)
                );
                for s in &sims {
                    let bar = "#".repeat((s.cosine.max(0.0) * 40.0).round() as usize);
                    println!("  {:>6}  {:>7.4}  {bar}", s.point, s.cosine);
                }
            }
            series.push(Series {
                label: format!(
                    "{} in {}  vs  {} in {}",
                    quote(&args.a_token),
                    quote(&args.a),
                    quote(w),
                    quote(b)
                ),
                values: sims.iter().map(|s| s.cosine).collect(),
            });
            results.push(json!({ "b": b, "b_token": w, "b_position": pb, "similarity": sims }));
        }
        if args.json {
            println!(
                "{}",
                json!({ "a": args.a, "a_token": args.a_token, "a_position": pa, "shown": shown, "centred": centre.is_some(), "comparisons": results })
            );
        }
        if let Some(path) = &args.png {
            let mut labels = vec!["embed".to_string()];
            labels.extend((0..files.config.n_layers).map(|l| l.to_string()));
            let title =
                format!("{}: similarity of one word across contexts, layer by layer — {shown}", files.label);
            save_png(
                &line_plot(
                    &title,
                    &labels,
                    "layer (resid_post; embed = input)",
                    if centre.is_some() { "centred cosine similarity" } else { "cosine similarity" },
                    &series,
                )?,
                path,
                args.force,
            )?;
        }
        Ok(())
    }
}

pub fn run(args: SimilarityArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
