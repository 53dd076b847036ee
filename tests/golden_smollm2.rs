//! The CPU reference against Hugging Face transformers (float32) on the default model,
//! SmolLM2-135M-Instruct Q4_1, from the golden files scripts/golden/make_golden.py writes.

mod common;

use std::sync::OnceLock;

use common::reference::{check_forward, check_greedy, check_tokens, goldens};
use common::{golden_dir, open_known};
use scalpel::backend::cpu::Cpu;
use scalpel::forward::Model;
use scalpel::model::ModelFiles;

/// Judged per position: position 0 carries activations ~100× the others (the attention sink).
const TOL: f64 = 1e-4;

fn fixture() -> &'static (ModelFiles, Model<Cpu>) {
    static F: OnceLock<(ModelFiles, Model<Cpu>)> = OnceLock::new();
    F.get_or_init(|| {
        let files = open_known("smollm2-135m");
        let model = Model::load(Cpu, &files).expect("model loads");
        (files, model)
    })
}

#[test]
fn token_ids_match_transformers() {
    let (files, _) = fixture();
    for g in goldens(&golden_dir().join("smollm2"), "prompt") {
        check_tokens(files, &g);
    }
}

#[test]
fn every_position_of_every_layer_matches_transformers() {
    let (_, model) = fixture();
    let gs = goldens(&golden_dir().join("smollm2"), "prompt");
    assert!(gs.len() >= 5);
    for g in gs {
        check_forward(model, &g, TOL);
    }
}

#[test]
fn greedy_tokens_match_transformers() {
    let (_, model) = fixture();
    for g in goldens(&golden_dir().join("smollm2"), "prompt") {
        check_greedy(model, &g);
    }
}
