//! A tiny Llama-shaped model built in memory: a byte-level vocabulary and random weights, written
//! as GGUF (or pieces of one, for malformed-file tests) or as a Hugging Face directory.

use scalpel::model::gguf::{Array, GgufWriter, Value};
use scalpel::model::tokenizer::bytes_to_unicode;

pub struct Tiny {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub context: usize,
    pub arch: &'static str,
}

impl Default for Tiny {
    fn default() -> Self {
        Tiny { hidden: 64, layers: 2, heads: 4, kv_heads: 2, ffn: 96, context: 64, arch: "llama" }
    }
}

/// A small deterministic generator, so fixtures are the same on every run.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

pub const EOS: &str = "<|endoftext|>";

/// 256 byte tokens, a few merges, and an end-of-text token.
pub fn vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let byte = bytes_to_unicode();
    let mut tokens: Vec<String> = byte.iter().map(|c| c.to_string()).collect();
    let mut merges = Vec::new();
    for (a, b) in [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w")] {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
    }
    tokens.push(EOS.to_string());
    let mut types = vec![1; tokens.len()];
    *types.last_mut().unwrap() = 3;
    (tokens, merges, types)
}

impl Tiny {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn vocab_size(&self) -> usize {
        vocab().0.len()
    }

    /// Metadata of a complete model, without tensors.
    pub fn writer(&self) -> GgufWriter {
        let (tokens, merges, types) = vocab();
        let a = self.arch;
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str(a.into()))
            .meta("general.name", Value::Str("tiny".into()))
            .meta(&format!("{a}.block_count"), Value::U32(self.layers as u32))
            .meta(&format!("{a}.context_length"), Value::U32(self.context as u32))
            .meta(&format!("{a}.embedding_length"), Value::U32(self.hidden as u32))
            .meta(&format!("{a}.feed_forward_length"), Value::U32(self.ffn as u32))
            .meta(&format!("{a}.attention.head_count"), Value::U32(self.heads as u32))
            .meta(&format!("{a}.attention.head_count_kv"), Value::U32(self.kv_heads as u32))
            .meta(&format!("{a}.rope.freq_base"), Value::F32(10000.0))
            .meta(&format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
            .meta("tokenizer.ggml.model", Value::Str("gpt2".into()))
            .meta("tokenizer.ggml.pre", Value::Str("default".into()))
            .meta("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens.clone())))
            .meta("tokenizer.ggml.merges", Value::Array(Array::Str(merges)))
            .meta("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
            .meta("tokenizer.ggml.eos_token_id", Value::U32(tokens.len() as u32 - 1))
            .meta("tokenizer.ggml.bos_token_id", Value::U32(tokens.len() as u32 - 1));
        w
    }

    /// Adds every tensor of the model, random but deterministic.
    pub fn add_tensors(&self, w: &mut GgufWriter, seed: u64) {
        let mut r = Lcg(seed);
        let (d, f, v, hd) = (self.hidden, self.ffn, self.vocab_size(), self.head_dim());
        let norm = |r: &mut Lcg, n: usize| r.vec(n, 0.2).into_iter().map(|x| 1.0 + x).collect::<Vec<_>>();
        w.tensor("token_embd.weight", &[v, d], r.vec(v * d, 1.0));
        w.tensor("output_norm.weight", &[d], norm(&mut r, d));
        for l in 0..self.layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            w.tensor(&n("attn_norm"), &[d], norm(&mut r, d));
            w.tensor(&n("attn_q"), &[self.heads * hd, d], r.vec(self.heads * hd * d, 0.3));
            w.tensor(&n("attn_k"), &[self.kv_heads * hd, d], r.vec(self.kv_heads * hd * d, 0.3));
            w.tensor(&n("attn_v"), &[self.kv_heads * hd, d], r.vec(self.kv_heads * hd * d, 0.3));
            w.tensor(&n("attn_output"), &[d, self.heads * hd], r.vec(d * self.heads * hd, 0.3));
            w.tensor(&n("ffn_norm"), &[d], norm(&mut r, d));
            w.tensor(&n("ffn_gate"), &[f, d], r.vec(f * d, 0.3));
            w.tensor(&n("ffn_up"), &[f, d], r.vec(f * d, 0.3));
            w.tensor(&n("ffn_down"), &[d, f], r.vec(d * f, 0.3));
        }
    }

    pub fn gguf(&self) -> Vec<u8> {
        let mut w = self.writer();
        self.add_tensors(&mut w, 42);
        w.to_bytes()
    }
}
