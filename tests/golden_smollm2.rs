//! The CPU reference against Hugging Face transformers (float32) on the default model, from the
//! golden files scripts/golden/make_golden.py writes: token ids, every layer's residual stream,
//! attention probabilities and logits per position, and 32 greedy tokens.

mod common;

use std::sync::OnceLock;

use common::{Golden, assert_rows_close, golden_dir, open_known};
use scalpel::backend::cpu::Cpu;
use scalpel::forward::{Logits, Model};
use scalpel::generate::{GenerateOptions, generate};
use scalpel::model::ModelFiles;
use scalpel::probe::{Point, Probes};
use scalpel::sample::SamplingParams;

/// Judged per position: position 0 carries activations ~100× the others (the attention sink).
const TOL: f64 = 1e-4;

struct Fixture {
    files: ModelFiles,
    model: Model<Cpu>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let files = open_known("smollm2-135m");
        let model = Model::load(Cpu, &files).expect("model loads");
        Fixture { files, model }
    })
}

fn prompts() -> Vec<Golden> {
    let dir = golden_dir().join("smollm2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "golden prompts missing in {}", dir.display());
    files.iter().map(|p| Golden::open(p)).collect()
}

#[test]
fn token_ids_match_transformers() {
    let f = fixture();
    for g in prompts() {
        let prompt = g.meta("prompt").unwrap();
        let ours: Vec<i64> = f.files.tokenizer.encode(&prompt).unwrap().iter().map(|&i| i as i64).collect();
        assert_eq!(ours, g.i64("tokens"), "prompt {prompt:?}");
    }
}

#[test]
fn every_position_of_every_layer_matches_transformers() {
    let f = fixture();
    let c = &f.model.config;
    for g in prompts() {
        let prompt = g.meta("prompt").unwrap();
        let ids: Vec<u32> = g.i64("tokens").iter().map(|&i| i as u32).collect();
        let t = ids.len();
        let mut points = vec![Point::Embed, Point::Logits];
        for l in 0..c.n_layers {
            points.push(Point::ResidPost(l));
            points.push(Point::AttnProbs(l));
        }
        let mut probes = Probes::capturing(points);
        let mut cache = f.model.new_cache(t).unwrap();
        f.model.forward(&ids, 0, &mut cache, &mut probes, Logits::All).unwrap();
        let cap = probes.captured();
        let get = |p: Point| cap[&p][0].data.clone();

        let (embed, _) = g.f32("embed");
        assert_rows_close(&format!("{prompt:?} embed"), &get(Point::Embed), &embed, c.hidden_size, TOL);
        let (resid, _) = g.f32("resid_post");
        let (attn, _) = g.f32("attn_probs");
        let mut worst = 0f64;
        for l in 0..c.n_layers {
            let per = t * c.hidden_size;
            worst = worst.max(assert_rows_close(
                &format!("{prompt:?} blocks.{l}.resid_post"),
                &get(Point::ResidPost(l)),
                &resid[l * per..(l + 1) * per],
                c.hidden_size,
                TOL,
            ));
            let per = c.n_heads * t * t;
            assert_rows_close(
                &format!("{prompt:?} blocks.{l}.attn_probs"),
                &get(Point::AttnProbs(l)),
                &attn[l * per..(l + 1) * per],
                t,
                TOL,
            );
        }
        let (logits, shape) = g.f32("logits");
        let first: usize = g.meta("logits_first_position").unwrap().parse().unwrap();
        assert_eq!(shape, vec![t - first, c.vocab_size]);
        let ours = get(Point::Logits);
        let e = assert_rows_close(
            &format!("{prompt:?} logits"),
            &ours[first * c.vocab_size..],
            &logits,
            c.vocab_size,
            TOL,
        );
        eprintln!("{prompt:?}: worst resid_post row error {worst:.2e}, worst logits row error {e:.2e}");
    }
}

#[test]
fn greedy_tokens_match_transformers() {
    let f = fixture();
    for g in prompts() {
        let ids: Vec<u32> = g.i64("tokens").iter().map(|&i| i as u32).collect();
        let want: Vec<u32> = g.i64("greedy").iter().map(|&i| i as u32).collect();
        let opts = GenerateOptions {
            max_tokens: want.len(),
            sampling: SamplingParams::default(),
            stop_at_eos: false,
        };
        let out = generate(&f.model, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap();
        assert_eq!(out.generated_ids, want, "prompt {:?}", g.meta("prompt"));
    }
}
