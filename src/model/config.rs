//! The architecture description the forward pass runs from, read from GGUF metadata or from a
//! Hugging Face `config.json`. Everything architecture-specific lives here as data, so the
//! forward pass itself has no `if llama`/`if gemma` beyond what these fields say.

use std::path::Path;

use serde::Serialize;
use serde_json::Value as Json;

use super::gguf::GgufFile;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Arch {
    /// Llama 2/3.x, SmolLM2, TinyLlama, Mistral-style.
    Llama,
    /// Gemma 3 text models.
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// The gated MLP's activation: SwiGLU (SiLU) for Llama, GeGLU with tanh GELU for Gemma.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// How an RMSNorm weight is applied: `w · x̂`, or Gemma's `(1 + w) · x̂` as its checkpoints store it.
/// (llama.cpp's GGUF conversion of Gemma already stores `1 + w`, so Gemma GGUFs use `Plain`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NormKind {
    Plain,
    OnePlus,
}

impl NormKind {
    /// What multiplies a normalized value, given the stored weight.
    pub fn gain(self, w: f32) -> f32 {
        match self {
            NormKind::Plain => w,
            NormKind::OnePlus => 1.0 + w,
        }
    }
}

/// One layer's attention geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    /// Sliding window: a query sees at most this many keys, itself included. None = global.
    pub window: Option<usize>,
    /// Index into [`Config::rope_inv_freq`].
    pub rope: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub arch: Arch,
    pub name: String,
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub norm_kind: NormKind,
    pub activation: Activation,
    pub tie_embeddings: bool,
    /// Gemma multiplies embeddings by √hidden (rounded to the weights' dtype, as the reference does).
    pub embed_scale: Option<f32>,
    /// Multiplier of q·k: 1/√head_dim, or Gemma's query_pre_attn_scalar^-½.
    pub attn_scale: f32,
    /// Gemma's per-head RMSNorm of q and k.
    pub qk_norm: bool,
    /// Gemma's norms after each sublayer, before its residual add.
    pub sandwich_norms: bool,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// RoPE inverse frequencies, one table per distinct RoPE of the model (Gemma: local, global),
    /// scaling already folded in. Each has head_dim/2 entries.
    #[serde(skip)]
    pub rope_inv_freq: Vec<Vec<f32>>,
    pub rope_theta: Vec<f64>,
    pub rope_scaling: Option<String>,
    pub layers: Vec<LayerSpec>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Llama 3's frequency-dependent RoPE scaling (rope_type "llama3").
#[derive(Clone, Copy, Debug)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// inv_freq[i] = 1 / base^(2i/dim), computed in f32 as Hugging Face does, so positions rotate
/// by the same angles as the reference.
pub fn default_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            1.0 / (base as f32).powf(exponent)
        })
        .collect()
}

pub fn llama3_inv_freq(base: f64, dim: usize, s: Llama3Scaling) -> Vec<f32> {
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    default_inv_freq(base, dim)
        .into_iter()
        .map(|f| {
            let f = f as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let scaled = if wavelen > low_wavelen { f / s.factor } else { f };
            if wavelen < high_wavelen || wavelen > low_wavelen {
                scaled as f32
            } else {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                ((1.0 - smooth) * scaled / s.factor + smooth * scaled) as f32
            }
        })
        .collect()
}

/// What both families share, read from either source; [`Common::llama`] and [`Common::gemma3`]
/// add what differs.
struct Common {
    name: String,
    hidden_size: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    intermediate_size: usize,
    vocab_size: usize,
    context_length: usize,
    rms_eps: f32,
    tie_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
}

/// One RoPE: its base, inverse frequencies (scaling folded in) and how it was scaled.
struct Rope {
    theta: f64,
    inv_freq: Vec<f32>,
    scaling: Option<String>,
}

impl Common {
    fn llama(self, rope: Rope, window: Option<usize>) -> Config {
        let n_layers = self.n_layers;
        let attn_scale = 1.0 / (self.head_dim as f32).sqrt();
        self.finish(
            Arch::Llama,
            NormKind::Plain,
            Activation::Silu,
            None,
            attn_scale,
            (false, false),
            (None, None),
            vec![rope],
            vec![LayerSpec { window, rope: 0 }; n_layers],
        )
    }

    /// Gemma 3: RoPE 0 is the sliding layers', RoPE 1 the global layers'.
    #[allow(clippy::too_many_arguments)]
    fn gemma3(
        self,
        norm_kind: NormKind,
        attn_scale: f32,
        softcaps: (Option<f32>, Option<f32>),
        local: Rope,
        global: Rope,
        layers: Vec<LayerSpec>,
    ) -> Config {
        let scale = gemma_embed_scale(self.hidden_size);
        self.finish(
            Arch::Gemma3,
            norm_kind,
            Activation::GeluTanh,
            Some(scale),
            attn_scale,
            (true, true),
            softcaps,
            vec![local, global],
            layers,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        arch: Arch,
        norm_kind: NormKind,
        activation: Activation,
        embed_scale: Option<f32>,
        attn_scale: f32,
        (qk_norm, sandwich_norms): (bool, bool),
        (attn_softcap, final_softcap): (Option<f32>, Option<f32>),
        ropes: Vec<Rope>,
        layers: Vec<LayerSpec>,
    ) -> Config {
        let rope_scaling = ropes.iter().rev().find_map(|r| r.scaling.clone());
        Config {
            arch,
            name: self.name,
            hidden_size: self.hidden_size,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            intermediate_size: self.intermediate_size,
            vocab_size: self.vocab_size,
            context_length: self.context_length,
            rms_eps: self.rms_eps,
            norm_kind,
            activation,
            tie_embeddings: self.tie_embeddings,
            embed_scale,
            attn_scale,
            qk_norm,
            sandwich_norms,
            attn_softcap,
            final_softcap,
            rope_theta: ropes.iter().map(|r| r.theta).collect(),
            rope_inv_freq: ropes.into_iter().map(|r| r.inv_freq).collect(),
            rope_scaling,
            layers,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids,
        }
    }
}

impl Config {
    /// An error naming the first of `ids` outside the vocabulary: checked before any backend
    /// gathers rows (a GPU gather cannot report a bad id; it reads past the table).
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            Some(id) => {
                Err(Error::Invalid(format!("token id {id} is outside the vocabulary of {}", self.vocab_size)))
            }
            None => Ok(()),
        }
    }

    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Checks the relations the forward pass relies on; `origin` names the source in errors.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |field: &str, detail: String| Err(Error::format(origin, field, detail));
        for (field, v) in [
            ("hidden size", self.hidden_size),
            ("layer count", self.n_layers),
            ("head count", self.n_heads),
            ("KV head count", self.n_kv_heads),
            ("head dim", self.head_dim),
            ("FFN size", self.intermediate_size),
            ("vocab size", self.vocab_size),
            ("context length", self.context_length),
        ] {
            if v == 0 || v > MAX_DIM {
                return bad(field, format!("{v} is out of range"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "KV head count",
                format!("{} query heads are not a multiple of {} KV heads", self.n_heads, self.n_kv_heads),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad("head dim", format!("{} is odd; RoPE rotates pairs", self.head_dim));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad("RMS epsilon", format!("{}", self.rms_eps));
        }
        if self.layers.len() != self.n_layers {
            return bad("layer types", format!("{} entries for {} layers", self.layers.len(), self.n_layers));
        }
        for t in &self.rope_inv_freq {
            if t.len() != self.head_dim / 2 || t.iter().any(|f| !f.is_finite()) {
                return bad(
                    "RoPE frequencies",
                    format!("{} entries for head dim {}", t.len(), self.head_dim),
                );
            }
        }
        for id in self.bos_token_id.iter().chain(&self.eos_token_ids) {
            if *id as usize >= self.vocab_size {
                return bad(
                    "special token id",
                    format!("{id} is outside the vocabulary of {}", self.vocab_size),
                );
            }
        }
        Ok(())
    }

    /// From GGUF metadata (keys as llama.cpp's convert_hf_to_gguf writes them).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name = g
            .opt_str("general.architecture")?
            .ok_or_else(|| Error::format(&g.path, "general.architecture", "missing"))?
            .to_string();
        let arch = match arch_name.as_str() {
            "llama" | "mistral" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: architecture {other:?} (scalpel runs llama-family and gemma3 models)",
                    g.path.display()
                )));
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let req = |s: &str| -> Result<usize> { Ok(g.req_u64(&k(s))? as usize) };
        let hidden_size = req("embedding_length")?;
        let n_layers = req("block_count")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = g.opt_u64(&k("attention.head_count_kv"))?.map_or(n_heads, |v| v as usize);
        let head_dim = match g.opt_u64(&k("attention.key_length"))? {
            Some(v) => v as usize,
            None => hidden_size.checked_div(n_heads).unwrap_or(0),
        };
        if let Some(rot) = g.opt_u64(&k("rope.dimension_count"))?
            && rot as usize != head_dim
        {
            return Err(Error::Unsupported(format!(
                "{}: partial rotary embedding ({rot} of {head_dim} dims)",
                g.path.display()
            )));
        }
        let intermediate_size = req("feed_forward_length")?;
        let tokens_len = g.opt_array("tokenizer.ggml.tokens")?.map(|a| a.len()).unwrap_or(0);
        let vocab_size = match g.opt_u64(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => g.tensor("token_embd.weight").map(|t| t.shape()[0]).unwrap_or(tokens_len),
        };
        let context_length = req("context_length")?;
        check_dims(
            &g.path,
            &[
                ("embedding_length", hidden_size),
                ("block_count", n_layers),
                ("attention.head_count", n_heads),
                ("attention.head_count_kv", n_kv_heads),
                ("head dim", head_dim),
                ("feed_forward_length", intermediate_size),
                ("vocab size", vocab_size),
                ("context_length", context_length),
            ],
        )?;
        let rms_eps = g
            .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| Error::format(&g.path, k("attention.layer_norm_rms_epsilon"), "missing"))?
            as f32;
        let base = g.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0);
        let scaling_type = g.opt_str(&k("rope.scaling.type"))?.map(str::to_string);
        let scaling_factor = g.opt_f64(&k("rope.scaling.factor"))?;

        // llama.cpp stores Llama 3's RoPE scaling as a tensor of per-frequency divisors.
        let freq_factors = match g.tensor("rope_freqs.weight") {
            Some(t) => {
                let v = super::quant::dequantize(t.dtype, g.tensor_bytes(t), t.n_elements() as usize)?;
                if v.len() != head_dim / 2 {
                    return Err(Error::format(
                        &g.path,
                        "rope_freqs.weight",
                        format!("{} entries for head dim {head_dim}", v.len()),
                    ));
                }
                Some(v)
            }
            None => None,
        };
        let scaled = |theta: f64, linear: Option<f64>| -> Vec<f32> {
            let mut f = default_inv_freq(theta, head_dim);
            if let Some(ff) = &freq_factors {
                f.iter_mut().zip(ff).for_each(|(f, d)| *f /= d);
            }
            if let Some(s) = linear {
                f.iter_mut().for_each(|f| *f = (*f as f64 / s) as f32);
            }
            f
        };
        let linear = match (scaling_type.as_deref(), scaling_factor) {
            (None | Some("none"), _) => None,
            (Some("linear"), Some(f)) if f > 0.0 => Some(f),
            (Some("linear"), _) => None,
            (Some(other), _) => {
                return Err(Error::Unsupported(format!("{}: RoPE scaling type {other:?}", g.path.display())));
            }
        };

        let tokens_bos = g.opt_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32);
        let eos = g.opt_u64("tokenizer.ggml.eos_token_id")?.map(|v| v as u32);
        let mut eos_token_ids: Vec<u32> = eos.into_iter().collect();
        if let Some(eot) = g.opt_u64("tokenizer.ggml.eot_token_id")?
            && !eos_token_ids.contains(&(eot as u32))
        {
            eos_token_ids.push(eot as u32);
        }
        let name = g.opt_str("general.name")?.unwrap_or("").to_string();
        let tie_embeddings = g.tensor("output.weight").is_none();

        let common = Common {
            name,
            hidden_size,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            context_length,
            rms_eps,
            tie_embeddings,
            bos_token_id: tokens_bos,
            eos_token_ids,
        };
        let window = g.opt_u64(&k("attention.sliding_window"))?.map(|w| w as usize);
        let global = Rope {
            theta: base,
            inv_freq: scaled(base, linear),
            scaling: scaling_type.clone().or(freq_factors.as_ref().map(|_| "llama3 (rope_freqs)".into())),
        };
        let cfg = match arch {
            Arch::Llama => common.llama(global, window),
            Arch::Gemma3 => {
                // GGUF does not record Gemma 3's layer pattern: every sixth layer is global.
                let layers = (0..n_layers)
                    .map(|l| {
                        if (l + 1) % 6 == 0 || window.is_none() {
                            LayerSpec { window: None, rope: 1 }
                        } else {
                            LayerSpec { window, rope: 0 }
                        }
                    })
                    .collect();
                let local =
                    Rope { theta: 10000.0, inv_freq: default_inv_freq(10000.0, head_dim), scaling: None };
                let softcaps = (
                    g.opt_f64(&k("attn_logit_softcapping"))?.map(|v| v as f32),
                    g.opt_f64(&k("final_logit_softcapping"))?.map(|v| v as f32),
                );
                // GGUF does not record query_pre_attn_scalar; Gemma 3 below 27B uses head_dim.
                common.gemma3(
                    NormKind::Plain,
                    1.0 / (head_dim as f32).sqrt(),
                    softcaps,
                    local,
                    global,
                    layers,
                )
            }
        };
        cfg.validate(&g.path)?;
        Ok(cfg)
    }

    /// From a Hugging Face `config.json` (plus `generation_config.json`'s EOS ids when given).
    pub fn from_hf(path: &Path, json: &Json, generation: Option<&Json>) -> Result<Self> {
        // Multimodal Gemma 3 checkpoints nest the language model's config.
        let (json, model_type) = match json.get("text_config") {
            Some(t) if t.is_object() => {
                (t, t.get("model_type").and_then(Json::as_str).unwrap_or("gemma3_text"))
            }
            _ => (json, json.get("model_type").and_then(Json::as_str).unwrap_or("")),
        };
        let arch = match model_type {
            "llama" | "mistral" => Arch::Llama,
            "gemma3_text" | "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: model_type {other:?} (scalpel runs llama, mistral and gemma3_text)",
                    path.display()
                )));
            }
        };
        let field_err = |f: &str, d: &str| Error::format(path, f, d.to_string());
        let uint = |f: &str| -> Result<Option<usize>> {
            match json.get(f) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|v| Some(v as usize))
                    .ok_or_else(|| field_err(f, &format!("expected an unsigned integer, found {v}"))),
            }
        };
        let req = |f: &str| uint(f)?.ok_or_else(|| field_err(f, "missing"));
        let float = |f: &str| -> Result<Option<f64>> {
            match json.get(f) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => {
                    v.as_f64().map(Some).ok_or_else(|| field_err(f, &format!("expected a number, found {v}")))
                }
            }
        };
        let hidden_size = req("hidden_size")?;
        let n_layers = req("num_hidden_layers")?;
        let n_heads = req("num_attention_heads")?;
        let n_kv_heads = uint("num_key_value_heads")?.unwrap_or(n_heads);
        let head_dim = uint("head_dim")?.unwrap_or(hidden_size.checked_div(n_heads).unwrap_or(0));
        let intermediate_size = req("intermediate_size")?;
        let vocab_size = req("vocab_size")?;
        let context_length = uint("max_position_embeddings")?.unwrap_or(2048);
        // Checked before anything is sized from them (a RoPE table of head_dim / 2 entries).
        check_dims(
            path,
            &[
                ("hidden_size", hidden_size),
                ("num_hidden_layers", n_layers),
                ("num_attention_heads", n_heads),
                ("num_key_value_heads", n_kv_heads),
                ("head_dim", head_dim),
                ("intermediate_size", intermediate_size),
                ("vocab_size", vocab_size),
                ("max_position_embeddings", context_length),
            ],
        )?;
        let rms_eps = float("rms_norm_eps")?.unwrap_or(1e-6) as f32;
        // transformers ≥ 5 nests RoPE settings in rope_parameters (per layer type for Gemma 3).
        let rope_params = json.get("rope_parameters").filter(|v| v.is_object());
        // `theta` is the base the older config format gives for this layer type (rope_theta for
        // global layers, Gemma's rope_local_base_freq for sliding ones); rope_scaling in that
        // format applies to global layers only.
        let rope_for = |layer_type: &str, theta: f64| -> Result<(f64, Vec<f32>, Option<String>)> {
            let params = match rope_params {
                Some(p) if p.get(layer_type).is_some_and(Json::is_object) => p.get(layer_type),
                Some(p) => Some(p),
                None if layer_type == "full_attention" => json.get("rope_scaling").filter(|v| v.is_object()),
                None => None,
            };
            let theta = params.and_then(|p| p.get("rope_theta")).and_then(Json::as_f64).unwrap_or(theta);
            let rope_type = params
                .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
                .and_then(Json::as_str)
                .unwrap_or("default");
            let num = |key: &str| -> Result<f64> {
                params
                    .and_then(|p| p.get(key))
                    .and_then(Json::as_f64)
                    .ok_or_else(|| field_err("rope_scaling", &format!("{rope_type} scaling needs {key}")))
            };
            let base = default_inv_freq(theta, head_dim);
            Ok(match rope_type {
                "default" => (theta, base, None),
                "linear" => {
                    let f = num("factor")?;
                    (
                        theta,
                        base.iter().map(|x| (*x as f64 / f) as f32).collect(),
                        Some(format!("linear ×{f}")),
                    )
                }
                "llama3" => {
                    let s = Llama3Scaling {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?,
                    };
                    (theta, llama3_inv_freq(theta, head_dim, s), Some(format!("llama3 ×{}", s.factor)))
                }
                other => {
                    return Err(Error::Unsupported(format!("{}: RoPE type {other:?}", path.display())));
                }
            })
        };

        let ids = |v: Option<&Json>| -> Vec<u32> {
            match v {
                Some(Json::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
                Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
                _ => vec![],
            }
        };
        let mut eos_token_ids = ids(json.get("eos_token_id"));
        for id in ids(generation.and_then(|g| g.get("eos_token_id"))) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let bos_token_id = ids(json.get("bos_token_id")).first().copied();
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();

        let common = Common {
            name,
            hidden_size,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            context_length,
            rms_eps,
            tie_embeddings: json
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(arch == Arch::Gemma3),
            bos_token_id,
            eos_token_ids,
        };
        let rope = |layer_type: &str, theta: f64| -> Result<Rope> {
            let (theta, inv_freq, scaling) = rope_for(layer_type, theta)?;
            Ok(Rope { theta, inv_freq, scaling })
        };
        let cfg = match arch {
            Arch::Llama => {
                let global = rope("full_attention", float("rope_theta")?.unwrap_or(10000.0))?;
                common.llama(global, uint("sliding_window")?)
            }
            Arch::Gemma3 => {
                let local = rope("sliding_attention", float("rope_local_base_freq")?.unwrap_or(10000.0))?;
                let global = rope("full_attention", float("rope_theta")?.unwrap_or(1_000_000.0))?;
                let window = uint("sliding_window")?;
                let layer_types: Vec<String> = match json.get("layer_types").and_then(Json::as_array) {
                    Some(a) => a.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect(),
                    None => {
                        let every = uint("sliding_window_pattern")?.unwrap_or(6).max(1);
                        (0..n_layers)
                            .map(|l| {
                                if (l + 1) % every == 0 { "full_attention" } else { "sliding_attention" }
                                    .to_string()
                            })
                            .collect()
                    }
                };
                let layers = layer_types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(LayerSpec { window: None, rope: 1 }),
                        "sliding_attention" => Ok(LayerSpec { window, rope: 0 }),
                        other => Err(field_err("layer_types", &format!("unknown layer type {other:?}"))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let qpas = float("query_pre_attn_scalar")?.unwrap_or(head_dim as f64);
                let softcaps = (
                    float("attn_logit_softcapping")?.map(|v| v as f32),
                    float("final_logit_softcapping")?.map(|v| v as f32),
                );
                common.gemma3(NormKind::OnePlus, (qpas as f32).powf(-0.5), softcaps, local, global, layers)
            }
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

/// Every dimension must be positive and at most 2^24 (16.7M): no real model comes near, and the
/// products of larger values would size allocations by what a file merely claims.
fn check_dims(origin: &Path, dims: &[(&str, usize)]) -> Result<()> {
    for &(field, v) in dims {
        if v == 0 || v > MAX_DIM {
            return Err(Error::format(origin, field, format!("{v} is out of range (1..={MAX_DIM})")));
        }
    }
    Ok(())
}

const MAX_DIM: usize = 1 << 24;

/// √hidden rounded to the dtype the reference multiplies in. Gemma's reference builds the
/// normalizer as a tensor of the activations' dtype; in float32 that is this f32.
fn gemma_embed_scale(hidden: usize) -> f32 {
    (hidden as f32).sqrt()
}
