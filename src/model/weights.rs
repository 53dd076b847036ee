//! Where a model's parameters come from (a GGUF file or safetensors shards) and how each logical
//! weight is named, shaped and handed over in the layout the forward pass expects: as stored
//! (a view of the mapped file where possible), or as f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::bytes::Bytes;
use super::stored::Stored;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::config::{Arch, Config};
use super::gguf::GgufFile;
use super::quant;
use crate::error::{Error, Result};

/// A weight of one transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerWeight {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QNorm,
    KNorm,
    PostAttnNorm,
    FfnNorm,
    Gate,
    Up,
    Down,
    PostFfnNorm,
}

/// A logical weight of the model, independent of the file format's naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Weight {
    Embed,
    FinalNorm,
    LmHead,
    Layer(usize, LayerWeight),
}

impl Weight {
    /// The row-major shape the forward pass expects (matrices are [out, in]).
    pub fn shape(self, c: &Config) -> Vec<usize> {
        use LayerWeight::*;
        let d = c.hidden_size;
        match self {
            Weight::Embed | Weight::LmHead => vec![c.vocab_size, d],
            Weight::FinalNorm => vec![d],
            Weight::Layer(_, w) => match w {
                AttnNorm | PostAttnNorm | FfnNorm | PostFfnNorm => vec![d],
                QNorm | KNorm => vec![c.head_dim],
                Q => vec![c.q_dim(), d],
                K | V => vec![c.kv_dim(), d],
                O => vec![d, c.q_dim()],
                Gate | Up => vec![c.intermediate_size, d],
                Down => vec![d, c.intermediate_size],
            },
        }
    }

    fn gguf_name(self) -> String {
        use LayerWeight::*;
        match self {
            Weight::Embed => "token_embd.weight".into(),
            Weight::FinalNorm => "output_norm.weight".into(),
            Weight::LmHead => "output.weight".into(),
            Weight::Layer(l, w) => {
                let s = match w {
                    AttnNorm => "attn_norm",
                    Q => "attn_q",
                    K => "attn_k",
                    V => "attn_v",
                    O => "attn_output",
                    QNorm => "attn_q_norm",
                    KNorm => "attn_k_norm",
                    PostAttnNorm => "post_attention_norm",
                    FfnNorm => "ffn_norm",
                    Gate => "ffn_gate",
                    Up => "ffn_up",
                    Down => "ffn_down",
                    PostFfnNorm => "post_ffw_norm",
                };
                format!("blk.{l}.{s}.weight")
            }
        }
    }

    /// The name in a Hugging Face checkpoint whose decoder lives under `prefix` ("model.", or
    /// "language_model.model." in a multimodal Gemma 3).
    pub fn hf_name(self, arch: Arch, prefix: &str) -> String {
        use LayerWeight::*;
        match self {
            Weight::Embed => format!("{prefix}embed_tokens.weight"),
            Weight::FinalNorm => format!("{prefix}norm.weight"),
            // lm_head sits beside the decoder, not inside its prefix.
            Weight::LmHead => {
                let outer = prefix.strip_suffix("model.").unwrap_or("");
                format!("{outer}lm_head.weight")
            }
            Weight::Layer(l, w) => {
                let s = match (w, arch) {
                    (AttnNorm, _) => "input_layernorm",
                    (Q, _) => "self_attn.q_proj",
                    (K, _) => "self_attn.k_proj",
                    (V, _) => "self_attn.v_proj",
                    (O, _) => "self_attn.o_proj",
                    (QNorm, _) => "self_attn.q_norm",
                    (KNorm, _) => "self_attn.k_norm",
                    (PostAttnNorm, _) => "post_attention_layernorm",
                    // Llama's second norm is named post_attention_layernorm but sits before the MLP.
                    (FfnNorm, Arch::Llama) => "post_attention_layernorm",
                    (FfnNorm, Arch::Gemma3) => "pre_feedforward_layernorm",
                    (Gate, _) => "mlp.gate_proj",
                    (Up, _) => "mlp.up_proj",
                    (Down, _) => "mlp.down_proj",
                    (PostFfnNorm, _) => "post_feedforward_layernorm",
                };
                format!("{prefix}layers.{l}.{s}.weight")
            }
        }
    }
}

/// The weights of one layer, in the order they are loaded.
pub fn layer_weights(c: &Config) -> Vec<LayerWeight> {
    use LayerWeight::*;
    let mut v = vec![AttnNorm, Q, K, V, O, FfnNorm, Gate, Up, Down];
    if c.qk_norm {
        v.extend([QNorm, KNorm]);
    }
    if c.sandwich_norms {
        v.extend([PostAttnNorm, PostFfnNorm]);
    }
    v
}

/// Every weight the forward pass reads, in load order: the embedding, each layer's, the final
/// norm, and the LM head (which a tied model's file does not have).
pub fn all_weights(c: &Config) -> Vec<Weight> {
    let per_layer = layer_weights(c);
    let mut v = vec![Weight::Embed];
    v.extend((0..c.n_layers).flat_map(|l| per_layer.iter().map(move |&w| Weight::Layer(l, w))));
    v.extend([Weight::FinalNorm, Weight::LmHead]);
    v
}

/// One parameter as the file stores it, for `scalpel params`.
#[derive(Clone, Debug, Serialize)]
pub struct ParamInfo {
    pub name: String,
    /// Row-major, outermost dimension first.
    pub shape: Vec<usize>,
    pub dtype: String,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct StTensor {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

/// A Hugging Face checkpoint: one `model.safetensors` or shards listed by an index.
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, Arc<Bytes>)>,
    tensors: HashMap<String, StTensor>,
    order: Vec<String>,
    /// "model." for Llama-style checkpoints, "language_model.model." etc. for multimodal ones.
    prefix: String,
    /// Names of tensors this loader skips (a vision tower), for a note at load.
    pub skipped: usize,
}

impl SafetensorsFiles {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.is_file() {
            let text = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let index = parse_index(&index_path, &text)?;
            let mut shards: Vec<String> = index.values().cloned().collect();
            shards.sort();
            shards.dedup();
            let files = shards
                .iter()
                .map(|f| {
                    let p = dir.join(f);
                    Ok((p.clone(), Bytes::map(&p)?))
                })
                .collect::<Result<Vec<_>>>()?;
            Self::from_files(dir, files, Some((&index_path, &index)))
        } else if single.is_file() {
            let bytes = Bytes::map(&single)?;
            Self::from_files(dir, vec![(single, bytes)], None)
        } else {
            Err(Error::NotFound(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )))
        }
    }

    /// Reads safetensors images already opened (the shards, in order) and checks them against
    /// the index when there is one: every tensor it names must be in the shard it names.
    pub fn from_files(
        dir: &Path,
        files: Vec<(PathBuf, Bytes)>,
        index: Option<(&Path, &HashMap<String, String>)>,
    ) -> Result<Self> {
        let mut tensors = HashMap::new();
        let mut order = Vec::new();
        for (fi, (p, bytes)) in files.iter().enumerate() {
            let (header_len, meta) = SafeTensors::read_metadata(bytes)
                .map_err(|e| Error::format(p, "safetensors header", e.to_string()))?;
            let base = 8 + header_len;
            let infos = meta.tensors();
            for name in meta.offset_keys() {
                let info = infos[&name];
                if tensors.contains_key(&name) {
                    return Err(Error::format(p, &name, "tensor appears in two shards"));
                }
                tensors.insert(
                    name.clone(),
                    StTensor {
                        file: fi,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: base + info.data_offsets.0,
                        end: base + info.data_offsets.1,
                    },
                );
                order.push(name);
            }
        }
        if let Some((index_path, map)) = index {
            for (name, shard) in map {
                let found = tensors
                    .get(name)
                    .map(|t| files[t.file].0.file_name() == Some(std::ffi::OsStr::new(shard)));
                if found != Some(true) {
                    return Err(Error::format(
                        index_path,
                        "weight_map",
                        format!("lists {name} in {shard}, which does not hold it"),
                    ));
                }
            }
        }
        let prefix = ["model.", "language_model.model.", "model.language_model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| {
                Error::format(
                    dir,
                    "tensor names",
                    "no embed_tokens.weight under model., language_model.model. or model.language_model.",
                )
            })?
            .to_string();
        let skipped = order
            .iter()
            .filter(|n| n.contains("vision_tower") || n.contains("multi_modal_projector"))
            .count();
        let files = files.into_iter().map(|(p, b)| (p, Arc::new(b))).collect();
        Ok(SafetensorsFiles { files, tensors, order, prefix, skipped })
    }

    /// A tensor as stored (F32, F16 or BF16: a view into the shard's mapping).
    fn stored(&self, name: &str) -> Result<Option<Stored>> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        let (path, mmap) = &self.files[t.file];
        let dtype = match t.dtype {
            Dtype::F32 => quant::GgmlType::F32,
            Dtype::F16 => quant::GgmlType::F16,
            Dtype::BF16 => quant::GgmlType::BF16,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: tensor {name} has dtype {other:?} (supported: F32, F16, BF16)",
                    path.display()
                )));
            }
        };
        Ok(Some(Stored::mapped(dtype, t.shape.clone(), mmap.clone(), t.start, t.end - t.start)))
    }

    fn stored_len(&self, name: &str) -> Option<u64> {
        self.tensors.get(name).map(|t| (t.end - t.start) as u64)
    }
}

/// model.safetensors.index.json's weight_map: tensor → shard file name (inside the directory).
pub fn parse_index(path: &Path, text: &[u8]) -> Result<HashMap<String, String>> {
    let json: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| Error::format(path, "JSON", e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(path, "weight_map", "missing or not an object"))?;
    let mut out = HashMap::with_capacity(map.len());
    for (name, v) in map {
        let f = v
            .as_str()
            .ok_or_else(|| Error::format(path, "weight_map", format!("value {v} is not a file name")))?;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(Error::format(
                path,
                "weight_map",
                format!("shard name {f:?} leaves the model directory"),
            ));
        }
        out.insert(name.clone(), f.to_string());
    }
    Ok(out)
}

pub enum WeightFiles {
    Gguf(GgufFile),
    Safetensors(SafetensorsFiles),
}

impl WeightFiles {
    pub fn path(&self) -> &Path {
        match self {
            WeightFiles::Gguf(g) => &g.path,
            WeightFiles::Safetensors(s) => &s.files[0].0,
        }
    }

    pub fn format_name(&self) -> &'static str {
        match self {
            WeightFiles::Gguf(_) => "gguf",
            WeightFiles::Safetensors(_) => "safetensors",
        }
    }

    /// Every parameter in the file, in file order.
    pub fn params(&self) -> Vec<ParamInfo> {
        match self {
            WeightFiles::Gguf(g) => g
                .tensors()
                .iter()
                .map(|t| ParamInfo {
                    name: t.name.clone(),
                    shape: t.shape(),
                    dtype: t.dtype.name().to_string(),
                })
                .collect(),
            WeightFiles::Safetensors(s) => s
                .order
                .iter()
                .map(|n| {
                    let t = &s.tensors[n];
                    ParamInfo { name: n.clone(), shape: t.shape.clone(), dtype: format!("{:?}", t.dtype) }
                })
                .collect(),
        }
    }

    pub fn name_of(&self, w: Weight, c: &Config) -> String {
        match self {
            WeightFiles::Gguf(_) => w.gguf_name(),
            WeightFiles::Safetensors(s) => w.hf_name(c.arch, &s.prefix),
        }
    }

    /// Loads one weight as f32 in the forward pass's layout, or None when the file does not have
    /// it (an LM head tied to the embedding). Shapes are checked against the config.
    pub fn load(&self, w: Weight, c: &Config) -> Result<Option<Vec<f32>>> {
        self.load_stored(w, c)?.map(Stored::into_f32).transpose()
    }

    /// One weight as the file stores it, in the forward pass's layout (a view of the mapped file
    /// unless its rows had to be reordered), or None when the file does not have it. Shapes are
    /// checked against the config; tensor types no reader handles are an error naming the tensor.
    pub fn load_stored(&self, w: Weight, c: &Config) -> Result<Option<Stored>> {
        let name = self.name_of(w, c);
        let expected = w.shape(c);
        let stored = match self {
            WeightFiles::Gguf(g) => match g.tensor(&name) {
                None => return Ok(None),
                Some(t) => {
                    if !t.dtype.can_dequantize() {
                        return Err(Error::Unsupported(format!(
                            "{}: tensor {name}: GGML tensor type {} has no dequantizer (supported: F32, F16, BF16, \
                             Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                            g.path.display(),
                            t.dtype.name()
                        )));
                    }
                    g.stored(t)
                }
            },
            WeightFiles::Safetensors(s) => match s.stored(&name)? {
                None => return Ok(None),
                Some(x) => x,
            },
        };
        if stored.shape != expected {
            return Err(Error::format(
                self.path(),
                &name,
                format!("shape {:?} contradicts the config, which implies {expected:?}", stored.shape),
            ));
        }
        // llama.cpp's converter permutes Llama's q/k rows so that RoPE rotates adjacent pairs;
        // undo it, so every source has Hugging Face's half-split layout. Rows hold whole blocks,
        // so quantized rows move as they are.
        let permuted = matches!(
            (self, w, c.arch),
            (WeightFiles::Gguf(_), Weight::Layer(_, LayerWeight::Q | LayerWeight::K), Arch::Llama)
        );
        Ok(Some(if permuted { stored.with_rows(|i| unpermuted_source(i, c.head_dim))? } else { stored }))
    }

    /// Bytes the file stores for a weight (0 when it has none).
    pub fn stored_len(&self, w: Weight, c: &Config) -> u64 {
        let name = self.name_of(w, c);
        match self {
            WeightFiles::Gguf(g) => g.tensor(&name).map_or(0, |t| t.n_bytes),
            WeightFiles::Safetensors(s) => s.stored_len(&name).unwrap_or(0),
        }
    }

    /// A note about what was left out (a vision tower), for stderr.
    pub fn note(&self) -> Option<String> {
        match self {
            WeightFiles::Safetensors(s) if s.skipped > 0 => Some(format!(
                "skipping {} vision-tower tensors: scalpel runs the language model only",
                s.skipped
            )),
            _ => None,
        }
    }
}

/// Inverse of llama.cpp's `permute`: within each head, HF row `t·hd/2 + j` is GGUF row `2j + t`.
/// Returns the GGUF row that becomes row `i`.
fn unpermuted_source(i: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    let (h, r) = (i / head_dim, i % head_dim);
    let (t, j) = (r / half, r % half);
    h * head_dim + 2 * j + t
}

#[cfg(test)]
fn unpermute_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for i in 0..heads * head_dim {
        let src = unpermuted_source(i, head_dim);
        out[i * cols..(i + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
    }
    out
}

/// The inverse of [`unpermute_rows`]: llama.cpp's `permute`, for writing GGUF-layout q/k.
pub fn permute_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..half {
            for t in 0..2 {
                let dst = (h * head_dim + 2 * j + t) * cols;
                let src = (h * head_dim + t * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_round_trips() {
        let (heads, hd, cols) = (3, 8, 5);
        let w: Vec<f32> = (0..heads * hd * cols).map(|i| i as f32 * 0.37 - 11.0).collect();
        assert_eq!(unpermute_rows(&permute_rows(&w, heads, hd, cols), heads, hd, cols), w);
        assert_ne!(permute_rows(&w, heads, hd, cols), w);
    }
}
