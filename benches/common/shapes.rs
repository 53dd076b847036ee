//! Exact shapes of models the GPU benchmarks build with random weights (no download needed).
#![allow(dead_code)]

use scalpel::model::Config;
use serde_json::json;

fn from(json: serde_json::Value) -> Config {
    Config::from_hf(std::path::Path::new("config.json"), &json, None).expect("a valid config")
}

/// HuggingFaceTB/SmolLM2-135M-Instruct's config.json (the default model).
pub fn smollm2_135m() -> Config {
    from(json!({
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
    }))
}

/// google/gemma-3-270m's config.json.
pub fn gemma_3_270m() -> Config {
    let layer_types: Vec<&str> =
        (0..18).map(|l| if (l + 1) % 6 == 0 { "full_attention" } else { "sliding_attention" }).collect();
    from(json!({
        "model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256, "sliding_window": 512,
        "layer_types": layer_types, "final_logit_softcapping": null, "attn_logit_softcapping": null,
        "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 1
    }))
}

/// meta-llama/Llama-3.2-3B's config.json.
pub fn llama_3_2_3b() -> Config {
    from(json!({
        "model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": 128001
    }))
}

/// google/gemma-3-4b-it's text_config.
pub fn gemma_3_4b() -> Config {
    let layer_types: Vec<&str> =
        (0..34).map(|l| if (l + 1) % 6 == 0 { "full_attention" } else { "sliding_attention" }).collect();
    from(json!({
        "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "query_pre_attn_scalar": 256, "sliding_window": 1024, "layer_types": layer_types,
        "final_logit_softcapping": null, "attn_logit_softcapping": null, "tie_word_embeddings": true,
        "bos_token_id": 2, "eos_token_id": 1
    }))
}
