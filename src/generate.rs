//! The prefill/decode loop: one forward over the prompt, then one token at a time against the KV
//! cache, sampling each next token, until EOS, the token budget or the context runs out.

use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::{Logits, Model};
use crate::probe::Probes;
use crate::sample::{Sampler, SamplingParams};

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
/// On a backend that can record, the second decode step is recorded (a CUDA graph) and every later
/// step replays it with the new token and position, when the probes allow it (nothing captured,
/// edits that apply at every position). The first runs plainly: it is the first use of the
/// one-row products and the split decode attention, and whatever a device does once (loading a
/// module lazily, choosing a cuBLAS algorithm, allocating) must not happen inside a recording.
/// Tokens are picked on the device when the backend can.
pub fn generate<B: Backend>(
    model: &Model<B>,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    probes: &mut Probes<B>,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Generation> {
    let cfg = &model.config;
    let capacity = cache_size(prompt_ids.len(), opts.max_tokens, cfg.context_length)?;
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut cache = model.new_cache(capacity)?;
    let mut history = prompt_ids.to_vec();
    let mut generated = Vec::new();
    let be = &model.backend;
    let mut choose = |logits: &B::Tensor, history: &[u32]| -> Result<u32> {
        let u = sampler.next_uniform();
        match be.sample(logits, sampler.params(), u)? {
            Some(id) => Ok(id),
            None => sampler.pick_with(&be.download(logits)?, history, u),
        }
    };

    let t0 = Instant::now();
    let mut logits = model.forward(prompt_ids, 0, &mut cache, probes, Logits::Last)?;
    if opts.max_tokens == 0 {
        // The prompt alone (its probes still see it): no token is chosen, so none is emitted.
        return Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            generated_ids: Vec::new(),
            stop: StopReason::MaxTokens,
            prefill_seconds: t0.elapsed().as_secs_f64(),
            decode_seconds: 0.0,
            decode_steps: 0,
            replayed_steps: 0,
            graph_failure: None,
        });
    }
    let mut next = choose(&logits, &history)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut decode_steps = 0;
    let mut replayed_steps = 0;
    let mut graph_failure = None;
    let mut replay = be.supports_graphs() && probes.replayable();
    let mut recorded: Option<(B::Graph, B::Step)> = None;
    let stop = loop {
        generated.push(next);
        history.push(next);
        let go_on = on_token(next)?;
        if opts.stop_at_eos && cfg.eos_token_ids.contains(&next) {
            break StopReason::Eos;
        }
        if !go_on {
            break StopReason::Interrupted;
        }
        if generated.len() >= opts.max_tokens {
            break StopReason::MaxTokens;
        }
        let pos = history.len() - 1;
        if pos >= capacity {
            break StopReason::ContextFull;
        }
        // The first decode step runs plainly (see above); recording starts with the second.
        if replay && decode_steps > 0 {
            match &mut recorded {
                Some((graph, step)) => {
                    be.set_step(step, &[next], pos)?;
                    be.replay(graph)?;
                    replayed_steps += 1;
                }
                None => match record_step(model, &mut cache, probes, next, pos) {
                    Ok((graph, step, out)) => {
                        be.replay(&graph)?;
                        replayed_steps += 1;
                        logits = out;
                        recorded = Some((graph, step));
                    }
                    Err(e) => {
                        // Recording is an optimization: fall back to plain steps, and say why.
                        crate::info!("note: decode steps are not replayed as a graph ({e})");
                        graph_failure = Some(e.to_string());
                        replay = false;
                        match model.forward(&[next], pos, &mut cache, probes, Logits::Last) {
                            Err(Error::Interrupted(_)) => break StopReason::Interrupted,
                            out => logits = out?,
                        }
                    }
                },
            }
        } else {
            // Ctrl-C inside a step ends the generation with what it has, like Ctrl-C between steps.
            match model.forward(&[next], pos, &mut cache, probes, Logits::Last) {
                Err(Error::Interrupted(_)) => break StopReason::Interrupted,
                out => logits = out?,
            }
        }
        decode_steps += 1;
        next = choose(&logits, &history)?;
    };
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        generated_ids: generated,
        stop,
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
        decode_steps,
        replayed_steps,
        graph_failure,
    })
}

/// Records one decode step (token `id` at `pos`) without running it; returns the recording, the
/// fixed step whose staging feeds it, and the logits tensor every replay writes.
fn record_step<B: Backend>(
    model: &Model<B>,
    cache: &mut B::Cache,
    probes: &mut Probes<B>,
    id: u32,
    pos: usize,
) -> Result<(B::Graph, B::Step, B::Tensor)> {
    let be = &model.backend;
    let mut step = be.fixed_step(1)?;
    be.set_step(&mut step, &[id], pos)?;
    be.begin_capture()?;
    let out = be.upload_step(&step).and_then(|_| model.forward_step(&step, cache, probes, Logits::Last));
    let graph = be.end_capture();
    Ok((graph?, step, out?))
}
