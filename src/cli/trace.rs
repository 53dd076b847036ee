//! `scalpel trace`: one forward pass over a prompt, the chosen probe points written to safetensors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::common::{Device, EditArgs, ModelArgs, OnBackend, PromptArgs, on_device};
use crate::backend::Backend;
use crate::dump::{DumpData, DumpTensor, check_output, write_safetensors};
use crate::error::{Error, Result};
use crate::forward::{Logits, Model};
use crate::model::ModelFiles;
use crate::probe;

pub const DEFAULT_POINTS: &str = "embed,blocks.*.resid_post,final_norm,logits";

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The safetensors file to write (tensors named as the probe points, f32, plus `tokens`).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Comma-separated probe points; `*` matches any run of characters, e.g.
    /// `blocks.*.resid_post,blocks.3.attn_probs,logits`.
    #[arg(long, default_value = DEFAULT_POINTS, value_name = "PATTERN,...")]
    pub points: String,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    #[command(flatten)]
    pub edits: EditArgs,
}

struct Task {
    args: TraceArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let cfg = &files.config;
        let points = probe::select(&args.points, cfg.n_layers)?;
        let (text, ids) = args.prompt.encode_fitted(&files.tokenizer, cfg.context_length, 0)?;
        let capacity = crate::generate::cache_size(ids.len(), 0, cfg.context_length)?;
        let model = Model::load(backend, &files)?;
        let mut probes = args.edits.probes(&model)?;
        for p in &points {
            probes.capture(*p);
        }
        let mut cache = model.new_cache(capacity)?;
        model.forward(&ids, 0, &mut cache, &mut probes, Logits::All)?;
        if crate::mem::interrupted() {
            return Err(Error::Interrupted(format!("nothing written to {}", args.out.display())));
        }

        let mut tensors = Vec::with_capacity(points.len() + 1);
        let mut captured = probes.take_captured();
        for p in &points {
            let mut chunks = captured.remove(p).unwrap_or_default();
            if chunks.len() != 1 {
                return Err(Error::Invalid(format!(
                    "probe {p} was captured {} times in one forward pass",
                    chunks.len()
                )));
            }
            let c = chunks.pop().expect("one chunk");
            tensors.push(DumpTensor { name: p.to_string(), shape: c.shape, data: DumpData::F32(c.data) });
        }
        tensors.push(DumpTensor {
            name: "tokens".into(),
            shape: vec![ids.len()],
            data: DumpData::I64(ids.iter().map(|&i| i as i64).collect()),
        });
        let token_strs: Vec<String> =
            ids.iter().map(|&i| files.tokenizer.decode(&[i])).collect::<Result<_>>()?;
        let mut meta = BTreeMap::new();
        meta.insert("model".to_string(), files.label.clone());
        meta.insert("arch".to_string(), cfg.arch.name().to_string());
        meta.insert("prompt".to_string(), text);
        meta.insert("token_strs".to_string(), serde_json::to_string(&token_strs).expect("strings serialize"));
        meta.insert("device".to_string(), model.backend.name().to_string());
        write_safetensors(&args.out, args.force, &tensors, meta)?;
        crate::info!("wrote {} tensors for {} tokens to {}", tensors.len(), ids.len(), args.out.display());
        Ok(())
    }
}

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    // Fail on an unwritable --out before spending time on the model.
    check_output(&args.out, args.force)?;
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
