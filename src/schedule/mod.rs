//! The scheduler: requests in, tokens out, many sequences per forward pass.
//!
//! Each [`Scheduler::step`] builds one step of the batched forward pass (see
//! [`Model::forward_batch`]): every running sequence that is decoding brings its one new token,
//! sequences still in their prompt bring a chunk of it (chunked prefill) under a budget of tokens
//! per step, and waiting requests are admitted while the budget, the sequence limit and the free
//! pages allow. After the pass each sequence that reached the end of what it had to feed samples
//! its next token with its own sampler and hands it to its own consumer; finished, stopped and
//! cancelled sequences give their pages back. When a sequence needs a page and none is free, the
//! most recently admitted other sequence is preempted: its pages are freed and it waits at the
//! front of the queue to be computed again from its prompt and what it already generated (its
//! consumer sees no token twice). Generation of one prompt ([`crate::generate::generate`]) is this
//! scheduler with one request.
//!
//! Decode steps are recorded (CUDA graphs) per batch size, rounded up to a bucket with rows padded
//! by a scratch page, when every sequence is decoding and its probes allow a recording; a
//! recording is kept for the set of sequences whose probes it holds.

pub mod pages;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::backend::{Backend, PAGE, SeqSpan, pages_for};
use crate::error::{Error, Result};
use crate::forward::{Logits, Model};
use crate::generate::{GenerateOptions, Generation, StopReason};
use crate::probe::Probes;
use crate::sample::Sampler;

pub use pages::PagePool;

/// A request's number in its scheduler.
pub type SeqId = u64;

/// Called with each new token; returns false to stop that sequence (its consumer went away).
pub type OnToken<'a> = Box<dyn FnMut(u32) -> Result<bool> + 'a>;

/// What a request brings: its tokens, how to generate, its probes (captures, edits, hooks in its
/// own positions), and who receives its tokens.
pub struct Request<'a, B: Backend> {
    pub ids: Vec<u32>,
    pub options: GenerateOptions,
    pub probes: Held<'a, Probes<B>>,
    pub on_token: OnToken<'a>,
}

impl<'a, B: Backend> Request<'a, B> {
    /// A request with no probes whose tokens go nowhere but its result.
    pub fn new(ids: Vec<u32>, options: GenerateOptions) -> Self {
        Request { ids, options, probes: Held::Owned(Probes::none()), on_token: Box::new(|_| Ok(true)) }
    }
}

/// A value the scheduler owns, or one it borrows from its caller for as long as it runs.
pub enum Held<'a, T> {
    Owned(T),
    Borrowed(&'a mut T),
}

impl<T> Held<'_, T> {
    fn get(&mut self) -> &mut T {
        match self {
            Held::Owned(t) => t,
            Held::Borrowed(t) => t,
        }
    }
}

/// A finished request: what it generated and why it stopped, and its probes (their captures).
pub struct Finished<'a, B: Backend> {
    pub id: SeqId,
    pub generation: Generation,
    /// Times it was preempted and computed again.
    pub preemptions: usize,
    pub probes: Held<'a, Probes<B>>,
}

/// How a scheduler is sized.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Tokens per step, all sequences together (prompt chunks are cut to fit).
    pub token_budget: usize,
    /// Sequences running at once.
    pub max_seqs: usize,
    /// Record decode steps as graphs where the backend can.
    pub graphs: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { token_budget: 512, max_seqs: 64, graphs: true }
    }
}

/// Batch sizes a decode step is recorded for: a step of n sequences runs as the next one up.
const BUCKETS: [usize; 8] = [1, 2, 4, 8, 16, 32, 48, 64];

struct Seq<'a, B: Backend> {
    id: SeqId,
    prompt_len: usize,
    /// The prompt, then every generated token.
    history: Vec<u32>,
    /// Positions whose keys and values are in its pages.
    computed: usize,
    pages: Vec<u32>,
    /// Its positions may not pass this (the model's context, or prompt + max tokens).
    limit: usize,
    options: GenerateOptions,
    sampler: Sampler,
    probes: Held<'a, Probes<B>>,
    on_token: OnToken<'a>,
    admitted: Option<Instant>,
    first_token: Option<Instant>,
    prefill_seconds: f64,
    decode_steps: usize,
    replayed_steps: usize,
    preemptions: usize,
    cancelled: bool,
}

impl<B: Backend> Seq<'_, B> {
    fn generated(&self) -> usize {
        self.history.len() - self.prompt_len
    }

    /// Tokens not yet run: the rest of the prompt (or, after a preemption, of everything), or the
    /// last sampled token.
    fn pending(&self) -> usize {
        self.history.len() - self.computed
    }
}

struct Recorded<B: Backend> {
    graph: B::Graph,
    step: B::Step,
    logits: B::Tensor,
    /// The sequences whose probes the recording holds (empty: no sequence had any).
    key: Vec<SeqId>,
}

/// Counts since the scheduler was made.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SchedulerStats {
    pub steps: usize,
    pub tokens: usize,
    pub replayed_steps: usize,
    pub recordings: usize,
    pub preemptions: usize,
    /// Why a recording failed (then decode steps run plainly).
    pub graph_failure: Option<String>,
}

pub struct Scheduler<'a, B: Backend> {
    model: &'a Model<B>,
    cache: B::Cache,
    pool: PagePool,
    /// The last page of the cache: padding rows of a recorded step write there.
    scratch: u32,
    options: SchedulerOptions,
    waiting: VecDeque<Seq<'a, B>>,
    running: Vec<Seq<'a, B>>,
    finished: Vec<Finished<'a, B>>,
    next_id: SeqId,
    recorded: HashMap<usize, Recorded<B>>,
    /// Decode steps seen plainly per (bucket, key): the second one is recorded.
    seen: HashMap<(usize, Vec<SeqId>), usize>,
    /// Probes for padding rows.
    blanks: Vec<Probes<B>>,
    graphs_off: bool,
    pub stats: SchedulerStats,
}

impl<'a, B: Backend> Scheduler<'a, B> {
    /// A scheduler over a cache of `pages` pages of [`PAGE`] positions (one more is kept as
    /// scratch for padding rows).
    pub fn new(model: &'a Model<B>, pages: usize, options: SchedulerOptions) -> Result<Self> {
        if pages == 0 || options.token_budget == 0 || options.max_seqs == 0 {
            return Err(Error::Invalid("scheduler: no pages, no token budget or no sequences".into()));
        }
        let cache = model.new_cache((pages + 1) * PAGE)?;
        let graphs_off = !options.graphs || !model.backend.supports_graphs();
        Ok(Scheduler {
            model,
            cache,
            pool: PagePool::new(pages),
            scratch: pages as u32,
            options,
            waiting: VecDeque::new(),
            running: Vec::new(),
            finished: Vec::new(),
            next_id: 1,
            recorded: HashMap::new(),
            seen: HashMap::new(),
            blanks: Vec::new(),
            graphs_off,
            stats: SchedulerStats::default(),
        })
    }

    /// Pages (free, total) in the pool, the scratch page not counted.
    pub fn pages(&self) -> (usize, usize) {
        (self.pool.free(), self.pool.total())
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Queues a request; a request that can never run (no tokens, an id past the vocabulary, a
    /// prompt longer than the context or than the whole pool) is refused here with an error that
    /// says why, and nothing else is touched.
    pub fn add(&mut self, req: Request<'a, B>) -> Result<SeqId> {
        let c = &self.model.config;
        let n = req.ids.len();
        if n == 0 {
            return Err(Error::Invalid("the prompt is empty (no tokens to run)".into()));
        }
        if n > c.context_length {
            return Err(Error::Invalid(format!(
                "the prompt has {n} tokens but the model's context holds {}",
                c.context_length
            )));
        }
        let room = self.pool.total() * PAGE;
        if n > room {
            return Err(Error::Invalid(format!(
                "the prompt has {n} tokens but the KV cache holds {room} positions"
            )));
        }
        c.check_ids(&req.ids)?;
        let sampler = Sampler::new(req.options.sampling.clone())?;
        let id = self.next_id;
        self.next_id += 1;
        let limit = (n + req.options.max_tokens).min(c.context_length);
        self.waiting.push_back(Seq {
            id,
            prompt_len: n,
            history: req.ids,
            computed: 0,
            pages: Vec::new(),
            limit,
            options: req.options,
            sampler,
            probes: req.probes,
            on_token: req.on_token,
            admitted: None,
            first_token: None,
            prefill_seconds: 0.0,
            decode_steps: 0,
            replayed_steps: 0,
            preemptions: 0,
            cancelled: false,
        });
        Ok(id)
    }

    /// Stops a request: it finishes at the next step with [`StopReason::Cancelled`], its pages
    /// given back. False when no such request is waiting or running.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        match self.running.iter_mut().chain(self.waiting.iter_mut()).find(|s| s.id == id) {
            Some(s) => {
                s.cancelled = true;
                true
            }
            None => false,
        }
    }

    /// The requests finished since the last call.
    pub fn take_finished(&mut self) -> Vec<Finished<'a, B>> {
        std::mem::take(&mut self.finished)
    }

    /// Runs steps until every request has finished; returns them in the order they finished.
    pub fn run(&mut self) -> Result<Vec<Finished<'a, B>>> {
        while !self.is_idle() {
            self.step()?;
        }
        Ok(self.take_finished())
    }

    /// One forward pass over the running sequences and the newly admitted ones. Returns the
    /// number of tokens it ran (0 when there was nothing to do).
    pub fn step(&mut self) -> Result<usize> {
        self.retire_cancelled()?;
        let plan = self.plan()?;
        if plan.is_empty() {
            return Ok(0);
        }
        let tokens: usize = plan.iter().map(|&(_, n)| n).sum();
        let replayable = is_decode(&plan, &self.running)
            && !self.graphs_off
            && plan.len() <= *BUCKETS.last().unwrap()
            && plan.iter().all(|&(i, _)| self.running[i].probes.get().replayable());
        let out = if replayable { self.run_recorded(&plan) } else { self.run_plain(&plan) };
        let rows = match out {
            Err(Error::Interrupted(why)) => {
                // Ctrl-C inside the pass: every running sequence ends with what it has.
                crate::info!("note: {why}");
                for i in (0..self.running.len()).rev() {
                    let s = self.running.remove(i);
                    self.retire(s, StopReason::Interrupted)?;
                }
                return Ok(tokens);
            }
            out => out?,
        };
        self.stats.steps += 1;
        self.stats.tokens += tokens;
        self.after(&plan, rows)?;
        Ok(tokens)
    }

    /// Which running sequences feed how many tokens this step, admitting waiting ones and
    /// preempting where pages run out. Indices into `running`, in order.
    fn plan(&mut self) -> Result<Vec<(usize, usize)>> {
        let mut budget = self.options.token_budget;
        let mut plan: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if budget == 0 {
                break;
            }
            let n = self.running[i].pending().min(budget);
            if !self.grow(i, n)? {
                // This sequence was preempted itself (nothing else to take pages from).
                continue;
            }
            budget -= n;
            plan.push((i, n));
            i += 1;
        }
        // Admission: new sequences take only what is free, never another's pages.
        while budget > 0 && self.running.len() < self.options.max_seqs {
            let Some(front) = self.waiting.front() else { break };
            let n = front.pending().min(budget);
            let need = pages_for(front.computed + n).saturating_sub(front.pages.len());
            if need > self.pool.free() {
                break;
            }
            let mut s = self.waiting.pop_front().expect("front");
            s.pages.extend(self.pool.take(need).expect("checked"));
            s.admitted.get_or_insert_with(Instant::now);
            self.running.push(s);
            plan.push((self.running.len() - 1, n));
            budget -= n;
        }
        Ok(plan)
    }

    /// Makes room in sequence i's pages for n more positions, preempting the most recently
    /// admitted other sequences while none is free. False when i itself had to give way.
    fn grow(&mut self, i: usize, n: usize) -> Result<bool> {
        loop {
            let s = &self.running[i];
            let need = pages_for(s.computed + n).saturating_sub(s.pages.len());
            if need <= self.pool.free() {
                let pages = self.pool.take(need).expect("checked");
                self.running[i].pages.extend(pages);
                return Ok(true);
            }
            // The newest other sequence gives way; if i is the newest, i does.
            let victim = self.running.len() - 1;
            self.preempt(victim)?;
            if victim == i {
                return Ok(false);
            }
        }
    }

    /// Frees a running sequence's pages and puts it at the front of the queue, to be computed
    /// again from everything it has (its consumer already has its tokens).
    fn preempt(&mut self, i: usize) -> Result<()> {
        let mut s = self.running.remove(i);
        self.pool.give_back(&s.pages)?;
        s.pages.clear();
        s.computed = 0;
        s.preemptions += 1;
        self.stats.preemptions += 1;
        if self.running.is_empty() && pages_for(s.history.len() + 1) > self.pool.total() {
            // Alone and still too long for the whole pool: it cannot go on.
            return self.retire(s, StopReason::ContextFull);
        }
        self.waiting.push_front(s);
        Ok(())
    }

    fn spans(&self, plan: &[(usize, usize)]) -> (Vec<u32>, Vec<SeqSpan>) {
        let mut ids = Vec::new();
        let mut spans = Vec::with_capacity(plan.len());
        for &(i, n) in plan {
            let s = &self.running[i];
            spans.push(SeqSpan { row: ids.len(), len: n, start: s.computed, pages: s.pages.clone() });
            ids.extend_from_slice(&s.history[s.computed..s.computed + n]);
        }
        (ids, spans)
    }

    /// A plain forward pass; returns each planned sequence's last logits row (None where its
    /// chunk did not reach the end of what it had to feed).
    fn run_plain(&mut self, plan: &[(usize, usize)]) -> Result<Vec<Option<B::Tensor>>> {
        let (ids, spans) = self.spans(plan);
        let be = &self.model.backend;
        let step = be.batch(&ids, &spans)?;
        let which = vec![Logits::Last; plan.len()];
        let out = {
            let mut probes = planned_probes(&mut self.running, plan);
            self.model.forward_batch(&step, &mut self.cache, &mut probes, &which)?
        };
        if is_decode(plan, &self.running) && !self.graphs_off {
            let key = self.key(plan);
            *self.seen.entry((bucket(plan.len()), key)).or_default() += 1;
        }
        let mut ends =
            plan.iter().map(|&(i, n)| self.running[i].computed + n == self.running[i].history.len());
        if plan.len() == 1 {
            // One sequence: its one row of logits is the whole tensor.
            return Ok(vec![ends.next().and_then(|end| end.then_some(out.logits))]);
        }
        ends.zip(&out.rows)
            .map(|(end, r)| if end { be.gather_rows(&out.logits, &[r.start]).map(Some) } else { Ok(None) })
            .collect()
    }

    /// The sequences whose probes a recording of this plan would hold.
    fn key(&mut self, plan: &[(usize, usize)]) -> Vec<SeqId> {
        let plain = plan.iter().all(|&(i, _)| self.running[i].probes.get().is_empty());
        if plain { Vec::new() } else { plan.iter().map(|&(i, _)| self.running[i].id).collect() }
    }

    /// A decode step through a recording of its bucket: replayed when one for these sequences
    /// exists, recorded when this bucket was seen plainly before (what a device does once must
    /// not happen inside a recording), plain otherwise.
    fn run_recorded(&mut self, plan: &[(usize, usize)]) -> Result<Vec<Option<B::Tensor>>> {
        let b = bucket(plan.len());
        let key = self.key(plan);
        let have = self.recorded.get(&b).is_some_and(|r| r.key == key);
        if !have && self.seen.get(&(b, key.clone())).copied().unwrap_or(0) == 0 {
            return self.run_plain(plan);
        }
        let be = &self.model.backend;
        let (mut ids, mut spans) = self.spans(plan);
        for r in plan.len()..b {
            ids.push(0);
            spans.push(SeqSpan { row: r, len: 1, start: 0, pages: vec![self.scratch] });
        }
        if !have {
            let max_pages = pages_for(self.model.config.context_length).min(self.pool.total()).max(1);
            while self.blanks.len() < b {
                self.blanks.push(Probes::none());
            }
            let recorded = (|| -> Result<Recorded<B>> {
                let mut step = be.fixed_step(b, max_pages)?;
                be.set_step(&mut step, &ids, &spans)?;
                be.begin_capture()?;
                let out = {
                    let mut probes = planned_probes(&mut self.running, plan);
                    probes.extend(self.blanks.iter_mut().take(b - plan.len()));
                    be.upload_step(&step).and_then(|_| {
                        self.model.forward_batch(&step, &mut self.cache, &mut probes, &vec![Logits::Last; b])
                    })
                };
                let graph = be.end_capture();
                Ok(Recorded { graph: graph?, step, logits: out?.logits, key: key.clone() })
            })();
            match recorded {
                Ok(r) => {
                    self.stats.recordings += 1;
                    self.recorded.insert(b, r);
                }
                Err(e) => {
                    // Recording is an optimization: fall back to plain steps, and say why.
                    crate::info!("note: decode steps are not replayed as a graph ({e})");
                    self.stats.graph_failure = Some(e.to_string());
                    self.graphs_off = true;
                    return self.run_plain(plan);
                }
            }
        } else {
            let r = self.recorded.get_mut(&b).expect("have");
            be.set_step(&mut r.step, &ids, &spans)?;
        }
        let r = &self.recorded[&b];
        be.replay(&r.graph)?;
        self.stats.replayed_steps += 1;
        for &(i, _) in plan {
            self.running[i].replayed_steps += 1;
        }
        (0..plan.len()).map(|k| be.gather_rows(&r.logits, &[k]).map(Some)).collect()
    }

    /// After a pass: advances each sequence, samples where it reached its end, streams the token,
    /// and retires what finished.
    fn after(&mut self, plan: &[(usize, usize)], rows: Vec<Option<B::Tensor>>) -> Result<()> {
        let be = &self.model.backend;
        let eos = &self.model.config.eos_token_ids;
        let mut done: Vec<(usize, StopReason)> = Vec::new();
        for (&(i, n), row) in plan.iter().zip(rows) {
            let s = &mut self.running[i];
            let was_decode = s.pending() == 1 && s.generated() > 0;
            s.computed += n;
            if was_decode {
                s.decode_steps += 1;
            }
            let Some(logits) = row else { continue };
            if s.options.max_tokens == 0 {
                // The prompt alone (its probes still saw it): no token is chosen.
                done.push((i, StopReason::MaxTokens));
                continue;
            }
            let u = s.sampler.next_uniform();
            let next = match be.sample(&logits, s.sampler.params(), u)? {
                Some(id) => id,
                None => s.sampler.pick_with(&be.download(&logits)?, &s.history, u)?,
            };
            if s.first_token.is_none() {
                let now = Instant::now();
                s.prefill_seconds = s.admitted.map_or(0.0, |t| (now - t).as_secs_f64());
                s.first_token = Some(now);
            }
            s.history.push(next);
            let go_on = (s.on_token)(next)?;
            let stop = if s.options.stop_at_eos && eos.contains(&next) {
                Some(StopReason::Eos)
            } else if !go_on {
                Some(StopReason::Interrupted)
            } else if s.generated() >= s.options.max_tokens {
                Some(StopReason::MaxTokens)
            } else if s.history.len() > s.limit || pages_for(s.history.len()) > self.pool.total() {
                // The next token's position is past its context, or past the whole pool.
                Some(StopReason::ContextFull)
            } else {
                None
            };
            if let Some(stop) = stop {
                done.push((i, stop));
            }
        }
        for &(i, stop) in done.iter().rev() {
            let s = self.running.remove(i);
            self.retire(s, stop)?;
        }
        Ok(())
    }

    fn retire_cancelled(&mut self) -> Result<()> {
        for i in (0..self.running.len()).rev() {
            if self.running[i].cancelled {
                let s = self.running.remove(i);
                self.retire(s, StopReason::Cancelled)?;
            }
        }
        let (gone, kept): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|s| s.cancelled);
        self.waiting = kept.into();
        for s in gone {
            self.retire(s, StopReason::Cancelled)?;
        }
        Ok(())
    }

    fn retire(&mut self, mut s: Seq<'a, B>, stop: StopReason) -> Result<()> {
        self.pool.give_back(&s.pages)?;
        s.pages.clear();
        self.recorded.retain(|_, r| !r.key.contains(&s.id));
        self.seen.retain(|(_, k), _| !k.contains(&s.id));
        let decode_seconds = s.first_token.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let generation = Generation {
            prompt_ids: s.history[..s.prompt_len].to_vec(),
            generated_ids: s.history[s.prompt_len..].to_vec(),
            stop,
            prefill_seconds: s.prefill_seconds,
            decode_seconds,
            decode_steps: s.decode_steps,
            replayed_steps: s.replayed_steps,
            graph_failure: self.stats.graph_failure.clone(),
        };
        self.finished.push(Finished { id: s.id, generation, preemptions: s.preemptions, probes: s.probes });
        Ok(())
    }
}

/// The probes of the planned sequences, in the step's order (`plan`'s indices ascend).
fn planned_probes<'s, 'a, B: Backend>(
    running: &'s mut [Seq<'a, B>],
    plan: &[(usize, usize)],
) -> Vec<&'s mut Probes<B>> {
    let mut want = plan.iter().map(|&(i, _)| i).peekable();
    let mut probes = Vec::with_capacity(plan.len());
    for (i, s) in running.iter_mut().enumerate() {
        if want.next_if_eq(&i).is_some() {
            probes.push(s.probes.get());
        }
    }
    probes
}

/// The bucket a decode step of n sequences runs as.
fn bucket(n: usize) -> usize {
    BUCKETS.iter().copied().find(|&b| b >= n).unwrap_or(n)
}

/// Whether every planned sequence feeds exactly its one last token: a step of the shape a
/// recording replays.
fn is_decode<B: Backend>(plan: &[(usize, usize)], running: &[Seq<'_, B>]) -> bool {
    plan.iter().all(|&(i, n)| n == 1 && running[i].pending() == 1)
}
