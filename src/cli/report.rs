//! `scalpel report`: one self-contained HTML page about a prompt.

use std::path::PathBuf;

use clap::Args;

use super::common::{Device, ModelArgs, OnBackend, PromptArgs, on_device};
use crate::backend::Backend;
use crate::error::Result;
use crate::forward::Model;
use crate::interp::attention::{HeadScore, focused, maps};
use crate::interp::lens::logit_lens;
use crate::interp::report::{ReportData, html};
use crate::interp::words::token_strings;
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The HTML file to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

struct Task {
    args: ReportArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        let (text, ids) = args.prompt.encode_fitted(tok, files.config.context_length, 0)?;
        crate::dump::check_output(&args.out, args.force)?;
        let model = Model::load(backend, &files)?;
        let lens = logit_lens(&model, &ids, 5)?;
        let all: Vec<usize> = (0..files.config.n_layers).collect();
        let maps = maps(&model, &ids, &all)?;
        let shown = focused(&maps).into_iter().next().unwrap_or(HeadScore { layer: 0, head: 0, score: 0.0 });
        let attention: Vec<_> = maps.into_values().collect();
        let tokens = token_strings(tok, &ids)?;
        let page = html(
            &ReportData {
                model: &files.label,
                prompt: &text,
                tokens: &tokens,
                lens: &lens,
                attention: &attention,
                shown: &shown,
            },
            tok,
        )?;
        crate::dump::write_atomic(&args.out, args.force, |f| std::io::Write::write_all(f, page.as_bytes()))?;
        crate::info!("wrote {} ({} KiB)", args.out.display(), page.len() / 1024);
        Ok(())
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
