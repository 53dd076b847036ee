//! The prefill/decode loop: one forward over the prompt, then one token at a time against the KV
//! cache, sampling each next token, until EOS, the token budget or the context runs out.

use serde::Serialize;

use crate::backend::{Backend, pages_for};
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::probe::Probes;
use crate::sample::SamplingParams;
use crate::schedule::{Held, Request, Scheduler, SchedulerOptions};

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop at the model's EOS tokens (off only for benchmarks that need a fixed length).
    pub stop_at_eos: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxTokens,
    ContextFull,
    Interrupted,
    /// Cancelled by its caller (a scheduler's `cancel`).
    Cancelled,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub stop: StopReason,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Forward passes of one token after the prefill.
    pub decode_steps: usize,
    /// Of those, the ones replayed from a recorded graph.
    pub replayed_steps: usize,
    /// Why decode steps were not replayed although the backend records (the recording failed).
    pub graph_failure: Option<String>,
}

impl Generation {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_ids.len() as f64 / self.prefill_seconds.max(1e-9)
    }

    pub fn decode_tokens_per_second(&self) -> f64 {
        if self.decode_steps == 0 { 0.0 } else { self.decode_steps as f64 / self.decode_seconds.max(1e-9) }
    }
}

/// Checks that a prompt fits the model's context and returns the KV-cache size to allocate.
pub fn cache_size(prompt_len: usize, max_tokens: usize, context: usize) -> Result<usize> {
    if prompt_len == 0 {
        return Err(Error::Invalid("the prompt is empty (no tokens to run)".into()));
    }
    if prompt_len > context {
        return Err(Error::Invalid(format!(
            "the prompt has {prompt_len} tokens but the model's context holds {context}"
        )));
    }
    Ok((prompt_len + max_tokens).min(context))
}

/// Generates from `prompt_ids`, calling `on_token` with each new token id as soon as it is chosen.
/// `on_token` returns false to stop early (Ctrl-C).
///
/// This is the scheduler ([`crate::schedule::Scheduler`]) with one request, over a cache of the
/// prompt plus `max_tokens` (within the context), the whole prompt in one step. On a backend that
/// can record, the second decode step is recorded (a CUDA graph) and every later step replays it
/// with the new token and position, when the probes allow it (nothing captured, edits that apply
/// at every position). The first runs plainly: it is the first use of the one-row products and
/// the split decode attention, and whatever a device does once (loading a module lazily, choosing
/// a cuBLAS algorithm, allocating) must not happen inside a recording. Tokens are picked on the
/// device when the backend can.
pub fn generate<B: Backend>(
    model: &Model<B>,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    probes: &mut Probes<B>,
    on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Generation> {
    let capacity = cache_size(prompt_ids.len(), opts.max_tokens, model.config.context_length)?;
    let options = SchedulerOptions { token_budget: prompt_ids.len(), max_seqs: 1, graphs: true };
    let mut sched = Scheduler::new(model, pages_for(capacity), options)?;
    sched.add(Request {
        ids: prompt_ids.to_vec(),
        options: opts.clone(),
        probes: Held::Borrowed(probes),
        on_token: Box::new(on_token),
    })?;
    let mut done = sched.run()?;
    match done.pop() {
        Some(f) if done.is_empty() => Ok(f.generation),
        _ => Err(Error::Invalid("generate: the scheduler did not finish its one request".into())),
    }
}
