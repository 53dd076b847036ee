//! Each GGML dequantizer against the `gguf` Python package: real tensors of the default models
//! (Q4_1, Q8_0, F32 from SmolLM2; Q5_0, Q4_K, Q6_K from gemma-3-270m) and seeded random blocks
//! for the types those models lack (F16, BF16, Q4_0, Q5_1, Q5_K).

mod common;

use common::{Golden, golden_dir};
use scalpel::model::quant::{GgmlType, dequantize};

fn check(name: &str, ty: GgmlType) {
    let g = Golden::open(&golden_dir().join("dequant.safetensors"));
    let raw = g.u8(&format!("{name}.raw"));
    let (want, _) = g.f32(&format!("{name}.values"));
    assert!(want.len() >= 256, "{name}: too few golden values");
    assert!(want.iter().any(|&v| v != 0.0), "{name}: golden values are all zero");
    let got = dequantize(ty, &raw, want.len()).unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        // gguf-py computes in f32 numpy with the same operation order; allow one rounding step.
        assert!(
            (a - b).abs() <= 1e-6 * scale,
            "{name}[{i}]: ours {a} vs gguf-py {b} (source: {:?})",
            g.meta(name)
        );
    }
}

#[test]
fn f32_matches_gguf_py() {
    check("F32", GgmlType::F32);
}

#[test]
fn f16_matches_gguf_py() {
    check("F16", GgmlType::F16);
}

#[test]
fn bf16_matches_gguf_py() {
    check("BF16", GgmlType::BF16);
}

#[test]
fn q4_0_matches_gguf_py() {
    check("Q4_0", GgmlType::Q4_0);
}

#[test]
fn q4_1_matches_gguf_py() {
    check("Q4_1", GgmlType::Q4_1);
}

#[test]
fn q5_0_matches_gguf_py() {
    check("Q5_0", GgmlType::Q5_0);
}

#[test]
fn q5_1_matches_gguf_py() {
    check("Q5_1", GgmlType::Q5_1);
}

#[test]
fn q8_0_matches_gguf_py() {
    check("Q8_0", GgmlType::Q8_0);
}

#[test]
fn q4_k_matches_gguf_py() {
    check("Q4_K", GgmlType::Q4K);
}

#[test]
fn q5_k_matches_gguf_py() {
    check("Q5_K", GgmlType::Q5K);
}

#[test]
fn q6_k_matches_gguf_py() {
    check("Q6_K", GgmlType::Q6K);
}

#[test]
fn wrong_lengths_and_unsupported_types_are_errors() {
    assert!(dequantize(GgmlType::Q4_0, &[0u8; 18], 31).is_err(), "not a whole block");
    assert!(dequantize(GgmlType::Q4_0, &[0u8; 17], 32).is_err(), "short buffer");
    let e = dequantize(GgmlType::Q2K, &[0u8; 84], 256).unwrap_err();
    assert!(e.to_string().contains("Q2_K"), "{e}");
}
