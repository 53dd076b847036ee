//! Tokenizers built from GGUF metadata against transformers loading the same files: ids for a set
//! of tricky texts (whitespace, CJK, emoji, digits, special-token text) and chat-template
//! renderings. SmolLM2 is byte-level BPE; gemma-3-270m is a SentencePiece vocabulary whose merges
//! are recovered from token order.

mod common;

use common::{golden_dir, open_known};
use serde_json::Value;

fn check(alias: &str, dir: &str) {
    let files = open_known(alias);
    let tok = &files.tokenizer;
    let text = std::fs::read_to_string(golden_dir().join(dir).join("tokenizer.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let t = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(t).unwrap(), ids(&case["ids"]), "{alias}: {t:?}");
    }
    for chat in golden["chat"].as_array().unwrap() {
        let m = chat["message"].as_str().unwrap();
        let rendered = tok.apply_chat_template(m).unwrap();
        assert_eq!(rendered, chat["rendered"].as_str().unwrap(), "{alias}: chat rendering of {m:?}");
        assert_eq!(tok.encode_raw(&rendered).unwrap(), ids(&chat["ids"]), "{alias}: chat ids of {m:?}");
    }
}

#[test]
fn smollm2_byte_level_bpe_matches_transformers() {
    check("smollm2-135m", "smollm2");
}

#[test]
fn gemma3_sentencepiece_matches_transformers() {
    check("gemma3-270m", "gemma3");
}

#[test]
fn bos_is_added_exactly_when_the_metadata_says() {
    let smol = open_known("smollm2-135m");
    assert!(!smol.tokenizer.adds_bos);
    assert_ne!(smol.tokenizer.encode("Hello").unwrap()[0], 1);
    let gemma = open_known("gemma3-270m");
    assert!(gemma.tokenizer.adds_bos);
    assert_eq!(gemma.tokenizer.encode("Hello").unwrap()[0], 2);
}

#[test]
fn streaming_decode_waits_for_whole_characters() {
    let files = open_known("smollm2-135m");
    let tok = &files.tokenizer;
    // SmolLM2 spells CJK as byte tokens: single tokens decode to partial UTF-8.
    let ids = tok.encode("天气预报").unwrap();
    assert!(ids.len() > 4, "expected byte tokens, got {ids:?}");
    let mut s = tok.stream();
    let mut out = String::new();
    for &id in &ids {
        let piece = s.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "partial character leaked: {piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&s.finish().unwrap());
    assert_eq!(out, "天气预报");
}
