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
use crate::schedule::{Held, Request, Scheduler, SchedulerOptions, SeqId};

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
    /// A file of prompts, one per line, run as one batch with any -p prompts (after them); each
    /// output is labelled with its prompt's number (text), or is one JSON line (--json).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<std::path::PathBuf>,
    /// Pages of 16 positions in the KV cache of a batch (default: room for every prompt and its
    /// tokens at once); fewer makes the scheduler preempt and recompute sequences.
    #[arg(long, value_name = "N")]
    pub kv_pages: Option<usize>,
    /// Sequences of a batch that run at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_seqs: usize,
}

/// Every prompt of the command line, in order: the -p ones, then the file's lines (numbered
/// from 1 in the file, for messages).
fn all_prompts(args: &GenerateArgs) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = args
        .prompt
        .prompt
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("-p number {}", i + 1), p.clone()))
        .collect();
    if let Some(path) = &args.prompts {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for (i, line) in text.lines().enumerate() {
            out.push((format!("{} line {}", path.display(), i + 1), line.to_string()));
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid("no prompt: give one with -p TEXT, or a file with --prompts FILE".into()));
    }
    Ok(out)
}

struct Task {
    args: GenerateArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        if args.prompts.is_some() || args.prompt.prompt.len() > 1 {
            return run_batch(args, files, backend);
        }
        let context = files.config.context_length;
        let (_, prompt_ids) =
            args.prompt.encode_fitted(&files.tokenizer, context, args.max_tokens.min(context / 2))?;
        let opts = options(&args)?;
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
                "prompt": args.prompt.text()?,
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

fn options(args: &GenerateArgs) -> Result<GenerateOptions> {
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
    Ok(opts)
}

/// Several prompts as one batch on the scheduler. A prompt that cannot run (empty, too long) is
/// reported by its number or line and the others run; the command then fails, after printing
/// every output.
fn run_batch<B: Backend>(args: GenerateArgs, files: ModelFiles, backend: B) -> Result<()> {
    let context = files.config.context_length;
    let opts = options(&args)?;
    let prompts = all_prompts(&args)?;
    let encoded: Vec<Result<Vec<u32>>> = prompts
        .iter()
        .map(|(_, text)| {
            let (_, ids) = args.prompt.only(text).encode_fitted(
                &files.tokenizer,
                context,
                args.max_tokens.min(context / 2),
            )?;
            crate::generate::cache_size(ids.len(), opts.max_tokens, context)?;
            Ok(ids)
        })
        .collect();
    let device = backend.name();
    let model = Model::load(backend, &files)?;
    let need: usize = encoded
        .iter()
        .flatten()
        .map(|ids| crate::backend::pages_for((ids.len() + opts.max_tokens).min(context)))
        .sum();
    let pages = args.kv_pages.unwrap_or(need).max(1);
    // f32 on the CPU, bf16 on a GPU; one more page is the scratch page of padded steps.
    let per_value = if device == "cpu" { 4 } else { 2 };
    let c = &model.config;
    let cache_bytes =
        2 * c.n_layers * c.n_kv_heads * c.head_dim * (pages + 1) * crate::backend::PAGE * per_value;
    crate::info!(
        "[{device}] {} prompts; KV cache of {pages} pages of {} positions ({:.1} MiB)",
        prompts.len(),
        crate::backend::PAGE,
        cache_bytes as f64 / (1 << 20) as f64
    );
    let options = SchedulerOptions { max_seqs: args.max_seqs, ..SchedulerOptions::default() };
    let mut sched = Scheduler::new(&model, pages, options)?;
    let mut ids_of: Vec<Option<SeqId>> = Vec::with_capacity(prompts.len());
    let mut failed: Vec<(usize, String)> = Vec::new();
    for (i, ids) in encoded.into_iter().enumerate() {
        let added = ids.and_then(|ids| {
            let probes = args.edits.probes(&model)?;
            sched.add(Request {
                ids,
                options: opts.clone(),
                probes: Held::Owned(probes),
                on_token: Box::new(|_| Ok(true)),
            })
        });
        match added {
            Ok(id) => ids_of.push(Some(id)),
            Err(e) => {
                ids_of.push(None);
                failed.push((i, e.to_string()));
            }
        }
    }
    let bar = crate::progress::bar(prompts.len() as u64, "generating");
    let mut done = Vec::new();
    while !sched.is_idle() {
        if crate::mem::interrupted() {
            // Ctrl-C: every sequence stops where it is; what was generated is printed below.
            for id in ids_of.iter().flatten() {
                sched.cancel(*id);
            }
        }
        sched.step()?;
        for f in sched.take_finished() {
            bar.inc(1);
            done.push(f);
        }
    }
    bar.finish_and_clear();
    let mut stdout = std::io::stdout().lock();
    let tokens: usize = done.iter().map(|f| f.generation.generated_ids.len()).sum();
    for (i, ((label, text), id)) in prompts.iter().zip(&ids_of).enumerate() {
        let line = match id.and_then(|id| done.iter().find(|f| f.id == id)) {
            Some(f) => {
                let g = &f.generation;
                let out_text = visible_text(&files, g)?;
                if args.json {
                    json!({
                        "index": i,
                        "source": label,
                        "prompt": text,
                        "prompt_ids": g.prompt_ids,
                        "generated_ids": g.generated_ids,
                        "text": out_text,
                        "stop": g.stop,
                        "preemptions": f.preemptions,
                    })
                    .to_string()
                } else {
                    format!("=== {} ({label}) ===\n{text}{out_text}\n", i + 1)
                }
            }
            None => {
                let why = failed.iter().find(|(j, _)| *j == i).map_or("not run", |(_, e)| e.as_str());
                crate::info!("error: prompt {} ({label}): {why}", i + 1);
                if args.json {
                    json!({"index": i, "source": label, "prompt": text, "error": why}).to_string()
                } else {
                    format!("=== {} ({label}) ===\nerror: {why}\n", i + 1)
                }
            }
        };
        writeln!(stdout, "{line}").map_err(|e| Error::io("<stdout>", e))?;
    }
    stdout.flush().map_err(|e| Error::io("<stdout>", e))?;
    let st = &sched.stats;
    crate::info!(
        "[{device}] {} sequences, {tokens} tokens generated in {} steps ({} replayed), {} preemptions",
        done.len(),
        st.steps,
        st.replayed_steps,
        st.preemptions
    );
    if !failed.is_empty() {
        return Err(Error::Invalid(format!(
            "{} of {} prompts could not run (the others ran): {}",
            failed.len(),
            prompts.len(),
            failed
                .iter()
                .map(|(i, e)| format!("prompt {} ({}): {e}", i + 1, prompts[*i].0))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    if done.iter().any(|f| f.generation.stop == StopReason::Cancelled) {
        return Err(Error::Interrupted(format!("stopped after {tokens} tokens")));
    }
    Ok(())
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
        StopReason::Cancelled => "cancelled",
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
