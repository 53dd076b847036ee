//! Entry points for the fuzzers (fuzz/, and the stable smoke test tests/fuzz_smoke.rs): each takes
//! arbitrary bytes, runs one untrusted-input path, and must return (with an error or not) — never
//! panic, hang, or allocate what the input merely claims.

use std::path::Path;

use crate::model::bytes::Bytes;
use crate::model::config::Config;
use crate::model::gguf::{GgufFile, GgufHeader};
use crate::model::tokenizer::{Tokenizer, render_chat_template};
use crate::model::weights::{SafetensorsFiles, Weight, WeightFiles, layer_weights, parse_index};

/// The GGUF header parser alone.
pub fn gguf_header(data: &[u8]) {
    let _ = GgufHeader::parse(data, Path::new("fuzz.gguf"));
}

/// A whole GGUF model: header, config, tokenizer, and a few weights.
pub fn gguf_model(data: &[u8]) {
    let Ok(g) = GgufFile::from_bytes(Bytes::Owned(data.to_vec()), Path::new("fuzz.gguf")) else { return };
    if let Ok(cfg) = Config::from_gguf(&g) {
        let files = WeightFiles::Gguf(g);
        for w in [Weight::Embed, Weight::FinalNorm, Weight::Layer(0, layer_weights(&cfg)[1])] {
            let _ = files.load(w, &cfg);
        }
        if let WeightFiles::Gguf(g) = &files {
            let _ = Tokenizer::from_gguf(g);
        }
    } else {
        let _ = Tokenizer::from_gguf(&g);
    }
}

/// A control-vector GGUF.
pub fn control_vector(data: &[u8]) {
    if let Ok(g) = GgufFile::from_bytes(Bytes::Owned(data.to_vec()), Path::new("fuzz.gguf")) {
        let _ = crate::interp::steer::ControlVector::from_gguf(g);
    }
}

/// Splits input into length-prefixed parts (u16 little-endian lengths).
fn parts(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for _ in 0..n - 1 {
        if data.len() < 2 {
            out.push(&data[..0]);
            continue;
        }
        let len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        out.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out.push(data);
    out
}

/// A Hugging Face directory: config.json, an index and two shards, all from the input.
pub fn safetensors_dir(data: &[u8]) {
    let p = parts(data, 4);
    let dir = Path::new("fuzz");
    let cfg = serde_json::from_slice(p[0])
        .ok()
        .and_then(|j| Config::from_hf(Path::new("fuzz/config.json"), &j, None).ok());
    let index = parse_index(Path::new("fuzz/model.safetensors.index.json"), p[1]).ok();
    let files = vec![
        (dir.join("model-00001-of-00002.safetensors"), Bytes::Owned(p[2].to_vec())),
        (dir.join("model-00002-of-00002.safetensors"), Bytes::Owned(p[3].to_vec())),
    ];
    let idx = index.as_ref().map(|m| (Path::new("fuzz/model.safetensors.index.json"), m));
    if let (Ok(st), Some(cfg)) = (SafetensorsFiles::from_files(dir, files, idx), cfg) {
        let files = WeightFiles::Safetensors(st);
        let _ = files.params();
        for w in [Weight::Embed, Weight::FinalNorm, Weight::Layer(0, layer_weights(&cfg)[1])] {
            let _ = files.load(w, &cfg);
        }
    }
}

/// A chat template (from a GGUF or tokenizer_config.json) rendered for one message.
pub fn chat_template(data: &[u8]) {
    let template = String::from_utf8_lossy(data);
    let _ = render_chat_template(&template, &[("user", "hello"), ("assistant", "hi")], "<s>", "</s>");
}

/// tokenizer.json as the tokenizers crate reads it.
pub fn tokenizer_json(data: &[u8]) {
    let _ = crate::model::tokenizer::parse_tokenizer_json(Path::new("fuzz/tokenizer.json"), data);
}
