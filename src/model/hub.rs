//! Hugging Face repo ids: found in the local HF cache, or downloaded with hf-hub when online
//! (from $HF_ENDPOINT when set, else huggingface.co).

use std::path::PathBuf;

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL: [&str; 3] = ["tokenizer_config.json", "generation_config.json", "chat_template.jinja"];

/// Looks like `org/name`: one slash, no path that exists locally.
pub fn looks_like_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && !a.starts_with('.')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)))
}

/// The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
pub fn hf_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => Cache::new(dir.into()),
        None => Cache::from_env(),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The snapshot directory holding the repo's files, downloading what is missing when allowed.
pub fn resolve(repo_id: &str) -> Result<PathBuf> {
    let cache = hf_cache();
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, "main".to_string());
    let cached = cache.repo(repo.clone());

    let weights_cached =
        |get: &dyn Fn(&str) -> Option<PathBuf>| -> std::result::Result<Vec<String>, Vec<String>> {
            if get("model.safetensors").is_some() {
                return Ok(vec!["model.safetensors".into()]);
            }
            let Some(index) = get("model.safetensors.index.json") else {
                return Err(vec!["model.safetensors (or model.safetensors.index.json)".into()]);
            };
            let shards = shard_names(&index).map_err(|e| vec![e.to_string()])?;
            let missing: Vec<String> = shards.iter().filter(|s| get(s).is_none()).cloned().collect();
            if missing.is_empty() { Ok(shards) } else { Err(missing) }
        };

    let get_cached = |f: &str| cached.get(f);
    let mut missing: Vec<String> =
        REQUIRED.iter().filter(|f| get_cached(f).is_none()).map(|s| s.to_string()).collect();
    if let Err(m) = weights_cached(&get_cached) {
        missing.extend(m);
    }
    if missing.is_empty() {
        let config = get_cached("config.json").expect("checked above");
        return Ok(config.parent().expect("a file has a parent").to_path_buf());
    }
    if offline() {
        return Err(Error::NotFound(format!(
            "{repo_id}: HF_HUB_OFFLINE is set and the local Hugging Face cache ({}) lacks {}",
            cache.path().display(),
            missing.join(", ")
        )));
    }

    let mut builder =
        hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(crate::progress::enabled());
    // Mirrors and private hubs are named the way huggingface_hub names them.
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    // hf-hub reads only the token file ($HF_HOME/token); the environment variable wins, as in Python.
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder
        .build()
        .map_err(|e| Error::NotFound(format!("{repo_id}: cannot start a Hugging Face client: {e}")))?;
    let remote = api.repo(repo);
    let fetch = |f: &str| -> Result<PathBuf> {
        remote.get(f).map_err(|e| {
            Error::NotFound(format!(
                "{repo_id}: could not download {f} from the Hugging Face Hub ({e}); without network, put the \
                 files in the local cache ({}) or pass a local model directory",
                cache.path().display()
            ))
        })
    };
    let config = fetch("config.json")?;
    fetch("tokenizer.json")?;
    for f in OPTIONAL {
        let _ = remote.get(f); // absent in many repos; their absence is not an error
    }
    match remote.get("model.safetensors.index.json") {
        Ok(index) => {
            for shard in shard_names(&index)? {
                fetch(&shard)?;
            }
        }
        Err(_) => {
            fetch("model.safetensors")?;
        }
    }
    Ok(config.parent().expect("a file has a parent").to_path_buf())
}

fn shard_names(index: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let mut names: Vec<String> = super::weights::parse_index(index, &text)?.into_values().collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(looks_like_repo_id("google/gemma-3-1b-it"));
        assert!(!looks_like_repo_id("model.gguf"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("./x"));
        assert!(!looks_like_repo_id("/abs"));
    }
}
