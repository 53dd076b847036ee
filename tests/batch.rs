//! Sequences as a dimension: a step of several sequences (prompt chunks and decode rows mixed,
//! pages shuffled) gives each sequence what it would get alone, with its own probes; and the
//! scheduler, under seeded random arrivals with too few pages and cancellations, finishes every
//! request, returns every page, and matches solo runs. One test body, run on the CPU and on the
//! CUDA backend (the mock device in every run; the GPU too where there is one).

#[macro_use]
mod common;

use common::tiny::{Lcg, Tiny};
use scalpel::backend::{Backend, SeqSpan, pages_for};
use scalpel::forward::{Logits, Model};
use scalpel::generate::{GenerateOptions, StopReason, generate};
use scalpel::model::ModelFiles;
use scalpel::probe::{Edit, Point, Positions, Probes};
use scalpel::sample::SamplingParams;
use scalpel::schedule::{Held, Request, Scheduler, SchedulerOptions};

/// A tiny model with head dim 64 (so prompt chunks of 16 rows or more take the tensor-core kernel
/// on the CUDA backend) and room for long sequences.
fn tiny<B: Backend>(backend: B) -> (tempfile::TempDir, Model<B>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    let t = Tiny { hidden: 128, heads: 2, kv_heads: 1, context: 256, ..Tiny::default() };
    std::fs::write(&p, t.gguf()).unwrap();
    let files = ModelFiles::open(Some(p.to_str().unwrap())).unwrap();
    let model = Model::load(backend, &files).unwrap();
    (dir, model)
}

/// How close a sequence in a batch must be to itself alone: the CPU's products run over more
/// rows in a batch (another kernel, another summation order: f32 rounding only); the CUDA
/// backend rounds to bf16 between ops, so one summation-order difference can move a value by a
/// bf16 step.
fn tolerance<B: Backend>(be: &B) -> f64 {
    if be.name() == "cpu" { 1e-5 } else { 2e-2 }
}

fn prompt(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut g = Lcg(seed | 1);
    (0..n).map(|_| ((g.next_f32() + 1.0) * 0.5 * (vocab - 1) as f32) as u32 % vocab as u32).collect()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        stop_at_eos: false,
    }
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    common::rel_l2(a, b)
}

/// Logits of one sequence run alone over `ids` at 0.., all rows.
fn alone<B: Backend>(model: &Model<B>, ids: &[u32], probes: &mut Probes<B>) -> Vec<f32> {
    let mut cache = model.new_cache(ids.len()).unwrap();
    let out = model.forward(ids, 0, &mut cache, probes, Logits::All).unwrap();
    model.backend.download(&out).unwrap()
}

/// A step of four sequences — a first prompt chunk, the rest of a prompt after one chunk, a
/// decode row, a prompt of one token — in shuffled pages, against each alone; the logits of
/// every row (Logits::All) and of the last (Logits::Last).
fn a_batch_gives_each_sequence_what_it_gets_alone<B: Backend>(be: B) {
    let (_d, model) = tiny(be);
    let be = &model.backend;
    let v = model.config.vocab_size;
    let full: Vec<Vec<u32>> =
        [40, 37, 21, 1].iter().enumerate().map(|(i, &n)| prompt(10 + i as u64, n, v)).collect();
    // What the pages already hold before the step: sequence 1 its first 17 positions, sequence
    // 2 all but its last; 0 and 3 start fresh.
    let done = [0usize, 17, 20, 0];
    let mut pool: Vec<u32> = (0..24).rev().collect();
    pool.swap(3, 17);
    pool.swap(5, 11);
    let pages: Vec<Vec<u32>> = full.iter().map(|p| pool.drain(..pages_for(p.len())).collect()).collect();
    let mut cache = model.new_cache(24 * scalpel::backend::PAGE).unwrap();
    let tol = tolerance(be);
    for (i, &d) in done.iter().enumerate() {
        if d > 0 {
            let span = SeqSpan { row: 0, len: d, start: 0, pages: pages[i].clone() };
            let step = be.batch(&full[i][..d], &[span]).unwrap();
            model.forward_batch(&step, &mut cache, &mut [&mut Probes::none()], &[Logits::Last]).unwrap();
        }
    }
    let mut ids = Vec::new();
    let mut spans = Vec::new();
    for (i, &d) in done.iter().enumerate() {
        spans.push(SeqSpan { row: ids.len(), len: full[i].len() - d, start: d, pages: pages[i].clone() });
        ids.extend_from_slice(&full[i][d..]);
    }
    let step = be.batch(&ids, &spans).unwrap();
    let mut p: Vec<Probes<B>> = (0..4).map(|_| Probes::none()).collect();
    let mut refs: Vec<&mut Probes<B>> = p.iter_mut().collect();
    let which = [Logits::All, Logits::Last, Logits::All, Logits::Last];
    let out = model.forward_batch(&step, &mut cache, &mut refs, &which).unwrap();
    let got = be.download(&out.logits).unwrap();
    let mut worst = 0f64;
    for (i, s) in spans.iter().enumerate() {
        let solo = alone(&model, &full[i], &mut Probes::none());
        let rows = out.rows[i].clone();
        let want_rows = match which[i] {
            Logits::All => s.start..s.end(),
            Logits::Last => s.end() - 1..s.end(),
        };
        assert_eq!(rows.len(), want_rows.len(), "sequence {i}: rows of logits");
        for (r, w) in rows.zip(want_rows) {
            let e = rel(&got[r * v..(r + 1) * v], &solo[w * v..(w + 1) * v]);
            worst = worst.max(e);
            assert!(
                e <= tol,
                "sequence {i} position {w}: relative error {e:e} > {tol:e} against itself alone"
            );
        }
    }
    eprintln!("{}: worst row against the sequence alone {worst:.2e}", be.name());
}

/// Captures and edits belong to one sequence: a steered, an ablated and a plain sequence with the
/// same prompt in one step each get exactly what they get alone, and the captures come back per
/// sequence with that sequence's positions.
fn each_sequence_has_its_own_probes<B: Backend>(be: B) {
    let (_d, model) = tiny(be);
    let be = &model.backend;
    let (v, d) = (model.config.vocab_size, model.config.hidden_size);
    let ids = prompt(3, 19, v);
    let dir = Lcg(77).vec(d, 1.0);
    let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = dir.iter().map(|x| x / norm).collect();
    let probes_for = |kind: usize| -> Probes<B> {
        let mut p = Probes::capturing([Point::ResidPost(1)]);
        match kind {
            0 => p
                .edit(
                    Point::ResidPost(0),
                    Edit::Add {
                        vector: be.upload(&dir, &[d]).unwrap(),
                        scale: 4.0,
                        positions: Positions::All,
                    },
                )
                .unwrap(),
            1 => p
                .edit(
                    Point::ResidMid(1),
                    Edit::Ablate {
                        unit: be.upload(&unit, &[d]).unwrap(),
                        positions: Positions::Only(vec![2, 5, 18]),
                    },
                )
                .unwrap(),
            _ => {}
        }
        p
    };
    let mut solo: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    for kind in 0..3 {
        let mut p = probes_for(kind);
        let logits = alone(&model, &ids, &mut p);
        solo.push((logits, p.take_captured()[&Point::ResidPost(1)][0].data.clone()));
    }
    assert!(
        rel(&solo[0].0, &solo[2].0) > 1e-2,
        "the steering must change the logits for the test to mean anything"
    );
    assert!(rel(&solo[1].0, &solo[2].0) > 1e-6, "the ablation must change the logits");

    let n = ids.len();
    let pages = pages_for(n);
    let mut cache = model.new_cache(3 * pages * scalpel::backend::PAGE).unwrap();
    let spans: Vec<SeqSpan> = (0..3)
        .map(|i| SeqSpan {
            row: i * n,
            len: n,
            start: 0,
            pages: (0..pages as u32).map(|p| p * 3 + i as u32).collect(),
        })
        .collect();
    let all: Vec<u32> = (0..3).flat_map(|_| ids.iter().copied()).collect();
    let step = be.batch(&all, &spans).unwrap();
    let mut p: Vec<Probes<B>> = (0..3).map(probes_for).collect();
    let mut refs: Vec<&mut Probes<B>> = p.iter_mut().collect();
    let out = model.forward_batch(&step, &mut cache, &mut refs, &[Logits::All; 3]).unwrap();
    let got = be.download(&out.logits).unwrap();
    let tol = tolerance(be);
    for (i, (logits, resid)) in solo.iter().enumerate() {
        let r = out.rows[i].clone();
        let e = rel(&got[r.start * v..r.end * v], logits);
        assert!(e <= tol, "sequence {i}: logits {e:e} from itself alone");
        let caps = p[i].take_captured();
        let c = &caps[&Point::ResidPost(1)];
        assert_eq!(
            (c.len(), c[0].start, c[0].shape.clone()),
            (1, 0, vec![n, d]),
            "sequence {i}: its own capture"
        );
        let e = rel(&c[0].data, resid);
        assert!(e <= tol, "sequence {i}: captured resid_post {e:e} from itself alone");
    }
}

/// A hook changes one sequence's values at a point the CUDA backend holds in bf16 (the MLP's
/// activations): the values come back as f32 and go into that sequence's rows only.
fn a_hook_edits_only_its_own_sequence<B: Backend>(be: B) {
    let (_d, model) = tiny(be);
    let be = &model.backend;
    let v = model.config.vocab_size;
    let (a, b) = (prompt(41, 13, v), prompt(42, 9, v));
    let hooked = || {
        let mut p = Probes::none();
        p.hook(
            Point::MlpPost(0),
            Box::new(|_, _, _, x: &mut [f32]| {
                x.iter_mut().for_each(|x| *x *= -2.0);
                Ok(true)
            }),
        );
        p
    };
    let (solo_a, solo_b) = (alone(&model, &a, &mut hooked()), alone(&model, &b, &mut Probes::none()));
    assert!(rel(&solo_a, &alone(&model, &a, &mut Probes::none())) > 1e-2, "the hook must matter");
    let pa = pages_for(a.len());
    let spans = [
        SeqSpan { row: 0, len: a.len(), start: 0, pages: (0..pa as u32).collect() },
        SeqSpan {
            row: a.len(),
            len: b.len(),
            start: 0,
            pages: (pa as u32..(pa + pages_for(b.len())) as u32).collect(),
        },
    ];
    let mut cache = model.new_cache((pa + pages_for(b.len())) * scalpel::backend::PAGE).unwrap();
    let step = be.batch(&[a.clone(), b.clone()].concat(), &spans).unwrap();
    let (mut ha, mut hb) = (hooked(), Probes::none());
    let out = model.forward_batch(&step, &mut cache, &mut [&mut ha, &mut hb], &[Logits::All; 2]).unwrap();
    let got = be.download(&out.logits).unwrap();
    let tol = tolerance(be);
    for (i, want) in [solo_a, solo_b].iter().enumerate() {
        let r = out.rows[i].clone();
        let e = rel(&got[r.start * v..r.end * v], want);
        assert!(e <= tol, "sequence {i}: {e:e} from itself alone");
    }
}

/// Requests arrive at seeded random steps into a pool too small for all of them, with a small
/// token budget (prompts are cut into chunks); two are cancelled, one mid-prefill and one
/// mid-decode. Every request finishes or is cancelled, preemption happens, every page comes back,
/// and each finished request generated what it generates alone.
fn the_scheduler_finishes_everything_and_leaks_nothing<B: Backend>(be: B) {
    let (_d, model) = tiny(be);
    let v = model.config.vocab_size;
    let mut g = Lcg(2026);
    let reqs: Vec<(Vec<u32>, usize)> = (0..9)
        .map(|i| {
            let n = 1 + ((g.next_f32() + 1.0) * 20.0) as usize;
            let m = 1 + ((g.next_f32() + 1.0) * 12.0) as usize;
            (prompt(100 + i, n, v), m)
        })
        .collect();
    let solo: Vec<Vec<u32>> = reqs
        .iter()
        .map(|(ids, m)| {
            generate(&model, ids, &greedy(*m), &mut Probes::none(), |_| Ok(true)).unwrap().generated_ids
        })
        .collect();
    let streamed: Vec<std::sync::Mutex<Vec<u32>>> = reqs.iter().map(|_| Default::default()).collect();
    let options = SchedulerOptions { token_budget: 24, max_seqs: 6, graphs: true };
    let mut sched = Scheduler::new(&model, 5, options).unwrap();
    let mut ids_of = Vec::new();
    let mut next = 0;
    let mut steps = 0;
    let (mut cancel_prefill, mut cancel_decode) = (None, None);
    while next < reqs.len() || !sched.is_idle() {
        // Arrivals in bursts: up to three at a step.
        for _ in 0..3 {
            if next < reqs.len() && (g.next_f32() > -0.3 || sched.is_idle()) {
                let (ids, m) = &reqs[next];
                let sink = &streamed[next];
                let r = Request {
                    ids: ids.clone(),
                    options: greedy(*m),
                    probes: Held::Owned(Probes::none()),
                    on_token: Box::new(move |t| {
                        sink.lock().unwrap().push(t);
                        Ok(true)
                    }),
                };
                ids_of.push(sched.add(r).unwrap());
                next += 1;
            }
        }
        // Cancel the request with the longest prompt while it is still in its prompt, and the
        // third one once it has generated two tokens.
        if cancel_prefill.is_none() && next == reqs.len() {
            let longest = (0..reqs.len()).max_by_key(|&i| reqs[i].0.len()).unwrap();
            if streamed[longest].lock().unwrap().is_empty() && sched.cancel(ids_of[longest]) {
                cancel_prefill = Some(longest);
            }
        }
        if cancel_decode.is_none()
            && next > 2
            && streamed[2].lock().unwrap().len() >= 2
            && sched.cancel(ids_of[2])
        {
            cancel_decode = Some(2);
        }
        sched.step().unwrap();
        steps += 1;
        assert!(steps < 10_000, "the scheduler stopped making progress");
    }
    let done = sched.take_finished();
    assert_eq!(done.len(), reqs.len(), "every request finishes or is cancelled");
    assert_eq!(sched.pages(), (5, 5), "every page is back in the pool");
    assert!(sched.stats.preemptions > 0, "the pool was small enough to preempt (the test needs it)");
    let cancelled: Vec<usize> = [cancel_prefill, cancel_decode].into_iter().flatten().collect();
    assert_eq!(cancelled.len(), 2, "one request cancelled in its prompt, one while decoding");
    for f in &done {
        let i = ids_of.iter().position(|&id| id == f.id).unwrap();
        let got = &f.generation.generated_ids;
        assert_eq!(*got, *streamed[i].lock().unwrap(), "request {i}: streamed what it returned, once each");
        if cancelled.contains(&i) {
            assert_eq!(f.generation.stop, StopReason::Cancelled, "request {i}");
            assert!(solo[i].starts_with(got), "request {i}: what it had before the cancel is right");
        } else {
            assert_eq!(f.generation.stop, StopReason::MaxTokens, "request {i}");
            assert_eq!(
                *got, solo[i],
                "request {i} (preempted {} times): tokens differ from alone",
                f.preemptions
            );
        }
    }
    eprintln!(
        "{}: {steps} steps, {} preemptions, {} decode steps replayed, {} recordings",
        model.backend.name(),
        sched.stats.preemptions,
        sched.stats.replayed_steps,
        sched.stats.recordings
    );
}

/// A request that can never run is refused by name when it is added; the others run as before.
fn bad_requests_are_refused_and_the_others_run<B: Backend>(be: B) {
    let (_d, model) = tiny(be);
    let v = model.config.vocab_size;
    let mut sched = Scheduler::new(&model, 8, SchedulerOptions::default()).unwrap();
    let good = prompt(5, 9, v);
    let id = sched.add(Request::new(good.clone(), greedy(4))).unwrap();
    let empty = sched.add(Request::new(Vec::new(), greedy(4))).expect_err("an empty prompt").to_string();
    assert!(empty.contains("empty"), "{empty}");
    let past = sched
        .add(Request::new(vec![1, v as u32 + 5], greedy(4)))
        .expect_err("an id past the vocabulary")
        .to_string();
    assert!(past.contains(&(v + 5).to_string()), "{past}");
    let long = sched.add(Request::new(prompt(6, 200, v), greedy(4))).expect_err("past the pool").to_string();
    assert!(long.contains("200"), "{long}");
    let done = sched.run().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, id);
    let solo = generate(&model, &good, &greedy(4), &mut Probes::none(), |_| Ok(true)).unwrap();
    assert_eq!(done[0].generation.generated_ids, solo.generated_ids);
}

on_every_device!(
    seed = 9;
    a_batch_gives_each_sequence_what_it_gets_alone,
    each_sequence_has_its_own_probes,
    a_hook_edits_only_its_own_sequence,
    the_scheduler_finishes_everything_and_leaks_nothing,
    bad_requests_are_refused_and_the_others_run,
);
