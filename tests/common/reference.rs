//! One body for the "CPU engine against transformers" checks, run for each model's golden files:
//! token ids, embed, every resid_post, every attention row and the kept logits rows, judged per
//! position, and the greedy continuation.

use std::path::Path;

use scalpel::backend::cpu::Cpu;
use scalpel::forward::{Logits, Model};
use scalpel::generate::{GenerateOptions, generate};
use scalpel::model::ModelFiles;
use scalpel::probe::{Point, Probes};
use scalpel::sample::SamplingParams;

use super::{Golden, assert_rows_close};

/// The golden files of one model directory whose names start with `stem`, in order.
pub fn goldens(dir: &Path, stem: &str) -> Vec<Golden> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("golden dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(stem))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {stem}* golden files in {}", dir.display());
    files.iter().map(|p| Golden::open(p)).collect()
}

pub fn ids_of(g: &Golden) -> Vec<u32> {
    g.i64("tokens").iter().map(|&i| i as u32).collect()
}

pub fn check_tokens(files: &ModelFiles, g: &Golden) {
    let prompt = g.meta("prompt").unwrap();
    assert_eq!(files.tokenizer.encode(&prompt).unwrap(), ids_of(g), "token ids of {prompt:?}");
}

/// Runs the golden prompt with every probe the file has and compares row by row.
pub fn check_forward(model: &Model<Cpu>, g: &Golden, tol: f64) {
    let c = &model.config;
    let prompt = g.meta("prompt").unwrap();
    let ids = ids_of(g);
    let t = ids.len();
    let mut points = vec![Point::Embed, Point::Logits];
    for l in 0..c.n_layers {
        points.extend([Point::ResidPost(l), Point::AttnProbs(l)]);
    }
    let mut probes = Probes::capturing(points);
    let mut cache = model.new_cache(t).unwrap();
    model.forward(&ids, 0, &mut cache, &mut probes, Logits::All).unwrap();
    let cap = probes.captured();
    let get = |p: Point| cap[&p][0].data.clone();

    assert_rows_close(
        &format!("{prompt:?} embed"),
        &get(Point::Embed),
        &g.f32("embed").0,
        c.hidden_size,
        tol,
    );
    let (resid, shape) = g.f32("resid_post");
    assert_eq!(shape, vec![c.n_layers, t, c.hidden_size]);
    let (attn, shape) = g.f32("attn_probs");
    assert_eq!(shape, vec![c.n_layers, c.n_heads, t, t]);
    let mut worst = 0f64;
    for l in 0..c.n_layers {
        let per = t * c.hidden_size;
        worst = worst.max(assert_rows_close(
            &format!("{prompt:?} blocks.{l}.resid_post"),
            &get(Point::ResidPost(l)),
            &resid[l * per..(l + 1) * per],
            c.hidden_size,
            tol,
        ));
        let per = c.n_heads * t * t;
        assert_rows_close(
            &format!("{prompt:?} blocks.{l}.attn_probs"),
            &get(Point::AttnProbs(l)),
            &attn[l * per..(l + 1) * per],
            t,
            tol,
        );
    }
    let (logits, shape) = g.f32("logits");
    let first: usize = g.meta("logits_first_position").unwrap().parse().unwrap();
    assert_eq!(shape, vec![t - first, c.vocab_size]);
    let e = assert_rows_close(
        &format!("{prompt:?} logits"),
        &get(Point::Logits)[first * c.vocab_size..],
        &logits,
        c.vocab_size,
        tol,
    );
    eprintln!("{prompt:?}: worst resid_post row error {worst:.2e}, worst logits row error {e:.2e}");
}

pub fn check_greedy(model: &Model<Cpu>, g: &Golden) {
    let want: Vec<u32> = g.i64("greedy").iter().map(|&i| i as u32).collect();
    let opts =
        GenerateOptions { max_tokens: want.len(), sampling: SamplingParams::default(), stop_at_eos: false };
    let out = generate(model, &ids_of(g), &opts, &mut Probes::none(), |_| Ok(true)).unwrap();
    assert_eq!(out.generated_ids, want, "greedy tokens of {:?}", g.meta("prompt"));
}
