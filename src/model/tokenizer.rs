//! Tokenizers: `tokenizer.json` as is, or built from a GGUF file's metadata the way Hugging Face
//! transformers builds it (so token ids match the reference on the same file), and chat
//! templates rendered with minijinja.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::gguf::GgufFile;
use crate::error::{Error, Result};

/// llama.cpp's token types (tokenizer.ggml.token_type).
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Whether plain encoding puts BOS in front (what the model's metadata asks for).
    pub adds_bos: bool,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Encodes a prompt as the model expects plain text: special tokens (BOS) added as the
    /// model's metadata says.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, true).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Encodes text that already carries its special tokens (a rendered chat template).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Whether `id` is a special or control token (BOS, EOS, chat markers, a byte that decodes
    /// to a control character): never a word a user means.
    pub fn is_special(&self, id: u32) -> bool {
        if self.inner.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special) {
            return true;
        }
        match self.inner.decode(&[id], false) {
            Ok(text) => text.is_empty() || text.chars().all(|c| c.is_control() && !c.is_whitespace()),
            Err(_) => true,
        }
    }

    /// The vocabulary entry for `id` as the tokenizer spells it (e.g. `Ġcapital`, `▁the`).
    pub fn piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// An incremental decoder for streaming: yields text only once it is complete UTF-8.
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream { tok: self, ids: Vec::new(), emitted: 0 }
    }

    /// Uses `template` when the model brought none (Gemma GGUFs carry no chat template).
    pub fn set_default_chat_template(&mut self, template: &str) {
        if self.chat_template.is_none() {
            self.chat_template = Some(template.to_string());
        }
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Renders the model's own chat template for one user message, with the generation prompt
    /// appended, as transformers' `apply_chat_template(..., add_generation_prompt=True)` does.
    pub fn apply_chat_template(&self, user_message: &str) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::Invalid("--chat: this model has no chat template".into()))?;
        render_chat_template(
            template,
            &[("user", user_message)],
            self.bos_token.as_deref().unwrap_or(""),
            self.eos_token.as_deref().unwrap_or(""),
        )
    }

    /// From a GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = &g.path;
        let model = g.opt_str("tokenizer.ggml.model")?.ok_or_else(|| {
            Error::Tokenizer(format!("{}: no tokenizer.ggml.model in the file", path.display()))
        })?;
        let tokens = g
            .opt_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| {
                Error::Tokenizer(format!("{}: no tokenizer.ggml.tokens in the file", path.display()))
            })?
            .strings()
            .ok_or_else(|| Error::format(path, "tokenizer.ggml.tokens", "not an array of strings"))?;
        let n = tokens.len();
        let types: Vec<i32> = match g.opt_array("tokenizer.ggml.token_type")? {
            Some(a) => a
                .numbers()
                .ok_or_else(|| Error::format(path, "tokenizer.ggml.token_type", "not numeric"))?
                .into_iter()
                .map(|x| x as i32)
                .collect(),
            None => vec![],
        };
        if !types.is_empty() && types.len() != n {
            return Err(Error::format(
                path,
                "tokenizer.ggml.token_type",
                format!("{} entries for {n} tokens", types.len()),
            ));
        }
        let special_id = |key: &str| -> Result<Option<u32>> {
            match g.opt_u64(key)? {
                Some(id) if id as usize >= n => {
                    Err(Error::format(path, key, format!("{id} is outside the {n}-token vocabulary")))
                }
                Some(id) => Ok(Some(id as u32)),
                None => Ok(None),
            }
        };
        let bos = special_id("tokenizer.ggml.bos_token_id")?;
        let eos = special_id("tokenizer.ggml.eos_token_id")?;
        let unk = special_id("tokenizer.ggml.unknown_token_id")?;
        let pad = special_id("tokenizer.ggml.padding_token_id")?;
        let arch = g.opt_str("general.architecture")?.unwrap_or("");

        let (mut inner, add_bos_default) = match model {
            "gpt2" => {
                let merges = read_merges(g)?.ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "{}: a gpt2 tokenizer needs tokenizer.ggml.merges",
                        path.display()
                    ))
                })?;
                let pre = g.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
                (byte_level_bpe(tokens, merges, pre)?, false)
            }
            "llama" => {
                let scores: Vec<f32> = match g.opt_array("tokenizer.ggml.scores")? {
                    Some(a) => a
                        .numbers()
                        .ok_or_else(|| Error::format(path, "tokenizer.ggml.scores", "not numeric"))?
                        .into_iter()
                        .map(|x| x as f32)
                        .collect(),
                    None => vec![0.0; n],
                };
                if scores.len() != n {
                    return Err(Error::format(
                        path,
                        "tokenizer.ggml.scores",
                        format!("{} entries for {n} tokens", scores.len()),
                    ));
                }
                let merges = read_merges(g)?;
                let unk_piece = unk.map(|i| tokens[i as usize].clone());
                let add_prefix = g.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                let flavour = if arch.starts_with("gemma") {
                    SpmFlavour::Gemma
                } else {
                    SpmFlavour::Llama { add_prefix }
                };
                (sentencepiece_bpe(tokens, &scores, merges, unk_piece, flavour)?, true)
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: tokenizer model {other:?} (supported: gpt2 byte-level BPE, llama SentencePiece)",
                    path.display()
                )));
            }
        };

        // Tokens the file marks as control are special; user-defined ones are matched whole in
        // text. Byte-level vocabularies sometimes mark a token control that is not spelled in
        // the byte alphabet: transformers skips those (adding them would grow the vocabulary).
        let byte_level = model == "gpt2";
        let alphabet: Option<std::collections::HashSet<char>> =
            byte_level.then(|| bytes_to_unicode().into_iter().collect());
        let mut control: Vec<AddedToken> = Vec::new();
        for (i, t) in types.iter().enumerate() {
            if *t == TOKEN_CONTROL
                && alphabet.as_ref().is_none_or(|a| tokens[i].chars().all(|c| a.contains(&c)))
            {
                control.push(AddedToken::from(tokens[i].clone(), true).normalized(false));
            }
        }
        for id in [bos, eos, unk, pad].into_iter().flatten() {
            let t = &tokens[id as usize];
            if !control.iter().any(|c| &c.content == t) {
                control.push(AddedToken::from(t.clone(), true).normalized(false));
            }
        }
        inner.add_special_tokens(control).map_err(tok_err)?;
        let user: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(i, t)| **t == TOKEN_USER_DEFINED && inner.token_to_id(&tokens[*i]).is_some())
            .map(|(i, _)| AddedToken::from(tokens[i].clone(), false).normalized(false))
            .collect();
        if !user.is_empty() {
            inner.add_tokens(user).map_err(tok_err)?;
        }

        let adds_bos = g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
        if adds_bos {
            let id = bos.ok_or_else(|| {
                Error::format(path, "tokenizer.ggml.bos_token_id", "missing, but add_bos_token is set")
            })?;
            let piece = tokens[id as usize].clone();
            let template = TemplateProcessing::builder()
                .try_single(format!("{piece}:0 $A:0"))
                .and_then(|b| b.try_pair(format!("{piece}:0 $A:0 {piece}:1 $B:1")))
                .map_err(tok_err)?
                .special_tokens(vec![(piece, id)])
                .build()
                .map_err(tok_err)?;
            inner.with_post_processor(Some(template));
        }
        Ok(Tokenizer {
            inner,
            chat_template: g.opt_str("tokenizer.chat_template")?.map(str::to_string),
            bos_token: bos.map(|i| tokens[i as usize].clone()),
            eos_token: eos.map(|i| tokens[i as usize].clone()),
            adds_bos,
        })
    }

    /// From a Hugging Face model directory: `tokenizer.json`, plus `tokenizer_config.json` for the
    /// chat template and the names of the special tokens.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(Error::Tokenizer(format!(
                "{}: no tokenizer.json (scalpel needs the fast-tokenizer file)",
                dir.display()
            )));
        }
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let inner = parse_tokenizer_json(&file, &bytes)?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Json = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
            serde_json::from_str(&text).map_err(|e| Error::format(&config_path, "JSON", e.to_string()))?
        } else {
            Json::Null
        };
        let token_name = |key: &str| -> Option<String> {
            match config.get(key) {
                Some(Json::String(s)) => Some(s.clone()),
                Some(Json::Object(o)) => o.get("content").and_then(Json::as_str).map(str::to_string),
                _ => None,
            }
        };
        let mut chat_template = match config.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.is_file() {
            chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?);
        }
        let bos_token = token_name("bos_token");
        let adds_bos = match &bos_token {
            Some(b) => {
                let probe = inner.encode("a", true).map_err(tok_err)?;
                probe.get_ids().first().copied() == inner.token_to_id(b)
            }
            None => false,
        };
        Ok(Tokenizer { inner, chat_template, bos_token, eos_token: token_name("eos_token"), adds_bos })
    }
}

/// Reads a tokenizer.json. The tokenizers crate panics on some malformed files (an `expect` in its
/// decoder deserializer, found by fuzzing); that panic is caught here and becomes an error.
pub fn parse_tokenizer_json(path: &Path, bytes: &[u8]) -> Result<tokenizers::Tokenizer> {
    let parsed = crate::error::catch_panic(|| tokenizers::Tokenizer::from_bytes(bytes));
    match parsed {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(Error::format(path, "tokenizer", e.to_string())),
        Err(msg) => {
            Err(Error::format(path, "tokenizer", format!("the tokenizers crate failed on it ({msg})")))
        }
    }
}

fn read_merges(g: &GgufFile) -> Result<Option<Vec<(String, String)>>> {
    let Some(a) = g.opt_array("tokenizer.ggml.merges")? else {
        return Ok(None);
    };
    let list = a
        .strings()
        .ok_or_else(|| Error::format(&g.path, "tokenizer.ggml.merges", "not an array of strings"))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| {
                Error::format(&g.path, "tokenizer.ggml.merges", format!("entry {i} ({m:?}) is not a pair"))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// GPT-2's map from bytes to printable characters, in which byte-level vocabularies are spelled.
pub fn bytes_to_unicode() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.into_iter().zip(chars) {
        table[b as usize] = char::from_u32(c).expect("valid code point");
    }
    table
}

/// The regexes that split text before BPE, keyed by `tokenizer.ggml.pre`. Each list is applied
/// in order, every match isolated, as llama.cpp does for that name.
fn pre_tokenizer_splits(pre: &str) -> Option<Vec<&'static str>> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    // StarCoder-style: digits one by one, then GPT-2's split.
    const STARCODER: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            vec![LLAMA3]
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => vec![QWEN2],
        "gpt-2" | "gpt2" | "default" | "phi-2" | "olmo" | "jais" => vec![GPT2],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![r"\p{N}", STARCODER]
        }
        _ => return None,
    })
}

fn byte_level_bpe(
    tokens: &[String],
    merges: Vec<(String, String)>,
    pre: &str,
) -> Result<tokenizers::Tokenizer> {
    let spelling = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        // A token written outside the byte alphabet (some converters store added tokens as plain
        // text) is respelled byte by byte, so BPE can reach it.
        let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
            t.clone()
        } else {
            t.bytes().map(|b| spelling[b as usize]).collect()
        };
        vocab.insert(spelled, i as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("building BPE: {e}")))?;
    let splits = pre_tokenizer_splits(pre).ok_or_else(|| {
        Error::Unsupported(format!(
            "pre-tokenizer {pre:?} (known: llama3/llama-bpe, qwen2, gpt-2/default, smollm/starcoder families)"
        ))
    })?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for re in splits {
        let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(PreSequence::new(steps)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

enum SpmFlavour {
    /// Gemma: no prefix space, spaces become ▁ in a normalizer, runs of spaces are tokens.
    Gemma,
    /// Llama/Mistral SentencePiece: ▁ prepended to the first word when `add_prefix`.
    Llama { add_prefix: bool },
}

/// A SentencePiece vocabulary as a BPE with byte fallback. When the file lists no merges they are
/// recovered from the vocabulary the way transformers does (`generate_merges`), ranked by score —
/// or, for Gemma, whose scores do not follow merge order, by position in the file.
fn sentencepiece_bpe(
    tokens: &[String],
    scores: &[f32],
    merges: Option<Vec<(String, String)>>,
    unk: Option<String>,
    flavour: SpmFlavour,
) -> Result<tokenizers::Tokenizer> {
    let spelled: Vec<String> = match flavour {
        // Gemma stores tokens of two or more spaces as real spaces; its tokenizer looks them up as ▁.
        SpmFlavour::Gemma => tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.trim().is_empty() {
                    "▁".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect(),
        SpmFlavour::Llama { .. } => tokens.to_vec(),
    };
    let mut vocab = Vocab::default();
    for (i, t) in spelled.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let merges = match merges {
        Some(m) => m,
        None => {
            let rank: Vec<f64> = match flavour {
                SpmFlavour::Gemma => (0..spelled.len()).map(|i| -(i as f64)).collect(),
                SpmFlavour::Llama { .. } => scores.iter().map(|&s| s as f64).collect(),
            };
            generate_merges(&spelled, &vocab, &rank)
        }
    };
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).fuse_unk(true).byte_fallback(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder.build().map_err(|e| Error::Tokenizer(format!("building BPE: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let mut decoders: Vec<DecoderWrapper> = vec![
        tokenizers::decoders::DecoderWrapper::Replace(Replace::new("▁", " ").map_err(tok_err)?),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    match flavour {
        SpmFlavour::Gemma => {
            tok.with_normalizer(Some(Replace::new(" ", "▁").map_err(tok_err)?)).map_err(tok_err)?;
            let split = Split::new(
                SplitPattern::String(" ".into()),
                SplitDelimiterBehavior::MergedWithPrevious,
                false,
            )
            .map_err(tok_err)?;
            tok.with_pre_tokenizer(Some(split));
        }
        SpmFlavour::Llama { add_prefix } => {
            let scheme = if add_prefix { PrependScheme::First } else { PrependScheme::Never };
            tok.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
            if add_prefix {
                decoders.push(Strip::new(' ', 1, 0).into());
            }
        }
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// Every split of every token into two tokens of the vocabulary, best first: by the merged
/// token's rank (descending), then longer left part, then longer right part — transformers'
/// `generate_merges` with scores.
fn generate_merges(tokens: &[String], vocab: &Vocab, rank: &[f64]) -> Vec<(String, String)> {
    struct Cand {
        rank: f64,
        left_len: usize,
        right_len: usize,
        order: usize,
        left: String,
        right: String,
    }
    // transformers iterates a dict built from the vocabulary: one entry per distinct piece, in
    // the position of its first occurrence, holding the last occurrence's score.
    let mut first_pos: HashMap<&str, usize> = HashMap::new();
    let mut last_rank: HashMap<&str, f64> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        first_pos.entry(t.as_str()).or_insert(i);
        last_rank.insert(t.as_str(), rank[i]);
    }
    let mut cands: Vec<Cand> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if first_pos[t.as_str()] != i {
            continue;
        }
        let r = last_rank[t.as_str()];
        let mut local: Vec<(u32, u32, &str, &str)> = Vec::new();
        for (split, _) in t.char_indices().skip(1) {
            let (l, rr) = t.split_at(split);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(rr)) {
                local.push((li, ri, l, rr));
            }
        }
        local.sort_by_key(|&(li, ri, _, _)| (li, ri));
        for (_, _, l, rr) in local {
            cands.push(Cand {
                rank: r,
                left_len: l.chars().count(),
                right_len: rr.chars().count(),
                order: cands.len(),
                left: l.to_string(),
                right: rr.to_string(),
            });
        }
    }
    // Python's sorted(reverse=True) is stable: equal keys keep their original order.
    cands.sort_by(|a, b| {
        b.rank
            .total_cmp(&a.rank)
            .then(b.left_len.cmp(&a.left_len))
            .then(b.right_len.cmp(&a.right_len))
            .then(a.order.cmp(&b.order))
    });
    cands.into_iter().map(|c| (c.left, c.right)).collect()
}

/// Incremental detokenization for streaming output.
pub struct TokenStream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl TokenStream<'_> {
    /// Adds a token; returns the text that became final with it (possibly empty when the token
    /// is the first byte of a multi-byte character).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let out = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(out)
    }

    /// Whatever is left (an incomplete character at the end shows as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tok.decode(&self.ids)?;
        let out = if text.is_char_boundary(self.emitted.min(text.len())) {
            text[self.emitted.min(text.len())..].to_string()
        } else {
            String::new()
        };
        self.emitted = text.len();
        Ok(out)
    }
}

/// Gemma's turn format, for Gemma files without a template: user and model turns, the
/// assistant role spelled `model`, a system message folded into the first user turn.
pub const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}\
{% set ns = namespace(system='') %}\
{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.system = m['content'] + '\n\n' %}{% endif %}{% endfor %}\
{% set first = namespace(done=false) %}\
{% for m in messages if m['role'] != 'system' %}\
{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}\
{% set text = (ns.system if not first.done and role == 'user' else '') + m['content'] | trim %}\
{% set first.done = true %}\
{{ '<start_of_turn>' + role + '\n' + text + '<end_of_turn>\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Instructions a chat template may run; real templates use a few thousand.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// Renders a Hugging Face chat template. transformers compiles templates with `trim_blocks` and
/// `lstrip_blocks` and offers `raise_exception`; Python string methods come from pycompat.
pub fn render_chat_template(
    template: &str,
    messages: &[(&str, &str)],
    bos: &str,
    eos: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // Templates come from model files: bound the work one may do (a loop over range(10**9)).
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Tokenizer(format!("template syntax: {e}")))?,
    );
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| Error::Tokenizer(format!("chat template does not parse: {e}")))?;
    let messages: Vec<minijinja::Value> = messages
        .iter()
        .map(|(role, content)| minijinja::context! { role => *role, content => *content })
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => bos,
                eos_token => eos,
            })
        })
        .map_err(|e| Error::Tokenizer(format!("chat template failed to render: {e}")))
}
