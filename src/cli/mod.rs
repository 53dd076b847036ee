//! The command line: one file per subcommand, this one for the parser and the exit report.

mod attention;
mod attribute;
pub mod common;
mod embeddings;
mod generate;
mod lens;
mod neurons;
mod params;
mod patch;
mod patchscope;
mod pca;
mod report;
mod similarity;
mod steer;
mod tokenize;
mod top_examples;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use common::{Device, ModelArgs, OnBackend, PromptArgs, on_device, on_device_with};

#[derive(Parser, Debug)]
#[command(
    name = "scalpel",
    version,
    about = "A CUDA-native LLM inference engine that is also a microscope for the model it runs",
    long_about = "scalpel generates text with Llama-family and Gemma 3 models and opens them while they run: \
                  every layer's residual stream, every head's attention, the logit lens, steering vectors, \
                  Patchscopes.\n\nWithout --model it runs SmolLM2-135M-Instruct (Q4_1 GGUF), which \
                  scripts/setup.sh fetches into ~/.cache/scalpel/models."
)]
pub struct Cli {
    /// No progress bars or informational lines on stderr (errors are still printed).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a continuation of a prompt, streamed to stdout.
    Generate(generate::GenerateArgs),
    /// Run a prompt and dump probe points (residual stream, attention, logits) to safetensors.
    Trace(trace::TraceArgs),
    /// Show how a text is tokenized: each token's id and string.
    Tokenize(tokenize::TokenizeArgs),
    /// List the model's parameters: name, shape, dtype, and the total count.
    Params(params::ParamsArgs),
    /// The logit lens: what each layer's residual stream would predict.
    Lens(lens::LensArgs),
    /// Attention patterns, attention sinks, and heads where one word attends to another.
    Attention(attention::AttentionArgs),
    /// Nearest neighbours of a token in the embedding table (and the LM head when untied).
    Neighbors(embeddings::NeighborsArgs),
    /// Vector arithmetic over token embeddings, e.g. "冷 - cold + small".
    Analogy(embeddings::AnalogyArgs),
    /// One word in two contexts: cosine similarity of its representation at every layer.
    Similarity(similarity::SimilarityArgs),
    /// Steering vectors (llama.cpp control vectors): build them here, apply with generate --steer.
    #[command(subcommand)]
    Steer(steer::SteerCommand),
    /// Direct logit attribution: how much each layer, head and MLP writes a token's logit directly.
    Attribute(attribute::AttributeArgs),
    /// Activation patching: which layer, position or head restores a clean answer in a corrupted run.
    Patch(patch::PatchArgs),
    /// Patchscopes: patch a hidden state into another prompt and let the model describe it.
    Patchscope(patchscope::PatchscopeArgs),
    /// The corpus contexts that most activate a neuron, a direction, or a head's attention to a token.
    TopExamples(top_examples::TopExamplesArgs),
    /// FFN neurons that fire most on each token, or one neuron across the prompt.
    Neurons(neurons::NeuronsArgs),
    /// 2-D PCA of one representation per prompt, as a labelled scatter plot.
    Pca(pca::PcaArgs),
    /// A self-contained HTML page: tokens, logit-lens heatmap, interactive attention.
    Report(report::ReportArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::progress::set_quiet(cli.quiet);
    crate::backend::cpu::qmatmul::default_isa_from_env().map_err(|e| crate::Error::Invalid(e.to_string()))?;
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Params(a) => params::run(a),
        Command::Lens(a) => lens::run(a),
        Command::Attention(a) => attention::run(a),
        Command::Neighbors(a) => embeddings::run_neighbors(a),
        Command::Analogy(a) => embeddings::run_analogy(a),
        Command::Similarity(a) => similarity::run(a),
        Command::Steer(c) => steer::run(c),
        Command::Attribute(a) => attribute::run(a),
        Command::Patch(a) => patch::run(a),
        Command::Patchscope(a) => patchscope::run(a),
        Command::TopExamples(a) => top_examples::run(a),
        Command::Neurons(a) => neurons::run(a),
        Command::Pca(a) => pca::run(a),
        Command::Report(a) => report::run(a),
    }
}

/// Parses the arguments, runs, and turns any error into a message on stderr: exit code 1, or 130
/// after Ctrl-C.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Output piped into `head` that closes early ends the process quietly, as other Unix tools
    // do, instead of println! panicking on EPIPE.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    crate::mem::install_interrupt_handler();
    if let Err(e) = crate::backend::cpu::use_this_thread_in_pool() {
        eprintln!("error[invalid]: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let class = e.downcast_ref::<crate::Error>().map(crate::Error::class).unwrap_or("error");
            eprintln!("error[{class}]: {}", said_once(&e));
            if class == "interrupted" { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}

/// The error and its causes joined with ": ", each said once: scalpel's errors already name their
/// source (an OS error, a driver's code) in their own message.
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}
