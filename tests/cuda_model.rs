//! The whole model on the CUDA backend — on the mock device in every `cargo test`, on the GPU in
//! scripts/gpu_check.sh or wherever one is present — against transformers' goldens and the CPU
//! reference: embed, every residual stream, every attention row (recomputed from the fused
//! kernel's log-sum-exp) and the logits at bf16 tolerances; the greedy tokens; every probe point;
//! prefill through the tensor-core kernel then decode, with and without graph replay; add,
//! replace and ablate; device sampling against the host rule; and the microscope commands.
//!
//! Tolerances, per position (relative L2 of a row), and why: the device stores weights and the
//! KV cache in bf16 (8 significant bits, 2^-9 relative rounding) and rounds the input of every
//! matrix product to bf16, while the residual stream and every sum stay f32. A product's relative
//! error is then ~2^-9 times its condition (|W||x| / |Wx|), so it stays near 3e-3 where a row is
//! not a cancellation and grows where it is. Measured on the mock (worst rows against
//! transformers over the golden prompts, printed by every run): SmolLM2 residual 2.3e-2,
//! attention 5.1e-2, logits 4.6e-2; gemma-3-270m 1.3e-2 / 2.3e-2 / 8.4e-3 on its prompts, but
//! 9.6e-2 on one row of the window-8 golden: there layer 5's GeGLU output at position 18 is a
//! near-cancellation (norm 6, against ~100 elsewhere), which Gemma's post-feed-forward RMSNorm
//! scales back up to full size, error included (its attention row in layer 6 then differs by
//! 1.7e-1); the next layers bring it back under 2e-2. The limits leave about 2x room over those
//! figures. Greedy tokens must equal transformers' except
//! at a step where the reference's top two logits are within TIE of each other (a near-tie bf16
//! may flip; the run prints each such step and its margin).

mod common;
#[path = "../benches/common/shapes.rs"]
mod shapes;

use std::sync::OnceLock;

use scalpel::backend::cpu::Cpu;
use scalpel::backend::cuda::{Cuda, Schedule};
use scalpel::backend::{Backend, Device, SeqSpan};
use scalpel::forward::{Logits, Model};
use scalpel::generate::{GenerateOptions, generate};
use scalpel::model::ModelFiles;
use scalpel::probe::{Edit, Point, Positions, Probes};
use scalpel::sample::SamplingParams;

use common::devices::{self, Target};
use common::reference::{goldens, ids_of};
use common::{Golden, golden_dir, open_known, rel_l2, scalpel_env, stderr, stdout};

/// Residual stream and logits rows (first) and attention probability rows (second), per model;
/// see the header for the measurements behind them.
fn tolerances(arch: scalpel::model::config::Arch) -> (f64, f64) {
    match arch {
        scalpel::model::config::Arch::Llama => (5e-2, 1e-1),
        scalpel::model::config::Arch::Gemma3 => (2e-1, 3e-1),
    }
}
/// SmolLM2's, for the tests that run it alone.
const RESID_TOL: f64 = 5e-2;
const ATTN_TOL: f64 = 1e-1;
/// Greedy steps checked on the mock device (all of them on a GPU).
const MOCK_GREEDY_STEPS: usize = 8;
/// A greedy step whose top two reference logits are closer than this may flip under bf16: the
/// logits carry a few 1e-2 of relative error on values of a few units.
const TIE: f32 = 0.25;

struct Ctx {
    target_label: String,
    schedule: Option<Schedule>,
}

impl Ctx {
    fn open(&self) -> Cuda {
        Target { label: self.target_label.clone(), schedule: self.schedule }.open()
    }

    /// The --device value of the CLI for this target, and its environment.
    fn device_args(&self) -> (&'static str, Vec<(&'static str, String)>) {
        match self.schedule {
            Some(s) => ("mock", vec![("SCALPEL_MOCK_SCHEDULE", s.to_string())]),
            None => ("cuda", vec![]),
        }
    }
}

fn files(alias: &str) -> &'static ModelFiles {
    static SMOL: OnceLock<ModelFiles> = OnceLock::new();
    static GEMMA: OnceLock<ModelFiles> = OnceLock::new();
    let cell = if alias == "gemma3-270m" { &GEMMA } else { &SMOL };
    cell.get_or_init(|| open_known(alias))
}

fn cpu(alias: &str) -> &'static Model<Cpu> {
    static SMOL: OnceLock<Model<Cpu>> = OnceLock::new();
    static GEMMA: OnceLock<Model<Cpu>> = OnceLock::new();
    let cell = if alias == "gemma3-270m" { &GEMMA } else { &SMOL };
    cell.get_or_init(|| Model::load(Cpu, files(alias)).expect("the model loads on the CPU"))
}

fn greedy<B: Backend>(m: &Model<B>, ids: &[u32], n: usize, probes: &mut Probes<B>) -> Vec<u32> {
    let opts = GenerateOptions { max_tokens: n, sampling: SamplingParams::default(), stop_at_eos: false };
    generate(m, ids, &opts, probes, |_| Ok(true)).unwrap().generated_ids
}

/// Runs `f` with graph replay turned off (SCALPEL_CUDA_GRAPHS=0), for plain decode steps to
/// compare replays with.
fn without_graphs<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY of the env var: this binary runs its tests one at a time; the backend reads it per generation.
    unsafe { std::env::set_var("SCALPEL_CUDA_GRAPHS", "0") };
    let out = f();
    unsafe { std::env::remove_var("SCALPEL_CUDA_GRAPHS") };
    out
}

/// Rows of `got` against `want`; returns the worst relative error.
fn rows(what: &str, got: &[f32], want: &[f32], row: usize, tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (r, (a, b)) in got.chunks(row).zip(want.chunks(row)).enumerate() {
        let e = rel_l2(a, b);
        assert!(e <= tol, "{what}: row {r} relative error {e:e} > {tol:e}");
        worst = worst.max(e);
    }
    worst
}

/// One golden prompt: every captured point against transformers, then the greedy tokens
/// (`reference` is the CPU model of the same configuration, for near-ties).
fn check_golden(model: &Model<Cuda>, reference: &Model<Cpu>, g: &Golden) -> (f64, f64) {
    let c = &model.config;
    let prompt = g.meta("prompt").unwrap();
    let ids = ids_of(g);
    let t = ids.len();
    let (resid_tol, attn_tol) = tolerances(c.arch);
    let mut points = vec![Point::Embed, Point::Logits];
    for l in 0..c.n_layers {
        points.extend([Point::ResidPost(l), Point::AttnProbs(l)]);
    }
    let mut probes = Probes::capturing(points);
    let mut cache = model.new_cache(t).unwrap();
    model.forward(&ids, 0, &mut cache, &mut probes, Logits::All).unwrap();
    let cap = probes.captured();
    let get = |p: Point| cap[&p][0].data.clone();
    rows(&format!("{prompt:?} embed"), &get(Point::Embed), &g.f32("embed").0, c.hidden_size, 1e-2);
    let (resid, _) = g.f32("resid_post");
    let (attn, _) = g.f32("attn_probs");
    let (mut worst_resid, mut worst_attn) = (0f64, 0f64);
    for l in 0..c.n_layers {
        let per = t * c.hidden_size;
        let what = format!("{prompt:?} blocks.{l}.resid_post");
        worst_resid = worst_resid.max(rows(
            &what,
            &get(Point::ResidPost(l)),
            &resid[l * per..(l + 1) * per],
            c.hidden_size,
            resid_tol,
        ));
        let per = c.n_heads * t * t;
        let what = format!("{prompt:?} blocks.{l}.attn_probs");
        worst_attn = worst_attn.max(rows(
            &what,
            &get(Point::AttnProbs(l)),
            &attn[l * per..(l + 1) * per],
            t,
            attn_tol,
        ));
    }
    let (logits, _) = g.f32("logits");
    let first: usize = g.meta("logits_first_position").unwrap().parse().unwrap();
    let worst_logits = rows(
        &format!("{prompt:?} logits"),
        &get(Point::Logits)[first * c.vocab_size..],
        &logits,
        c.vocab_size,
        resid_tol,
    );
    println!(
        "  {prompt:?}: worst row error vs transformers: resid_post {worst_resid:.2e}, attn_probs {worst_attn:.2e}, logits {worst_logits:.2e}"
    );
    // The mock device runs a decode step in about a second on 2 cores (every weight dequantized
    // by emulated GPU threads): it checks the first 8 steps (recorded, then replayed as a graph);
    // a GPU checks all of transformers' 32.
    let mut want: Vec<u32> = g.i64("greedy").iter().map(|&i| i as u32).collect();
    if model.backend.is_mock() {
        want.truncate(MOCK_GREEDY_STEPS);
    }
    let got = greedy(model, &ids, want.len(), &mut Probes::none());
    if got != want {
        // bf16 may flip a near-tie, and only that: on the same path up to the first difference,
        // the reference's top two logits at that step must be closer than TIE (and the
        // reference itself picks transformers' token there: a margin of at least 0).
        let margins = margins(reference, &ids, &want);
        let i = got.iter().zip(&want).position(|(a, b)| a != b).expect("different tokens");
        println!("    greedy differs at step {i}: a near-tie in the reference (margin {:.4})", margins[i]);
        assert!(
            (0.0..TIE).contains(&margins[i]),
            "greedy tokens of {prompt:?} vs transformers differ at step {i}, where the reference margin is {:.3}\n  got {got:?}\n want {want:?}",
            margins[i]
        );
    }
    (worst_resid, worst_logits)
}

/// Top-1 minus top-2 logit of the reference at each step of transformers' greedy path.
fn margins(m: &Model<Cpu>, ids: &[u32], path: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(ids.len() + path.len()).unwrap();
    let mut out = Vec::new();
    let mut logits = m.forward(ids, 0, &mut cache, &mut Probes::none(), Logits::Last).unwrap().data;
    for (i, &tok) in path.iter().enumerate() {
        let top = logits[tok as usize];
        let second = logits
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != tok as usize)
            .map(|(_, &x)| x)
            .fold(f32::MIN, f32::max);
        out.push(top - second);
        if i + 1 < path.len() {
            logits =
                m.forward(&[tok], ids.len() + i, &mut cache, &mut Probes::none(), Logits::Last).unwrap().data;
        }
    }
    out
}

fn smollm2_matches_transformers(c: &Ctx) {
    let model = Model::load(c.open(), files("smollm2-135m")).unwrap();
    for g in goldens(&golden_dir().join("smollm2"), "prompt") {
        check_golden(&model, cpu("smollm2-135m"), &g);
    }
}

fn gemma3_matches_transformers(c: &Ctx) {
    let model = Model::load(c.open(), files("gemma3-270m")).unwrap();
    for g in goldens(&golden_dir().join("gemma3"), "prompt") {
        check_golden(&model, cpu("gemma3-270m"), &g);
    }
    // A window shrunk to 8 on a 27-token prompt: the local layers drop keys in prefill (the
    // tensor-core kernel, 27 rows) and in decode.
    let g = &goldens(&golden_dir().join("gemma3"), "window")[0];
    let window: usize = g.meta("sliding_window").unwrap().parse().unwrap();
    let mut f = open_known("gemma3-270m");
    for l in f.config.layers.iter_mut().filter(|l| l.window.is_some()) {
        l.window = Some(window);
    }
    check_golden(&Model::load(c.open(), &f).unwrap(), &Model::load(Cpu, &f).unwrap(), g);
}

/// A prompt long enough for the tensor-core prefill kernel (≥ 16 rows; two 64-row tiles).
const LONG: &str = "In the beginning the village by the sea was small and quiet, and every morning the \
fishermen went out before dawn while the bakers lit their ovens and the children slept; by noon the \
harbour was loud with gulls, carts and the voices of people selling what the night had brought in. \
In the evening the lamps were lit one by one along the quay, and the old sailors told stories.";

/// Every probe point of a forward pass against the CPU reference, on the tensor-core path.
fn every_point_matches_the_cpu(c: &Ctx) {
    let alias = "smollm2-135m";
    let model = Model::load(c.open(), files(alias)).unwrap();
    let cpu = cpu(alias);
    let ids = files(alias).tokenizer.encode(LONG).unwrap();
    assert!(ids.len() > 64, "the prompt must fill more than one tile: {}", ids.len());
    let n = model.config.n_layers;
    let mut pg = Probes::capturing(Point::all(n));
    let mut pc = Probes::capturing(Point::all(n));
    let mut gc = model.new_cache(ids.len()).unwrap();
    let mut cc = cpu.new_cache(ids.len()).unwrap();
    model.forward(&ids, 0, &mut gc, &mut pg, Logits::All).unwrap();
    cpu.forward(&ids, 0, &mut cc, &mut pc, Logits::All).unwrap();
    let mut worst = Vec::new();
    for p in Point::all(n) {
        let (a, b) = (&pg.captured()[&p][0], &pc.captured()[&p][0]);
        assert_eq!(a.shape, b.shape, "{p}");
        // Per-head points compare each position's heads together, as attn_out compares their sum:
        // one small head's share alone can carry a larger relative bf16 error.
        let row = match p {
            Point::AttnZ(_) | Point::HeadOut(_) => a.shape[1..].iter().product(),
            _ => *a.shape.last().unwrap(),
        };
        let tol = if matches!(p, Point::AttnProbs(_)) { ATTN_TOL } else { RESID_TOL };
        worst.push((rows(&format!("{p} on the device vs the CPU"), &a.data, &b.data, row, tol), p));
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("  worst points: {:?}", &worst[..3]);
}

/// Prefill through the tensor-core kernel, then decode: recorded graph replays give exactly
/// the plain steps' tokens, and the decode logits follow the CPU's.
fn prefill_then_decode_with_and_without_graphs(c: &Ctx) {
    let alias = "smollm2-135m";
    let model = Model::load(c.open(), files(alias)).unwrap();
    let ids = files(alias).tokenizer.encode(LONG).unwrap();
    // Enough steps to record one and replay several (each costs about a second on the mock).
    let steps = if model.backend.is_mock() { 5 } else { 12 };
    assert!(model.backend.supports_graphs());
    let with = greedy(&model, &ids, steps, &mut Probes::none());
    let without = without_graphs(|| greedy(&model, &ids, steps, &mut Probes::none()));
    assert_eq!(with, without, "graph replay vs plain decode steps");
    assert_eq!(with, greedy(cpu(alias), &ids, steps, &mut Probes::none()), "device vs CPU greedy tokens");
    // Steering replays too: a zero-scale vector at every layer changes nothing.
    let d = model.config.hidden_size;
    let mut p = Probes::none();
    for l in 0..model.config.n_layers {
        let v = model.backend.upload(&vec![1.0; d], &[d]).unwrap();
        p.edit(Point::ResidPost(l), Edit::Add { vector: v, scale: 0.0, positions: Positions::All }).unwrap();
    }
    assert_eq!(greedy(&model, &ids, steps, &mut p), with, "zero steering through replayed graphs");
    // Decode logits step by step against the CPU's.
    let vocab = model.config.vocab_size;
    let (mut gc, mut cc) =
        (model.new_cache(ids.len() + 4).unwrap(), cpu(alias).new_cache(ids.len() + 4).unwrap());
    model.forward(&ids, 0, &mut gc, &mut Probes::none(), Logits::Last).unwrap();
    cpu(alias).forward(&ids, 0, &mut cc, &mut Probes::none(), Logits::Last).unwrap();
    for (i, &id) in with.iter().take(3).enumerate() {
        let pos = ids.len() + i;
        let g = model.forward(&[id], pos, &mut gc, &mut Probes::none(), Logits::Last).unwrap();
        let h = cpu(alias).forward(&[id], pos, &mut cc, &mut Probes::none(), Logits::Last).unwrap();
        rows(
            &format!("decode step at {pos}"),
            &model.backend.download(&g).unwrap(),
            &h.data,
            vocab,
            RESID_TOL,
        );
    }
    // Two replays queued back to back with no read between them: the second set_step must not
    // rewrite the staging the first, still queued, reads (decode in generate always reads back
    // between steps; this is the backend's own contract).
    let be = &model.backend;
    let (mut gc, mut cc) =
        (model.new_cache(ids.len() + 2).unwrap(), cpu(alias).new_cache(ids.len() + 2).unwrap());
    model.forward(&ids, 0, &mut gc, &mut Probes::none(), Logits::Last).unwrap();
    cpu(alias).forward(&ids, 0, &mut cc, &mut Probes::none(), Logits::Last).unwrap();
    let pos = ids.len();
    let mut step = be.fixed_step(1, be.cache_pages(&gc)).unwrap();
    be.set_step(&mut step, &[with[0]], &[SeqSpan::alone(1, pos)]).unwrap();
    be.begin_capture().unwrap();
    let out = be
        .upload_step(&step)
        .and_then(|_| model.forward_step(&step, &mut gc, &mut Probes::none(), Logits::Last));
    let graph = be.end_capture().unwrap();
    let out = out.unwrap();
    be.replay(&graph).unwrap();
    be.set_step(&mut step, &[with[1]], &[SeqSpan::alone(1, pos + 1)]).unwrap();
    be.replay(&graph).unwrap();
    cpu(alias).forward(&[with[0]], pos, &mut cc, &mut Probes::none(), Logits::Last).unwrap();
    let h = cpu(alias).forward(&[with[1]], pos + 1, &mut cc, &mut Probes::none(), Logits::Last).unwrap();
    rows("two replays queued back to back", &be.download(&out).unwrap(), &h.data, vocab, RESID_TOL);
}

/// Add, replace and ablate on the device do what they do on the CPU, at the positions asked.
fn edits_match_the_cpu(c: &Ctx) {
    let alias = "smollm2-135m";
    let model = Model::load(c.open(), files(alias)).unwrap();
    let cpu = cpu(alias);
    let ids =
        files(alias).tokenizer.encode("The capital of France is Paris, and the capital of Italy is").unwrap();
    let d = model.config.hidden_size;
    let v: Vec<f32> = (0..d).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 50.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let u: Vec<f32> = v.iter().map(|x| x / norm).collect();
    let point = Point::ResidPost(6);
    // The replacement is a real state of the model: the point's row at position 1 (a Patchscope's
    // kind of transplant), not noise the later layers would amplify.
    let mut donor_run = Probes::capturing([point]);
    cpu.forward(&ids, 0, &mut cpu.new_cache(ids.len()).unwrap(), &mut donor_run, Logits::Last).unwrap();
    let donor = donor_run.captured()[&point][0].data[d..2 * d].to_vec();
    // Each edit, on both backends, with the edited point captured.
    type Make<B> = fn(&B, &[f32], &[f32], &[f32]) -> Edit<<B as Backend>::Tensor>;
    fn add<B: Backend>(b: &B, v: &[f32], _: &[f32], _: &[f32]) -> Edit<B::Tensor> {
        Edit::Add {
            vector: b.upload(v, &[v.len()]).unwrap(),
            scale: 1.0,
            positions: Positions::Only(vec![2, 5]),
        }
    }
    fn replace<B: Backend>(b: &B, _: &[f32], _: &[f32], r: &[f32]) -> Edit<B::Tensor> {
        Edit::Replace { position: 4, row: b.upload(r, &[r.len()]).unwrap() }
    }
    fn ablate<B: Backend>(b: &B, _: &[f32], u: &[f32], _: &[f32]) -> Edit<B::Tensor> {
        Edit::Ablate { unit: b.upload(u, &[u.len()]).unwrap(), positions: Positions::All }
    }
    let edits: [(&str, Make<Cuda>, Make<Cpu>); 3] =
        [("add", add, add), ("replace", replace, replace), ("ablate", ablate, ablate)];
    let mut plain = Probes::capturing([Point::Logits]);
    let mut gcache = model.new_cache(ids.len()).unwrap();
    model.forward(&ids, 0, &mut gcache, &mut plain, Logits::All).unwrap();
    let plain_logits = plain.captured()[&Point::Logits][0].data.clone();
    for (name, g_edit, c_edit) in edits {
        let mut pg = Probes::capturing([point, Point::Logits]);
        pg.edit(point, g_edit(&model.backend, &v, &u, &donor)).unwrap();
        let mut pc = Probes::capturing([point, Point::Logits]);
        pc.edit(point, c_edit(&Cpu, &v, &u, &donor)).unwrap();
        let mut gc = model.new_cache(ids.len()).unwrap();
        let mut cc = cpu.new_cache(ids.len()).unwrap();
        model.forward(&ids, 0, &mut gc, &mut pg, Logits::All).unwrap();
        cpu.forward(&ids, 0, &mut cc, &mut pc, Logits::All).unwrap();
        let (a, b) = (&pg.captured()[&point][0].data, &pc.captured()[&point][0].data);
        rows(&format!("{name}: {point}"), a, b, d, RESID_TOL);
        let (la, lb) = (&pg.captured()[&Point::Logits][0].data, &pc.captured()[&Point::Logits][0].data);
        let vocab = model.config.vocab_size;
        rows(&format!("{name}: logits"), la, lb, vocab, RESID_TOL);
        // What each edit promises, on the device alone.
        match name {
            "add" => {
                // Positions before the first edited one are untouched (causality), bit for bit.
                assert_eq!(la[..2 * vocab], plain_logits[..2 * vocab], "add: logits before position 2");
                assert_ne!(
                    la[2 * vocab..3 * vocab],
                    plain_logits[2 * vocab..3 * vocab],
                    "add: position 2 moved"
                );
            }
            "replace" => assert_eq!(&a[4 * d..5 * d], &donor[..], "replace: the row is the donor's"),
            _ => {
                for row in a.chunks(d) {
                    let dot: f32 = row.iter().zip(&u).map(|(x, y)| x * y).sum();
                    let size = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                    assert!(dot.abs() <= 1e-4 * size, "ablate: projection {dot} on a row of norm {size}");
                }
            }
        }
    }
}

/// Device sampling follows the host's rule and seed: the same tokens as the CPU, barring a draw
/// on a boundary moved by bf16 logits.
fn device_sampling_matches_the_host_rule(c: &Ctx) {
    let alias = "smollm2-135m";
    let model = Model::load(c.open(), files(alias)).unwrap();
    let ids = files(alias).tokenizer.encode("The weather today is").unwrap();
    let opts = GenerateOptions {
        max_tokens: if model.backend.is_mock() { 4 } else { 8 },
        sampling: SamplingParams {
            temperature: 0.8,
            top_k: Some(50),
            top_p: Some(0.95),
            seed: 3,
            ..Default::default()
        },
        stop_at_eos: false,
    };
    let a = generate(&model, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap().generated_ids;
    let b = generate(cpu(alias), &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap().generated_ids;
    assert_eq!(a[0], b[0], "the first sampled token: device {a:?} vs CPU {b:?}");
    // And the device's own draws against the host rule on the device's logits, draw by draw.
    let mut cache = model.new_cache(ids.len()).unwrap();
    let logits = model.forward(&ids, 0, &mut cache, &mut Probes::none(), Logits::Last).unwrap();
    let host = model.backend.download(&logits).unwrap();
    for (i, u) in [0.01, 0.3, 0.62, 0.97].into_iter().enumerate() {
        let dev = model.backend.sample(&logits, &opts.sampling, u).unwrap().expect("device sampling");
        assert_eq!(dev, scalpel::sample::pick(&host, &opts.sampling, u).unwrap(), "draw {i} (u = {u})");
    }
}

/// The microscope commands through the CLI on this device.
fn microscope_commands(c: &Ctx) {
    let (device, env) = c.device_args();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--device", device]);
        let o = scalpel_env(&a, &env);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    let o = run(&["lens", "-p", "The capital of France is", "--json", "-q"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["layers"][29]["positions"][4]["top"][0]["token"], " Paris");
    let o = run(&[
        "attention",
        "-p",
        "the apple is green. what color is the apple?",
        "--find",
        "--query",
        "apple",
        "--key",
        "green",
        "--json",
        "-q",
    ]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["heads"][0]["score"].as_f64().unwrap() > 0.25, "{v}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    run(&[
        "trace",
        "-p",
        "Hello there",
        "-o",
        out.to_str().unwrap(),
        "--points",
        "blocks.*.attn_probs,logits",
        "-q",
    ]);
    let o = run(&["generate", "-p", "The capital of France is", "-n", "4", "--profile"]);
    // Products with the stored (packed) weights are the qmatvec kernel in decode.
    let err = stderr(&o);
    assert!((err.contains("qmatvec") || err.contains("matmul")) && err.contains("attention"), "{err}");
}

/// Random-weight models of three real shapes (SmolLM2-135M, gemma-3-270m, Llama-3.2-3B) made in
/// process, against the CPU with the same weights: every layer's residual stream and the logits
/// of a 40-token prefill (the tensor-core kernel), then three decode steps. Needs no model file,
/// so it is what the GPU machine's fast check runs. On the mock, Llama-3.2-3B keeps its layer
/// shapes but two layers and an 8192-token vocabulary (the CPU would need 12 GiB otherwise).
fn random_models_match_the_cpu(c: &Ctx) {
    let mut llama = shapes::llama_3_2_3b();
    if c.schedule.is_some() {
        llama.n_layers = 2;
        llama.layers.truncate(2);
        llama.vocab_size = 8192;
    }
    for (name, config) in [
        ("SmolLM2-135M", shapes::smollm2_135m()),
        ("gemma-3-270m", shapes::gemma_3_270m()),
        ("Llama-3.2-3B", llama),
    ] {
        let t0 = std::time::Instant::now();
        let dev = Model::random(c.open(), config.clone(), 7).unwrap();
        let cpu = Model::random(Cpu, config.clone(), 7).unwrap();
        let ids: Vec<u32> = (0..40).map(|i| ((i * 7919 + 13) % config.vocab_size) as u32).collect();
        let points: Vec<Point> = (0..config.n_layers).map(Point::ResidPost).chain([Point::Logits]).collect();
        let (mut pd, mut pc) = (Probes::capturing(points.clone()), Probes::capturing(points.clone()));
        let (mut dc, mut cc) = (dev.new_cache(ids.len() + 3).unwrap(), cpu.new_cache(ids.len() + 3).unwrap());
        dev.forward(&ids, 0, &mut dc, &mut pd, Logits::All).unwrap();
        cpu.forward(&ids, 0, &mut cc, &mut pc, Logits::All).unwrap();
        let mut worst = 0f64;
        for p in &points {
            let (a, b) = (&pd.captured()[p][0], &pc.captured()[p][0]);
            worst = worst.max(rows(&format!("{name} {p}"), &a.data, &b.data, a.shape[1], RESID_TOL));
        }
        for (i, &id) in [5u32, 77, 901].iter().enumerate() {
            let pos = ids.len() + i;
            let a = dev.forward(&[id], pos, &mut dc, &mut Probes::none(), Logits::Last).unwrap();
            let b = cpu.forward(&[id], pos, &mut cc, &mut Probes::none(), Logits::Last).unwrap();
            let a = dev.backend.download(&a).unwrap();
            worst = worst.max(rows(
                &format!("{name} decode at {pos}"),
                &a,
                &b.data,
                config.vocab_size,
                RESID_TOL,
            ));
        }
        println!(
            "  {name} ({} layers): worst row error {worst:.2e} ({:.1}s)",
            config.n_layers,
            t0.elapsed().as_secs_f64()
        );
    }
}

/// Decode through recorded graphs on a random model of SmolLM2's shapes (no model file needed,
/// so scripts/gpu_check.sh runs it in its one fast call, by this name): every step after the
/// plain first one is replayed — a recording that fails makes this test fail, where generation
/// itself would fall back quietly — and the tokens equal plain steps'.
fn graph_replay_on_a_random_model(c: &Ctx) {
    let mut config = shapes::smollm2_135m();
    if c.schedule.is_some() {
        config.n_layers = 4;
        config.layers.truncate(4);
    }
    let model = Model::random(c.open(), config.clone(), 11).unwrap();
    assert!(model.backend.supports_graphs());
    let ids: Vec<u32> = (0..24).map(|i| ((i * 7919 + 13) % config.vocab_size) as u32).collect();
    let steps = if model.backend.is_mock() { 5 } else { 24 };
    let opts = GenerateOptions { max_tokens: steps, sampling: SamplingParams::default(), stop_at_eos: false };
    let with = generate(&model, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap();
    assert_eq!(with.graph_failure, None, "recording a decode step failed");
    assert_eq!(with.decode_steps, steps - 1);
    assert_eq!(with.replayed_steps, with.decode_steps - 1, "every decode step but the first replayed");
    let without =
        without_graphs(|| generate(&model, &ids, &opts, &mut Probes::none(), |_| Ok(true))).unwrap();
    assert_eq!(without.replayed_steps, 0);
    assert_eq!(with.generated_ids, without.generated_ids, "graph replay vs plain decode steps");
    println!(
        "  {} decode steps, {} replayed from one recording ({} layers)",
        with.decode_steps, with.replayed_steps, config.n_layers
    );
}

const TESTS: &[devices::Case<Ctx>] = &[
    ("random_models_match_the_cpu", random_models_match_the_cpu),
    ("graph_replay_on_a_random_model", graph_replay_on_a_random_model),
    ("smollm2_matches_transformers", smollm2_matches_transformers),
    ("gemma3_matches_transformers", gemma3_matches_transformers),
    ("every_point_matches_the_cpu", every_point_matches_the_cpu),
    ("prefill_then_decode_with_and_without_graphs", prefill_then_decode_with_and_without_graphs),
    ("edits_match_the_cpu", edits_match_the_cpu),
    ("device_sampling_matches_the_host_rule", device_sampling_matches_the_host_rule),
    ("microscope_commands", microscope_commands),
];

fn main() {
    let args = devices::args(&[Schedule::Random(20261201)]);
    devices::run("cuda_model", &args, TESTS, |t: &Target| {
        println!("cuda_model on {}", t.open().describe());
        Ctx { target_label: t.label.clone(), schedule: t.schedule }
    });
}
