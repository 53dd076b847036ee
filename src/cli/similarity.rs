//! `scalpel similarity`: one word in two contexts, compared at every layer.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device, save_png};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::render::charts::{Series, line_plot};
use crate::interp::similarity::{Centre, compare};
use crate::interp::words::quote;
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
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        let centre = match (&args.center_on, args.center) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                Centre::Texts(text.lines().map(str::to_string).collect(), path.display().to_string())
            }
            (None, true) => Centre::Contexts,
            (None, false) => Centre::None,
        };
        let model = Model::load(backend, &files)?;
        let others: Vec<(String, String)> =
            args.b.iter().cloned().zip(args.b_token.iter().cloned()).collect();
        let c = compare(&model, tok, &args.a, &args.a_token, &others, &centre)?;
        let shown = match centre {
            Centre::None => "raw cosine (--center subtracts the contexts' mean)".to_string(),
            _ => c.shown.clone(),
        };
        let mut series = Vec::new();
        for o in &c.others {
            if !args.json {
                println!(
                    "{shown} of {} (position {} of {}) and {} (position {} of {}):",
                    quote(&c.a_token),
                    c.a_position,
                    quote(&args.a),
                    quote(&o.b_token),
                    o.b_position,
                    quote(&o.b)
                );
                for s in &o.similarity {
                    let bar = "#".repeat((s.cosine.max(0.0) * 40.0).round() as usize);
                    println!("  {:>6}  {:>7.4}  {bar}", s.point, s.cosine);
                }
            }
            series.push(Series {
                label: format!(
                    "{} in {}  vs  {} in {}",
                    quote(&args.a_token),
                    quote(&args.a),
                    quote(&o.b_word),
                    quote(&o.b)
                ),
                values: o.similarity.iter().map(|s| s.cosine).collect(),
            });
        }
        if args.json {
            let results: Vec<_> = c
                .others
                .iter()
                .map(|o| json!({ "b": o.b, "b_token": o.b_word, "b_position": o.b_position, "similarity": o.similarity }))
                .collect();
            println!(
                "{}",
                json!({ "a": args.a, "a_token": args.a_token, "a_position": c.a_position, "shown": shown, "centred": c.centred, "comparisons": results })
            );
        }
        let centred = c.centred;
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
                    if centred { "centred cosine similarity" } else { "cosine similarity" },
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
