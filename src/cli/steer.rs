//! `scalpel steer build`: a steering vector from contrasting prompts, written as a llama.cpp
//! control vector. (Applying one is `generate --steer` / `--ablate`.)

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::{Device, ModelArgs, OnBackend, on_device};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::parse_layers;
use crate::interp::steer::{ControlVector, Method, StreamPoint, build};
use crate::model::ModelFiles;

#[derive(Subcommand, Debug)]
pub enum SteerCommand {
    /// Build a steering vector from positive and negative prompts (one per line).
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompts showing the behaviour to steer towards, one per line.
    #[arg(long, value_name = "FILE")]
    pub positive: PathBuf,
    /// Contrasting prompts, one per line (paired line by line with --method pca).
    #[arg(long, value_name = "FILE")]
    pub negative: PathBuf,
    /// Layers to build directions for, e.g. 10-20 (default: all but layer 0, which llama.cpp's
    /// control vectors cannot address).
    #[arg(long)]
    pub layers: Option<String>,
    /// Which residual-stream point to read the last token's representation at.
    #[arg(long, value_enum, default_value_t = StreamPoint::ResidPost)]
    pub point: StreamPoint,
    /// How to turn the two sets into a direction.
    #[arg(long, value_enum, default_value_t = Method::Mean)]
    pub method: Method,
    /// Wrap each prompt in the model's chat template first.
    #[arg(long)]
    pub chat: bool,
    /// The control-vector GGUF to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

fn read_prompts(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let prompts: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if prompts.is_empty() {
        return Err(Error::Invalid(format!("{}: no prompts (one per line)", path.display())));
    }
    Ok(prompts)
}

struct Task {
    args: BuildArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let c = &files.config;
        let encode = |path: &PathBuf| -> Result<Vec<Vec<u32>>> {
            read_prompts(path)?
                .into_iter()
                .map(|p| {
                    super::common::PromptArgs::new(p, args.chat).encode(&files.tokenizer).map(|(_, ids)| ids)
                })
                .collect()
        };
        let (pos, neg) = (encode(&args.positive)?, encode(&args.negative)?);
        let layers = match &args.layers {
            Some(l) => parse_layers(l, c.n_layers)?,
            None => (1..c.n_layers).collect(),
        };
        crate::dump::check_output(&args.out, args.force)?;
        let model = Model::load(backend, &files)?;
        let mut directions = build(&model, &pos, &neg, &layers, args.point, args.method)?;
        if directions.remove(&0).is_some() {
            crate::info!("note: skipping blocks.0.resid_post: llama.cpp control vectors start at layer 1");
        }
        if directions.is_empty() {
            return Err(Error::Invalid("no direction left to write (only layer 0 was selected)".into()));
        }
        let cv = ControlVector { directions, model_hint: c.arch.name().to_string() };
        cv.write(&args.out, args.force)?;
        let norms: Vec<String> = cv
            .directions
            .iter()
            .map(|(l, v)| format!("{l}: {:.2}", v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()))
            .collect();
        crate::info!(
            "wrote {} directions ({} positive, {} negative prompts, --point {}, --method {}) to {}; norms {}",
            cv.directions.len(),
            pos.len(),
            neg.len(),
            super::common::value_name(&args.point),
            super::common::value_name(&args.method),
            args.out.display(),
            norms.join(", ")
        );
        Ok(())
    }
}

pub fn run(cmd: SteerCommand) -> anyhow::Result<()> {
    match cmd {
        SteerCommand::Build(args) => {
            let files = args.model.open()?;
            let device = args.device;
            on_device(device, Task { args, files })?;
        }
    }
    Ok(())
}
