//! `scalpel pca`: one representation per prompt, projected onto its first two principal components.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device, save_png};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::pca::of_prompts;
use crate::interp::render::charts::scatter_plot;
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct PcaArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompts, one per line; a line that starts with `[name]` puts its prompt in group `name`,
    /// which colours its point (`[] ` starts a prompt with a bracket and no group).
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// The layer whose resid_post is projected.
    #[arg(long, allow_negative_numbers = true)]
    pub layer: i64,
    /// The position in each prompt (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub position: i64,
    /// The scatter plot to write.
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
    args: PcaArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let c = &files.config;
        let layer = super::common::resolve_layer(args.layer, c.n_layers, "--layer")?;
        let text = std::fs::read_to_string(&args.prompts).map_err(|e| Error::io(&args.prompts, e))?;
        let (groups, prompts): (Vec<&str>, Vec<&str>) =
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(group_and_prompt).unzip();
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(Error::Invalid(format!(
                "{}: group [{}] has no prompt after it",
                args.prompts.display(),
                groups[i]
            )));
        }
        if prompts.len() < 3 {
            return Err(Error::Invalid(format!(
                "{}: PCA needs at least 3 prompts, found {}",
                args.prompts.display(),
                prompts.len()
            )));
        }
        if let Some(p) = &args.png {
            crate::dump::check_output(p, args.force)?;
        }
        let model = Model::load(backend, &files)?;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| files.tokenizer.encode(p)).collect::<Result<_>>()?;
        let result = of_prompts(&model, &ids, layer, args.position)?;
        if args.json {
            let pts: Vec<_> = prompts
                .iter()
                .zip(&groups)
                .zip(&result.coords)
                .map(|((p, g), c)| json!({ "prompt": p, "group": g, "coords": c }))
                .collect();
            println!("{}", json!({ "layer": layer, "explained": result.explained, "points": pts }));
        } else {
            println!(
                "blocks.{}.resid_post, PC1 {:.1}%, PC2 {:.1}% of the variance:",
                layer,
                100.0 * result.explained[0],
                100.0 * result.explained.get(1).copied().unwrap_or(0.0)
            );
            let width = groups.iter().map(|g| g.chars().count()).max().unwrap_or(0);
            for ((p, g), c) in prompts.iter().zip(&groups).zip(&result.coords) {
                let g = if width > 0 { format!("{g:<width$}  ") } else { String::new() };
                println!("  {:>9.3} {:>9.3}  {g}{p}", c[0], c.get(1).copied().unwrap_or(0.0));
            }
        }
        if let Some(path) = &args.png {
            let points: Vec<(f64, f64)> =
                result.coords.iter().map(|c| (c[0], c.get(1).copied().unwrap_or(0.0))).collect();
            let labels: Vec<String> = prompts.iter().map(|s| s.to_string()).collect();
            let title = format!("{} — PCA of blocks.{}.resid_post", files.label, layer);
            let xt = format!("PC1 ({:.1}% of variance)", 100.0 * result.explained[0]);
            let yt = format!("PC2 ({:.1}%)", 100.0 * result.explained.get(1).copied().unwrap_or(0.0));
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            save_png(&scatter_plot(&title, &xt, &yt, &points, &labels, &groups)?, path, args.force)?;
        }
        Ok(())
    }
}

/// `[name] prompt` → ("name", "prompt"); a line without a leading `[…]` has no group ("").
fn group_and_prompt(line: &str) -> (&str, &str) {
    if let Some(rest) = line.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return (rest[..end].trim(), rest[end + 1..].trim());
    }
    ("", line)
}

pub fn run(args: PcaArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
