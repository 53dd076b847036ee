//! The CPU reference against Hugging Face transformers (float32) on gemma-3-270m Q4_K_M: √d
//! embedding scale, (1 + w) norms stored as 1 + w in the GGUF, q/k norms, sandwich norms, GeGLU,
//! interleaved sliding-window and global layers with their own RoPE bases.

mod common;

use std::sync::OnceLock;

use common::reference::{check_forward, check_greedy, check_tokens, goldens};
use common::{golden_dir, open_known};
use scalpel::backend::cpu::Cpu;
use scalpel::forward::Model;
use scalpel::model::ModelFiles;

/// Per position; position 0's residual reaches ~1e5 while the others stay far smaller.
const TOL: f64 = 1e-4;

fn fixture() -> &'static (ModelFiles, Model<Cpu>) {
    static F: OnceLock<(ModelFiles, Model<Cpu>)> = OnceLock::new();
    F.get_or_init(|| {
        let files = open_known("gemma3-270m");
        let model = Model::load(Cpu, &files).expect("model loads");
        (files, model)
    })
}

#[test]
fn config_reads_gemma3_from_the_gguf() {
    let (files, _) = fixture();
    let c = &files.config;
    assert_eq!((c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim), (18, 4, 1, 256));
    assert_eq!((c.hidden_size, c.intermediate_size, c.vocab_size), (640, 2048, 262144));
    let global: Vec<usize> = (0..c.n_layers).filter(|&l| c.layers[l].window.is_none()).collect();
    assert_eq!(global, vec![5, 11, 17]);
    assert!(c.layers.iter().filter(|l| l.window.is_some()).all(|l| l.window == Some(512)));
    assert_eq!(c.rope_theta, vec![10000.0, 1_000_000.0]);
    assert_eq!(c.embed_scale, Some(640f32.sqrt()));
    assert!(files.tokenizer.adds_bos);
}

#[test]
fn token_ids_match_transformers() {
    let (files, _) = fixture();
    for g in goldens(&golden_dir().join("gemma3"), "prompt") {
        check_tokens(files, &g);
    }
}

#[test]
fn every_position_of_every_layer_matches_transformers() {
    let (_, model) = fixture();
    for g in goldens(&golden_dir().join("gemma3"), "prompt") {
        check_forward(model, &g, TOL);
    }
}

#[test]
fn greedy_tokens_match_transformers() {
    let (_, model) = fixture();
    for g in goldens(&golden_dir().join("gemma3"), "prompt") {
        check_greedy(model, &g);
    }
}

/// A window shrunk to 8 (in both engines) on a 27-token prompt: local layers must really drop
/// the keys that fell out of it, in prefill and in decode.
#[test]
fn sliding_windows_bound_what_local_layers_see() {
    let (_, _) = fixture();
    let g = &goldens(&golden_dir().join("gemma3"), "window")[0];
    let window: usize = g.meta("sliding_window").unwrap().parse().unwrap();
    let mut files = open_known("gemma3-270m");
    for l in files.config.layers.iter_mut().filter(|l| l.window.is_some()) {
        l.window = Some(window);
    }
    let model = Model::load(Cpu, &files).unwrap();
    check_tokens(&files, g);
    check_forward(&model, g, TOL);
    check_greedy(&model, g);
    let t = g.i64("tokens").len();
    assert!(t > 3 * window, "the prompt must outrun the window");
}
