//! Writes a model opened from GGUF as a Hugging Face directory (config.json, safetensors,
//! tokenizer.json, tokenizer_config.json), so the safetensors path can be checked against the
//! GGUF path on the same weights.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use scalpel::model::ModelFiles;
use scalpel::model::weights::{Weight, layer_weights};
use serde_json::json;

pub enum Storage {
    F32,
    Bf16,
}

fn hf_name(w: Weight) -> String {
    use scalpel::model::weights::LayerWeight::*;
    match w {
        Weight::Embed => "model.embed_tokens.weight".into(),
        Weight::FinalNorm => "model.norm.weight".into(),
        Weight::LmHead => "lm_head.weight".into(),
        Weight::Layer(l, lw) => {
            let s = match lw {
                AttnNorm => "input_layernorm",
                Q => "self_attn.q_proj",
                K => "self_attn.k_proj",
                V => "self_attn.v_proj",
                O => "self_attn.o_proj",
                FfnNorm => "post_attention_layernorm",
                Gate => "mlp.gate_proj",
                Up => "mlp.up_proj",
                Down => "mlp.down_proj",
                other => panic!("not a Llama weight: {other:?}"),
            };
            format!("model.layers.{l}.{s}.weight")
        }
    }
}

/// Writes `files` (a Llama-family model) to `dir`, in `shards` safetensors files.
pub fn write_hf_dir(files: &ModelFiles, dir: &Path, storage: Storage, shards: usize) {
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
                let v = files.weights.load(w, c).unwrap().unwrap();
                let bytes = match storage {
                    Storage::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Storage::Bf16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                };
                (hf_name(w), w.shape(c), bytes)
            })
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
    let config = json!({
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
    });
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
