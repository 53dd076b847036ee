//! Writes a model opened from GGUF as a Hugging Face directory (config.json, safetensors,
//! tokenizer.json, tokenizer_config.json), so the safetensors path can be checked against the
//! GGUF path on the same weights.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use scalpel::model::weights::{Weight, layer_weights};
use scalpel::model::{Arch, Config, ModelFiles};
use serde_json::json;

pub enum Storage {
    F32,
    Bf16,
}

/// How the checkpoint is laid out: a text model, or Gemma 3's multimodal wrapper around one.
#[derive(Clone, Copy, PartialEq)]
pub enum Layout {
    Text,
    Multimodal,
}

fn hf_name(w: Weight, arch: Arch, layout: Layout) -> String {
    w.hf_name(
        arch,
        match layout {
            Layout::Text => "model.",
            Layout::Multimodal => "language_model.model.",
        },
    )
}

fn is_norm(w: Weight) -> bool {
    use scalpel::model::weights::LayerWeight::*;
    matches!(
        w,
        Weight::FinalNorm | Weight::Layer(_, AttnNorm | QNorm | KNorm | PostAttnNorm | FfnNorm | PostFfnNorm)
    )
}

/// Writes `files` (a Llama-family model) to `dir`, in `shards` safetensors files.
pub fn write_hf_dir(files: &ModelFiles, dir: &Path, storage: Storage, shards: usize) {
    write_hf_dir_as(files, dir, storage, shards, Layout::Text)
}

/// Writes `files` as a Hugging Face checkpoint. Gemma norms go back to transformers' convention
/// (the file stores w, the model multiplies by 1 + w); a multimodal Gemma gets a vision tensor
/// that scalpel must skip.
pub fn write_hf_dir_as(files: &ModelFiles, dir: &Path, storage: Storage, shards: usize, layout: Layout) {
    let c = &files.config;
    let mut weights = vec![Weight::Embed, Weight::FinalNorm];
    if !c.tie_embeddings {
        weights.push(Weight::LmHead);
    }
    for l in 0..c.n_layers {
        weights.extend(layer_weights(c).into_iter().map(|w| Weight::Layer(l, w)));
    }
    let per_shard = weights.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in weights.chunks(per_shard).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
        };
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = chunk
            .iter()
            .map(|&w| {
                let mut v = files.weights.load(w, c).unwrap().unwrap();
                if c.arch == Arch::Gemma3 && is_norm(w) {
                    v.iter_mut().for_each(|x| *x -= 1.0);
                }
                let bytes = match storage {
                    Storage::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Storage::Bf16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                };
                (hf_name(w, c.arch, layout), w.shape(c), bytes)
            })
            .chain((i == 0 && layout == Layout::Multimodal).then(|| {
                (
                    "vision_tower.vision_model.embeddings.patch_embedding.weight".to_string(),
                    vec![4, 3],
                    vec![0u8; 12 * dtype_size(&storage)],
                )
            }))
            .collect();
        let dtype = match storage {
            Storage::F32 => Dtype::F32,
            Storage::Bf16 => Dtype::BF16,
        };
        let views: Vec<(String, TensorView)> =
            data.iter().map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap())).collect();
        for (n, _) in &views {
            weight_map.insert(n.clone(), json!(file));
        }
        safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &dir.join(&file)).unwrap();
    }
    if shards > 1 {
        let index = json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    let config = match c.arch {
        Arch::Llama => llama_config(c),
        Arch::Gemma3 => {
            let text = gemma_config(c);
            match layout {
                Layout::Text => text,
                Layout::Multimodal => json!({
                    "architectures": ["Gemma3ForConditionalGeneration"],
                    "model_type": "gemma3",
                    "text_config": text,
                    "vision_config": { "model_type": "siglip_vision_model", "hidden_size": 4 },
                }),
            }
        }
    };
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let tok = &files.tokenizer;
    tok.inner().save(dir.join("tokenizer.json"), false).unwrap();
    let tc = json!({
        "chat_template": tok.chat_template(),
        "bos_token": tok.bos_token(),
        "eos_token": tok.eos_token(),
    });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

fn dtype_size(s: &Storage) -> usize {
    match s {
        Storage::F32 => 4,
        Storage::Bf16 => 2,
    }
}

fn gemma_config(c: &Config) -> serde_json::Value {
    let layer_types: Vec<&str> = c
        .layers
        .iter()
        .map(|l| if l.window.is_some() { "sliding_attention" } else { "full_attention" })
        .collect();
    json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta[1],
        "rope_local_base_freq": c.rope_theta[0],
        "query_pre_attn_scalar": c.head_dim,
        "sliding_window": c.layers.iter().find_map(|l| l.window),
        "layer_types": layer_types,
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": true,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_ids.first(),
    })
}

fn llama_config(c: &Config) -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta[0],
        "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_ids.first(),
    })
}
