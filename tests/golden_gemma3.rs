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
fn chat_uses_gemmas_turn_format() {
    let (files, _) = fixture();
    // Golden prompt 3 is the turn format transformers tokenized; --chat must produce the same ids.
    let g = &goldens(&golden_dir().join("gemma3"), "prompt")[3];
    let rendered = files.tokenizer.apply_chat_template("What is 2+2?").unwrap();
    assert_eq!(rendered, format!("<bos>{}", g.meta("prompt").unwrap()));
    assert_eq!(files.tokenizer.encode_raw(&rendered).unwrap(), common::reference::ids_of(g));
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

fn logits(files: &ModelFiles, ids: &[u32]) -> Vec<f32> {
    use scalpel::forward::Logits;
    use scalpel::probe::Probes;
    let model = Model::load(Cpu, files).unwrap();
    let mut cache = model.new_cache(ids.len()).unwrap();
    model.forward(ids, 0, &mut cache, &mut Probes::none(), Logits::All).unwrap().data
}

/// The same weights as a Gemma3ForCausalLM checkpoint (norms stored as w, applied as 1 + w) and
/// as a multimodal Gemma3ForConditionalGeneration one (language model nested, vision skipped).
#[test]
fn gemma3_safetensors_checkpoints_match_the_gguf() {
    use common::hf::{Layout, Storage, write_hf_dir_as};
    let (gguf, _) = fixture();
    let ids = gguf.tokenizer.encode("The capital of France is").unwrap();
    let want = logits(gguf, &ids);
    for layout in [Layout::Text, Layout::Multimodal] {
        let dir = tempfile::tempdir().unwrap();
        write_hf_dir_as(gguf, dir.path(), Storage::F32, 2, layout);
        let hf = ModelFiles::open(Some(dir.path().to_str().unwrap())).unwrap();
        assert_eq!(hf.config.norm_kind, scalpel::model::config::NormKind::OnePlus);
        assert_eq!(hf.config.layers, gguf.config.layers);
        assert_eq!(hf.config.attn_scale, gguf.config.attn_scale);
        assert_eq!(hf.tokenizer.encode("The capital of France is").unwrap(), ids);
        let note = hf.weights.note();
        assert_eq!(note.is_some(), layout == Layout::Multimodal, "{note:?}");
        // 1 + (w − 1) rounds differently from w in the last bit for some norm weights.
        common::assert_rows_close(
            "safetensors logits",
            &logits(&hf, &ids),
            &want,
            gguf.config.vocab_size,
            1e-5,
        );
    }
}
