//! Arguments and plumbing shared by the subcommands: which model, which device, which prompt.

use clap::{Args, ValueEnum};

use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::backend::cpu::qmatmul::Activations;
use crate::error::{Error, Result};
use crate::model::ModelFiles;
use crate::model::stored::WeightMode;
use crate::model::tokenizer::Tokenizer;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a .gguf file, a Hugging Face model directory (config.json, *.safetensors,
    /// tokenizer.json), a Hugging Face repo id (org/name, from the local HF cache or downloaded),
    /// or a known name: smollm2-135m (the default), gemma3-270m.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<String>,
    /// How the weights are held: `stored` keeps them in the file's format (GGUF blocks, f16,
    /// bf16) and multiplies on it; `f32` dequantizes them on load (the reference path: 4-8x the
    /// memory, the same numbers up to summation order).
    #[arg(long, value_enum, default_value_t = WeightMode::Stored)]
    pub weights: WeightMode,
    /// The CPU's products on stored weights: `f32` multiplies the f32 activations exactly; `int8`
    /// quantizes them to 8 bits per 32 values first, as llama.cpp does (Q4_0, Q4_1, Q8_0, Q4_K,
    /// Q6_K weights; faster decode and prefill, each product moved by at most Σ|w|·max|x|/254;
    /// BENCHMARKS.md has the measured speed and error). Products of more than 16 rows (prompts)
    /// take it on CPUs with AVX-512 VNNI and stay exact elsewhere; other formats stay exact.
    #[arg(long, value_enum, default_value_t = Activations::F32)]
    pub activations: Activations,
}

impl ModelArgs {
    pub fn open(&self) -> Result<ModelFiles> {
        let mut files = ModelFiles::open(self.model.as_deref())?;
        files.weight_mode = self.weights;
        crate::backend::cpu::qmatmul::set_activations(self.activations);
        if let Some(note) = files.weights.note() {
            crate::info!("note: {note}");
        }
        Ok(files)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// CUDA when a GPU and the CUDA backend are available, else the CPU (never the mock).
    Auto,
    /// The f32 reference backend.
    Cpu,
    /// An NVIDIA GPU through the CUDA backend.
    Cuda,
    /// The CUDA backend on the mock device: the same kernels run on the CPU (slowly), to check
    /// a kernel change without a GPU. SCALPEL_MOCK_SCHEDULE=forward|reverse|random[:SEED],
    /// SCALPEL_MOCK_THREADS and SCALPEL_MOCK_MEMORY set how it runs.
    Mock,
}

#[derive(Args, Debug, Clone)]
pub struct PromptArgs {
    /// The prompt text (`generate` takes it several times, and runs the prompts as one batch).
    #[arg(long, short = 'p', value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// Wrap the prompt as one user message in the model's own chat template (from the GGUF's
    /// tokenizer.chat_template or tokenizer_config.json) with the assistant turn opened.
    #[arg(long)]
    pub chat: bool,
    /// A prompt longer than the model's context: refuse it, or keep its last tokens (with a
    /// warning) so that generation still has room.
    #[arg(long, value_enum, default_value_t = Overflow::Refuse)]
    pub overflow: Overflow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Overflow {
    #[default]
    Refuse,
    Truncate,
}

impl PromptArgs {
    pub fn new(prompt: impl Into<String>, chat: bool) -> Self {
        PromptArgs { prompt: vec![prompt.into()], chat, overflow: Overflow::Refuse }
    }

    /// The one prompt of a command that takes one.
    pub fn text(&self) -> Result<&str> {
        match self.prompt.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::Invalid("no prompt: give one with -p TEXT".into())),
            many => Err(Error::Invalid(format!(
                "this command takes one prompt, and -p was given {} times (generate takes several)",
                many.len()
            ))),
        }
    }

    /// This prompt alone, with the same settings (for a command that runs several).
    pub fn only(&self, text: &str) -> PromptArgs {
        PromptArgs { prompt: vec![text.to_string()], chat: self.chat, overflow: self.overflow }
    }

    /// The prompt's ids fitted to the context, keeping `room` positions free for generation:
    /// unchanged when they fit; otherwise an error, or (with --overflow truncate) the last tokens.
    pub fn fit(&self, ids: Vec<u32>, context: usize, room: usize) -> Result<Vec<u32>> {
        let keep = context.saturating_sub(room).max(1);
        if ids.len() <= context && (self.overflow == Overflow::Refuse || ids.len() <= keep) {
            return Ok(ids);
        }
        match self.overflow {
            Overflow::Refuse => Err(Error::Invalid(format!(
                "the prompt has {} tokens but the model's context holds {context} (--overflow truncate keeps the last ones)",
                ids.len()
            ))),
            Overflow::Truncate => {
                crate::info!(
                    "warning: the prompt has {} tokens; keeping the last {keep} of them to fit the context of {context}",
                    ids.len()
                );
                Ok(ids[ids.len() - keep..].to_vec())
            }
        }
    }

    /// As [`PromptArgs::encode`], the ids fitted to `context` with `room` positions to spare.
    pub fn encode_fitted(&self, tok: &Tokenizer, context: usize, room: usize) -> Result<(String, Vec<u32>)> {
        let (text, ids) = self.encode(tok)?;
        Ok((text, self.fit(ids, context, room)?))
    }

    /// The text the model sees (after the chat template) and its token ids.
    pub fn encode(&self, tok: &Tokenizer) -> Result<(String, Vec<u32>)> {
        let prompt = self.text()?;
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        if self.chat {
            let text = tok.apply_chat_template(prompt)?;
            let ids = tok.encode_raw(&text)?;
            Ok((text, ids))
        } else {
            let ids = tok.encode(prompt)?;
            if ids.is_empty() {
                return Err(Error::Invalid("the prompt encodes to no tokens".into()));
            }
            Ok((prompt.to_string(), ids))
        }
    }
}

/// Work that runs on whichever backend the user chose; written once, generic over the backend.
pub trait OnBackend {
    type Output;
    fn run<B: Backend>(self, backend: B) -> Result<Self::Output>;
}

/// Runs `task` on the chosen device: `auto` is the GPU when there is one and the CPU otherwise.
pub fn on_device<T: OnBackend>(device: Device, task: T) -> Result<T::Output> {
    on_device_with(device, false, task)
}

/// As [`on_device`]; `profile` times every CUDA op (ignored on the CPU).
pub fn on_device_with<T: OnBackend>(device: Device, profile: bool, task: T) -> Result<T::Output> {
    use crate::backend::cuda::{Cuda, MockOptions};
    let timed = |cuda: Cuda| if profile { cuda.with_profiling() } else { cuda };
    match device {
        Device::Cpu => run_cpu(profile, task),
        Device::Auto if Cuda::available() => match Cuda::new(0) {
            Ok(cuda) => {
                crate::info!("GPU: {}", cuda.describe());
                task.run(timed(cuda))
            }
            Err(e) => {
                crate::info!("note: a GPU is present but unusable ({e}); running on the CPU");
                run_cpu(profile, task)
            }
        },
        Device::Auto => run_cpu(profile, task),
        Device::Cuda => {
            let cuda = Cuda::new(0)?;
            crate::info!("GPU: {}", cuda.describe());
            task.run(timed(cuda))
        }
        Device::Mock => {
            let cuda = Cuda::mock(MockOptions::from_env()?)?;
            crate::info!("device: {} (no speed is measured here)", cuda.describe());
            task.run(timed(cuda))
        }
    }
}

/// The CPU, its ops timed by wall clock when profiling.
fn run_cpu<T: OnBackend>(profile: bool, task: T) -> Result<T::Output> {
    if profile { task.run(crate::backend::timed::Timed::new(Cpu)) } else { task.run(Cpu) }
}

/// Steering and ablation, shared by every command that runs the model forward.
#[derive(Args, Debug, Clone, Default)]
pub struct EditArgs {
    /// Add a steering vector (a llama.cpp control-vector GGUF, e.g. from `scalpel steer build`)
    /// times SCALE (default 1) to blocks.L.resid_post for each layer L it holds, or only LAYERS
    /// (e.g. 10-14), at every position including generated ones. Repeat to add several.
    #[arg(long = "steer", value_name = "FILE[:SCALE][@LAYERS]")]
    pub steer: Vec<crate::interp::steer::VectorSpec>,
    /// Project a direction out of the residual stream after every sublayer of every layer (or of
    /// LAYERS); a file with one direction uses it at every layer, otherwise each layer its own.
    #[arg(long = "ablate", value_name = "FILE[@LAYERS]")]
    pub ablate: Vec<crate::interp::steer::VectorSpec>,
    /// Check every point of the forward pass for NaN or infinity and stop with the first place
    /// they appear (slow: every point is copied out).
    #[arg(long)]
    pub check_finite: bool,
}

impl EditArgs {
    pub fn probes<B: Backend>(&self, model: &crate::forward::Model<B>) -> Result<crate::probe::Probes<B>> {
        let mut probes = crate::probe::Probes::none();
        probes.check_finite(self.check_finite);
        for s in &self.steer {
            crate::interp::steer::add_steering(model, &mut probes, s)?;
        }
        for s in &self.ablate {
            if s.scale != 1.0 {
                return Err(Error::Invalid(format!(
                    "--ablate {}: ablation takes no scale",
                    s.path.display()
                )));
            }
            crate::interp::steer::add_ablation(model, &mut probes, s)?;
        }
        Ok(probes)
    }
}

/// A position given as an index, negative counting from the end (-1 = the last token).
pub fn resolve_position(p: i64, len: usize, what: &str) -> Result<usize> {
    crate::interp::index_from_end(p, len).ok_or_else(|| {
        Error::Invalid(format!(
            "{what} {p} is outside the {len} tokens (use 0..{} or -1 for the last)",
            len - 1
        ))
    })
}

/// A layer given as an index, negative counting from the end (-1 = the last layer).
pub fn resolve_layer(l: i64, n_layers: usize, what: &str) -> Result<usize> {
    crate::interp::index_from_end(l, n_layers).ok_or_else(|| {
        Error::Invalid(format!(
            "{what} {l}: the model has layers 0..{} (negative numbers count from the end: -1 is the last)",
            n_layers - 1
        ))
    })
}

/// A flag value as the user types it (`resid-post`, `mean`), never the Rust name (`ResidPost`).
pub fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value().map_or_else(String::new, |p| p.get_name().to_string())
}

/// Writes a picture, saying where on stderr.
pub fn save_png(c: &crate::interp::render::Canvas, path: &std::path::Path, force: bool) -> Result<()> {
    c.save(path, force)?;
    crate::info!("wrote {}", path.display());
    Ok(())
}
