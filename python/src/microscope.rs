//! The microscope for Python: each call names an operation and passes its arguments as JSON (the
//! package's typed wrappers have checked and converted them); each runs the library's own interp
//! function — the one the CLI command runs — and answers JSON that the package turns into a result
//! object. One entry point keeps this layer to argument plumbing.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use scalpel::Error;
use scalpel::backend::Backend;
use scalpel::forward::Model;
use scalpel::interp::attention::{self, HeadScore};
use scalpel::interp::embeddings::{Table, analogy, neighbours, word_tokens};
use scalpel::interp::examples::{Corpus, Probe, ScanOptions, html_table, scan_corpus};
use scalpel::interp::lens::logit_lens;
use scalpel::interp::patchscope::{self, Scope};
use scalpel::interp::pca;
use scalpel::interp::render::charts::scatter_plot;
use scalpel::interp::similarity::{Centre, compare};
use scalpel::interp::steer::{self, Method, StreamPoint};
use scalpel::interp::words::{quote, require_word, resolve_token, token_strings};
use scalpel::model::tokenizer::Tokenizer;

fn args<T: DeserializeOwned>(op: &str, json: &str) -> scalpel::Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Invalid(format!("{op}: bad arguments: {e}")))
}

#[derive(Deserialize)]
struct LensArgs {
    ids: Vec<u32>,
    k: usize,
}

#[derive(Deserialize)]
struct HeadArgs {
    ids: Vec<u32>,
    /// sinks, find or focused.
    rank: String,
    #[serde(default)]
    query: usize,
    #[serde(default)]
    keys: Vec<usize>,
}

#[derive(Deserialize)]
struct WordArgs {
    tokens: Vec<String>,
    word: String,
}

#[derive(Deserialize)]
struct NeighbourArgs {
    token: Option<String>,
    id: Option<u32>,
    top: usize,
    include_special: bool,
}

#[derive(Deserialize)]
struct AnalogyArgs {
    expression: String,
    top: usize,
    include_special: bool,
}

#[derive(Deserialize)]
struct SimilarityArgs {
    a: String,
    a_word: String,
    others: Vec<(String, String)>,
    /// None, "contexts", or reference texts.
    center: Option<Value>,
}

#[derive(Deserialize)]
struct PatchscopeArgs {
    source: String,
    source_pos: i64,
    /// None: the CLI's identity prompt and its placeholder.
    target: Option<String>,
    placeholder: String,
    source_layers: Vec<usize>,
    target_layer: Option<usize>,
    max_tokens: usize,
}

#[derive(Deserialize)]
struct PcaArgs {
    prompts: Vec<Vec<u32>>,
    layer: usize,
    position: i64,
}

#[derive(Deserialize)]
struct ExamplesArgs {
    /// A corpus file (.txt or .jsonl), or the documents themselves.
    corpus: Option<String>,
    documents: Option<Vec<String>>,
    layer: Option<usize>,
    neuron: Option<usize>,
    /// A control vector's directions, and what to call it.
    directions: Option<std::collections::BTreeMap<usize, Vec<f32>>>,
    direction_name: Option<String>,
    head: Option<usize>,
    key: Option<String>,
    top: usize,
    window: usize,
    context: usize,
    include_first: bool,
    max_documents: Option<usize>,
}

#[derive(Deserialize)]
struct SteerArgs {
    positive: Vec<Vec<u32>>,
    negative: Vec<Vec<u32>>,
    layers: Vec<usize>,
    point: String,
    method: String,
}

/// Runs microscope operation `op` with JSON arguments `json`; `between` runs between steps of a long
/// operation (each document of a corpus scan) and may stop it with an error (Ctrl-C).
pub fn call<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    op: &str,
    json: &str,
    mut between: impl FnMut() -> scalpel::Result<()>,
) -> scalpel::Result<Value> {
    let n_layers = model.config.n_layers;
    match op {
        "lens" => {
            let a: LensArgs = args(op, json)?;
            let lens = logit_lens(model, &a.ids, a.k.max(1))?;
            Ok(json!({ "layers": lens.labelled(tok, &token_strings(tok, &a.ids)?)? }))
        }
        "heads" => {
            let a: HeadArgs = args(op, json)?;
            let all: Vec<usize> = (0..n_layers).collect();
            let maps = attention::maps(model, &a.ids, &all)?;
            let ranked: Vec<HeadScore> = match a.rank.as_str() {
                "sinks" => attention::sinks(&maps),
                "focused" => attention::focused(&maps),
                "find" => {
                    if a.query >= a.ids.len() || a.keys.iter().any(|&k| k > a.query) {
                        return Err(Error::Invalid(format!(
                            "query {} and keys {:?}: keys must come at or before the query, inside the {} tokens",
                            a.query,
                            a.keys,
                            a.ids.len()
                        )));
                    }
                    attention::find(&maps, a.query, &a.keys)
                }
                other => return Err(Error::Invalid(format!("rank {other:?}: sinks, find or focused"))),
            };
            Ok(json!(ranked))
        }
        "layers" => {
            #[derive(Deserialize)]
            struct Spec {
                spec: String,
            }
            let a: Spec = args(op, json)?;
            Ok(json!(scalpel::interp::parse_layers(&a.spec, n_layers)?))
        }
        "find_word" => {
            let a: WordArgs = args(op, json)?;
            Ok(json!(require_word(&a.tokens, &a.word, "the word")?))
        }
        "neighbors" => {
            let a: NeighbourArgs = args(op, json)?;
            let ids = match (a.id, &a.token) {
                (Some(id), _) => vec![id],
                (None, Some(w)) => word_tokens(tok, w)?,
                (None, None) => return Err(Error::Invalid("give a token or an id".into())),
            };
            let emb = neighbours(model, tok, Table::Embedding, &ids, a.top, a.include_special)?;
            let head = match model.config.tie_embeddings {
                true => None,
                false => Some(neighbours(model, tok, Table::Unembedding, &ids, a.top, a.include_special)?),
            };
            Ok(json!({ "ids": ids, "tokens": token_strings(tok, &ids)?, "embedding": emb, "lm_head": head }))
        }
        "analogy" => {
            let a: AnalogyArgs = args(op, json)?;
            let r = analogy(model, tok, Table::Embedding, &a.expression, a.top, a.include_special)?;
            let terms = r
                .terms
                .iter()
                .map(|(sign, word, ids)| {
                    Ok(json!({"sign": sign, "word": word, "ids": ids, "tokens": token_strings(tok, ids)?}))
                })
                .collect::<scalpel::Result<Vec<_>>>()?;
            Ok(json!({ "terms": terms, "neighbours": r.neighbours }))
        }
        "similarity" => {
            let a: SimilarityArgs = args(op, json)?;
            let centre = match a.center {
                None | Some(Value::Null) | Some(Value::Bool(false)) => Centre::None,
                Some(Value::Bool(true)) => Centre::Contexts,
                Some(Value::Array(texts)) => Centre::Texts(
                    texts.iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect(),
                    "the reference texts".into(),
                ),
                Some(other) => {
                    return Err(Error::Invalid(format!("center {other}: a bool or a list of texts")));
                }
            };
            Ok(json!(compare(model, tok, &a.a, &a.a_word, &a.others, &centre)?))
        }
        "patchscope" => {
            let a: PatchscopeArgs = args(op, json)?;
            let s = Scope {
                source: &a.source,
                source_pos: a.source_pos,
                target: a.target.as_deref().unwrap_or(patchscope::DEFAULT_TARGET),
                placeholder: &a.placeholder,
                source_layers: a.source_layers,
                target_layer: a.target_layer,
                max_tokens: a.max_tokens,
            };
            patchscope::scope(model, tok, &s, |_| Ok(()))
        }
        "pca" => {
            let a: PcaArgs = args(op, json)?;
            Ok(json!(pca::of_prompts(model, &a.prompts, a.layer, a.position)?))
        }
        "steer_build" => {
            let a: SteerArgs = args(op, json)?;
            let point = match a.point.as_str() {
                "resid_post" => StreamPoint::ResidPost,
                "resid_pre" => StreamPoint::ResidPre,
                other => return Err(Error::Invalid(format!("point {other:?}: resid_post or resid_pre"))),
            };
            let method = match a.method.as_str() {
                "mean" => Method::Mean,
                "pca" => Method::Pca,
                other => return Err(Error::Invalid(format!("method {other:?}: mean or pca"))),
            };
            let mut directions = steer::build(model, &a.positive, &a.negative, &a.layers, point, method)?;
            // As `steer build`: llama.cpp control vectors have no direction for block 0's output.
            directions.remove(&0);
            if directions.is_empty() {
                return Err(Error::Invalid("no direction left (only layer 0 was selected)".into()));
            }
            Ok(json!({ "directions": directions, "model_hint": model.config.arch.name() }))
        }
        "top_examples" => {
            let a: ExamplesArgs = args(op, json)?;
            let need_layer =
                || a.layer.ok_or_else(|| Error::Invalid("a layer is needed with a neuron or a head".into()));
            let (probe, what) = match (a.neuron, &a.directions, a.head) {
                (Some(neuron), None, None) => {
                    let layer = need_layer()?;
                    (Probe::Neuron { layer, neuron }, format!("neuron {neuron} of blocks.{layer}.mlp_post"))
                }
                (None, Some(d), None) => {
                    let name = a.direction_name.as_deref().unwrap_or("the direction");
                    let probe = Probe::direction(d, a.layer, name)?;
                    let Probe::Direction { layer, .. } = probe else { unreachable!("a direction probe") };
                    (probe, format!("{name} on blocks.{layer}.resid_post"))
                }
                (None, None, Some(head)) => {
                    let layer = need_layer()?;
                    let (key, text) = resolve_token(tok, a.key.as_deref().unwrap_or_default(), "the key")?;
                    (
                        Probe::HeadToToken { layer, head, key },
                        format!("layer {layer} head {head}'s attention to {}", quote(&text)),
                    )
                }
                _ => return Err(Error::Invalid("choose one of a neuron, a direction or a head".into())),
            };
            let opts = ScanOptions {
                top: a.top,
                window: a.window,
                context: a.context,
                include_first: a.include_first,
                max_documents: a.max_documents,
            };
            let (examples, documents) = match (&a.corpus, a.documents) {
                (Some(path), None) => {
                    let mut corpus = Corpus::open(std::path::Path::new(path))?;
                    scan_corpus(model, tok, &probe, &opts, || corpus.next_document(), &mut between)?
                }
                (None, Some(docs)) => {
                    let mut docs = docs.into_iter();
                    scan_corpus(model, tok, &probe, &opts, || Ok(docs.next()), &mut between)?
                }
                _ => return Err(Error::Invalid("give a corpus file or a list of documents".into())),
            };
            if documents == 0 {
                return Err(Error::Invalid("the corpus holds no documents".into()));
            }
            let ex: Vec<Value> = examples.iter().map(|e| e.to_json(tok)).collect::<scalpel::Result<_>>()?;
            let label = model.config.arch.name();
            Ok(json!({
                "probe": what, "documents": documents, "examples": ex,
                "html": html_table(&what, label, documents, &examples, tok)?,
            }))
        }
        other => Err(Error::Invalid(format!("unknown microscope operation {other:?}"))),
    }
}

#[derive(Deserialize)]
struct ScatterArgs {
    title: String,
    x_title: String,
    y_title: String,
    points: Vec<(f64, f64)>,
    labels: Vec<String>,
    groups: Vec<String>,
}

/// A picture drawn by the CLI's own chart code, as PNG bytes: `scatter` (the PCA map, labels kept
/// apart, coloured by group).
pub fn picture(op: &str, json: &str) -> scalpel::Result<Vec<u8>> {
    match op {
        "scatter" => {
            let a: ScatterArgs = args(op, json)?;
            scatter_plot(&a.title, &a.x_title, &a.y_title, &a.points, &a.labels, &a.groups)?.to_png()
        }
        other => Err(Error::Invalid(format!("unknown picture {other:?}"))),
    }
}
