//! The command line: one file per subcommand, this one for the parser and the exit report.

mod common;
mod generate;
mod params;
mod tokenize;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use common::{Device, ModelArgs, OnBackend, PromptArgs, on_device};

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
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::progress::set_quiet(cli.quiet);
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Params(a) => params::run(a),
    }
}

/// Parses the arguments, runs, and turns any error into a message on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let class = e.downcast_ref::<crate::Error>().map(crate::Error::class).unwrap_or("error");
            eprintln!("error[{class}]: {e:#}");
            ExitCode::FAILURE
        }
    }
}
