//! `scalpel generate`: stream a continuation to stdout, diagnostics to stderr.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::common::{Device, EditArgs, ModelArgs, OnBackend, PromptArgs, on_device_with};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::generate::{GenerateOptions, Generation, StopReason, generate};
use crate::model::ModelFiles;
use crate::sample::SamplingParams;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Generate at most this many tokens (fewer if the model emits EOS or the context fills).
    #[arg(long, short = 'n', default_value_t = 64)]
    pub max_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, short = 't', default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P (nucleus).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Divide positive logits of tokens already seen by R (multiply negative ones); 1 = off.
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Random seed for sampling; the same seed, prompt and flags give the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Print one JSON object (prompt ids, generated ids, text, speeds) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub edits: EditArgs,
    /// Time every GPU op with CUDA events and print a table per kernel on stderr (decode steps
    /// are then not replayed as a graph, so each op can be measured).
    #[arg(long)]
    pub profile: bool,
}

struct Task {
    args: GenerateArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let context = files.config.context_length;
        let (_, prompt_ids) =
            args.prompt.encode_fitted(&files.tokenizer, context, args.max_tokens.min(context / 2))?;
        let opts = GenerateOptions {
            max_tokens: args.max_tokens,
            sampling: SamplingParams {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                min_p: args.min_p,
                repetition_penalty: args.repetition_penalty,
                seed: args.seed,
            },
            stop_at_eos: true,
        };
        opts.sampling.validate()?;
        crate::generate::cache_size(prompt_ids.len(), opts.max_tokens, files.config.context_length)?;
        let device = backend.name();
        let model = Model::load(backend, &files)?;
        let mut probes = args.edits.probes(&model)?;
        let tok = &files.tokenizer;

        let mut stream = tok.stream();
        let mut stdout = std::io::stdout().lock();
        let bar = crate::progress::bar(opts.max_tokens as u64, "generating");
        let mut printed_newline = true;
        let generation = generate(&model, &prompt_ids, &opts, &mut probes, |id| {
            if args.json {
                bar.inc(1);
            } else if !model.config.eos_token_ids.contains(&id) {
                let piece = stream.push(id)?;
                if !piece.is_empty() {
                    printed_newline = piece.ends_with('\n');
                    stdout
                        .write_all(piece.as_bytes())
                        .and_then(|_| stdout.flush())
                        .map_err(|e| Error::io("<stdout>", e))?;
                }
            }
            // Ctrl-C: stop after this token; what was generated is printed and flushed below.
            Ok(!crate::mem::interrupted())
        })?;
        bar.finish_and_clear();
        if args.json {
            let text = visible_text(&files, &generation)?;
            let out = json!({
                "model": files.label,
                "device": device,
                "prompt": args.prompt.prompt,
                "chat": args.prompt.chat,
                "prompt_ids": generation.prompt_ids,
                "generated_ids": generation.generated_ids,
                "text": text,
                "stop": generation.stop,
                "prefill_tokens_per_second": generation.prefill_tokens_per_second(),
                "decode_tokens_per_second": generation.decode_tokens_per_second(),
                "decode_steps": generation.decode_steps,
                "replayed_steps": generation.replayed_steps,
                "graph_failure": generation.graph_failure,
                "parameters": model.parameter_count(),
                "peak_rss_bytes": crate::mem::peak_rss_bytes(),
            });
            writeln!(stdout, "{out}").map_err(|e| Error::io("<stdout>", e))?;
        } else {
            let rest = stream.finish()?;
            if !rest.is_empty() {
                printed_newline = rest.ends_with('\n');
                stdout.write_all(rest.as_bytes()).map_err(|e| Error::io("<stdout>", e))?;
            }
            if !printed_newline {
                writeln!(stdout).map_err(|e| Error::io("<stdout>", e))?;
            }
            stdout.flush().map_err(|e| Error::io("<stdout>", e))?;
        }
        report(device, &generation);
        if args.profile {
            print_profile(&model.backend.op_times()?, device);
        }
        if generation.stop == StopReason::Interrupted {
            return Err(Error::Interrupted(format!(
                "stopped after {} tokens",
                generation.generated_ids.len()
            )));
        }
        Ok(())
    }
}

/// The generated text without a trailing EOS token.
fn visible_text(files: &ModelFiles, g: &Generation) -> Result<String> {
    let ids: Vec<u32> =
        g.generated_ids.iter().copied().filter(|id| !files.config.eos_token_ids.contains(id)).collect();
    files.tokenizer.decode(&ids)
}

fn print_profile(times: &[crate::backend::OpTime], device: &str) {
    if times.is_empty() {
        eprintln!("--profile: no per-op times on the {device} backend");
        return;
    }
    let total: f64 = times.iter().map(|t| t.total_ms).sum();
    eprintln!("{:<22} {:>8} {:>12} {:>12} {:>7}", "op", "calls", "total ms", "mean µs", "share");
    for t in times {
        eprintln!(
            "{:<22} {:>8} {:>12.3} {:>12.2} {:>6.1}%",
            t.op,
            t.calls,
            t.total_ms,
            1000.0 * t.total_ms / t.calls.max(1) as f64,
            100.0 * t.total_ms / total.max(1e-12)
        );
    }
    eprintln!("{:<22} {:>8} {:>12.3}", "all", times.iter().map(|t| t.calls).sum::<usize>(), total);
}

fn report(device: &str, g: &Generation) {
    let why = match g.stop {
        StopReason::Eos => "end of sequence",
        StopReason::MaxTokens => "max tokens",
        StopReason::ContextFull => "context full",
        StopReason::Interrupted => "interrupted",
    };
    crate::info!(
        "[{device}] prefill {} tokens at {:.1} tok/s, decode {} tokens at {:.1} tok/s; stopped: {why}",
        g.prompt_ids.len(),
        g.prefill_tokens_per_second(),
        g.decode_steps,
        g.decode_tokens_per_second()
    );
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let (device, profile) = (args.device, args.profile);
    on_device_with(device, profile, Task { args, files })?;
    Ok(())
}
