//! `scalpel top-examples`: the corpus contexts that most activate a neuron, a direction or a
//! head's attention to a token — a terminal table, JSON, and a self-contained HTML page.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device, resolve_layer};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::examples::{Example, Probe, TopK, scan_document};
use crate::interp::render::canvas::visible;
use crate::interp::steer::ControlVector;
use crate::interp::words::{quote, resolve_token};
use crate::model::ModelFiles;
use crate::model::tokenizer::Tokenizer;

#[derive(Args, Debug)]
#[command(long_about = "The contexts of a corpus that most activate one thing: a neuron (--layer --neuron: \
    blocks.L.mlp_post), a direction (--direction FILE: a steering-vector file, projected on \
    blocks.L.resid_post), or a head's attention to a token (--layer --head --key TOKEN: the attention \
    mass each query puts on that token). The corpus is a .txt file (documents separated by blank lines) \
    or .jsonl (one object per line with a \"text\" field), read as a stream and run in windows of \
    --window tokens. Special tokens (BOS, EOS) are never counted as examples, nor (without \
    --include-first) a window's first token.")]
pub struct TopExamplesArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The corpus: .txt (documents separated by blank lines) or .jsonl ({"text": ...} per line).
    #[arg(long, value_name = "FILE")]
    pub corpus: PathBuf,
    /// The layer (negative counts from the end); with --direction, default: the file's only layer.
    #[arg(long, allow_negative_numbers = true)]
    pub layer: Option<i64>,
    /// Score this neuron of blocks.L.mlp_post.
    #[arg(long, conflicts_with_all = ["direction", "head"])]
    pub neuron: Option<usize>,
    /// Score the projection of blocks.L.resid_post on this steering vector's direction (unit length).
    #[arg(long, value_name = "FILE", conflicts_with = "head")]
    pub direction: Option<PathBuf>,
    /// Score the attention of this head of layer L to --key.
    #[arg(long, requires = "key")]
    pub head: Option<usize>,
    /// The attended-to token for --head: its text or #id.
    #[arg(long, value_name = "TOKEN")]
    pub key: Option<String>,
    /// How many contexts to keep.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Tokens per forward pass; longer documents are split.
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Tokens shown on each side of the example's token.
    #[arg(long, default_value_t = 10)]
    pub context: usize,
    /// Also count each window's first token (left out by default: with no context before it, it
    /// holds the attention sink of models without BOS, whose huge activations would fill the list).
    #[arg(long)]
    pub include_first: bool,
    /// Stop after this many documents.
    #[arg(long)]
    pub max_documents: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page (each token shaded by its score).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Replace --html if it exists.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

/// The documents of a corpus file, read as a stream, with the bytes consumed so far.
struct Corpus {
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    path: PathBuf,
    jsonl: bool,
    line: usize,
    bytes: u64,
}

impl Corpus {
    fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        Ok(Corpus {
            lines: std::io::BufReader::new(f).lines(),
            path: path.to_path_buf(),
            jsonl,
            line: 0,
            bytes: 0,
        })
    }

    fn next_line(&mut self) -> Result<Option<String>> {
        match self.lines.next() {
            None => Ok(None),
            Some(l) => {
                let l = l.map_err(|e| Error::io(&self.path, e))?;
                self.line += 1;
                self.bytes += l.len() as u64 + 1;
                Ok(Some(l))
            }
        }
    }

    /// The next document, or None at the end.
    fn next_document(&mut self) -> Result<Option<String>> {
        if self.jsonl {
            while let Some(l) = self.next_line()? {
                if l.trim().is_empty() {
                    continue;
                }
                let bad = |m: &str| Error::format(&self.path, format!("line {}", self.line), m);
                let v: serde_json::Value = serde_json::from_str(&l).map_err(|e| bad(&e.to_string()))?;
                let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| bad("no \"text\" string"))?;
                return Ok(Some(text.to_string()));
            }
            return Ok(None);
        }
        let mut doc = String::new();
        while let Some(l) = self.next_line()? {
            if l.trim().is_empty() {
                if !doc.is_empty() {
                    return Ok(Some(doc));
                }
                continue;
            }
            if !doc.is_empty() {
                doc.push('\n');
            }
            doc.push_str(&l);
        }
        Ok((!doc.is_empty()).then_some(doc))
    }
}

struct Task {
    args: TopExamplesArgs,
    files: ModelFiles,
}

impl OnBackend for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task { args, files } = self;
        let tok = &files.tokenizer;
        let n = files.config.n_layers;
        let layer = args.layer.map(|l| resolve_layer(l, n, "--layer")).transpose()?;
        let need_layer =
            || layer.ok_or_else(|| Error::Invalid("--layer is needed with --neuron and --head".into()));
        let (probe, what) = match (&args.neuron, &args.direction, &args.head) {
            (&Some(neuron), None, None) => {
                let layer = need_layer()?;
                (Probe::Neuron { layer, neuron }, format!("neuron {neuron} of blocks.{layer}.mlp_post"))
            }
            (None, Some(path), None) => {
                let cv = ControlVector::read(path)?;
                let layer = match layer {
                    Some(l) => l,
                    None if cv.directions.len() == 1 => *cv.directions.keys().next().unwrap(),
                    None => {
                        return Err(Error::Invalid(format!(
                            "{} holds {} layers: choose one with --layer",
                            path.display(),
                            cv.directions.len()
                        )));
                    }
                };
                let v = cv.directions.get(&layer).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{} has no direction for layer {layer} (it has {:?})",
                        path.display(),
                        cv.directions.keys().collect::<Vec<_>>()
                    ))
                })?;
                let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                if !(norm > 0.0 && norm.is_finite()) {
                    return Err(Error::Invalid(format!(
                        "{}: the direction for layer {layer} is zero or not finite",
                        path.display()
                    )));
                }
                let unit = v.iter().map(|&x| (x as f64 / norm) as f32).collect();
                (Probe::Direction { layer, unit }, format!("{} on blocks.{layer}.resid_post", path.display()))
            }
            (None, None, &Some(head)) => {
                let layer = need_layer()?;
                let spec = args.key.as_deref().unwrap_or_default();
                let (key, text) = resolve_token(tok, spec, "--key")?;
                crate::info!("key token: {} (#{key})", quote(&text));
                (
                    Probe::HeadToToken { layer, head, key },
                    format!("layer {layer} head {head}'s attention to {}", quote(&text)),
                )
            }
            _ => return Err(Error::Invalid("choose one of --neuron, --direction, --head".into())),
        };
        if args.window < 2 {
            return Err(Error::Invalid("--window must be at least 2 tokens".into()));
        }
        if let Some(p) = &args.html {
            crate::dump::check_output(p, args.force)?;
        }
        let size = std::fs::metadata(&args.corpus).map_err(|e| Error::io(&args.corpus, e))?.len();
        let mut corpus = Corpus::open(&args.corpus)?;
        let model = Model::load(backend, &files)?;
        probe.check(&model)?;
        let prefix = tok.encode("")?;
        let mut skip: HashSet<u32> = prefix.iter().copied().collect();
        skip.extend(tok.eos_token().and_then(|e| tok.token_id(e)));
        let window = args.window.min(files.config.context_length);
        let mut top = TopK::new(args.top);
        let bar = crate::progress::bar(size, "documents");
        let mut documents = 0;
        while let Some(doc) = corpus.next_document()? {
            if args.max_documents.is_some_and(|m| documents >= m) {
                break;
            }
            if crate::mem::interrupted() {
                return Err(Error::Interrupted(format!("stopped after {documents} documents")));
            }
            let ids = tok.encode(&doc)?;
            scan_document(
                &model,
                &probe,
                &ids,
                &prefix,
                &skip,
                documents,
                window,
                args.context,
                args.include_first,
                &mut top,
            )?;
            documents += 1;
            bar.set_position(corpus.bytes.min(size));
        }
        bar.finish_and_clear();
        if documents == 0 {
            return Err(Error::Invalid(format!("{} holds no documents", args.corpus.display())));
        }
        let pieces = |ids: &[u32]| -> Result<Vec<String>> { ids.iter().map(|&i| tok.decode(&[i])).collect() };
        if args.json {
            let ex: Vec<_> = top
                .examples
                .iter()
                .map(|e| {
                    let p = pieces(&e.ids)?;
                    Ok(json!({
                        "score": e.score, "document": e.document, "position": e.position,
                        "token": p[e.focus], "before": p[..e.focus].concat(), "after": p[e.focus + 1..].concat(),
                        "tokens": p, "scores": e.scores, "focus": e.focus,
                    }))
                })
                .collect::<Result<_>>()?;
            println!("{}", json!({"probe": what, "documents": documents, "examples": ex}));
        } else {
            println!("top {} of {documents} documents for {what}:", top.examples.len());
            for (rank, e) in top.examples.iter().enumerate() {
                let p = pieces(&e.ids)?;
                let line = format!(
                    "{}⟦{}⟧{}",
                    visible_inline(&p[..e.focus].concat()),
                    visible_inline(&p[e.focus]),
                    visible_inline(&p[e.focus + 1..].concat())
                );
                println!(
                    "{:>3} {:>9.3}  doc {:<5} tok {:<5} …{line}…",
                    rank + 1,
                    e.score,
                    e.document,
                    e.position
                );
            }
        }
        if let Some(path) = &args.html {
            let page = html_page(&what, &files.label, documents, &top.examples, tok)?;
            crate::dump::write_atomic(path, args.force, |f| std::io::Write::write_all(f, page.as_bytes()))?;
            crate::info!("wrote {}", path.display());
        }
        Ok(())
    }
}

/// Text on one terminal line: newlines and tabs shown as escapes.
fn visible_inline(s: &str) -> String {
    s.replace('\n', "\\n").replace('\t', "\\t")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One page, no scripts or network: each example's tokens shaded by their own score (relative to
/// the best example's), the example's token outlined.
fn html_page(
    what: &str,
    label: &str,
    documents: usize,
    examples: &[Example],
    tok: &Tokenizer,
) -> Result<String> {
    let max = examples.iter().map(|e| e.score.abs()).fold(0f32, f32::max).max(1e-12);
    let mut rows = String::new();
    for (rank, e) in examples.iter().enumerate() {
        let mut spans = String::new();
        for (i, (&id, &s)) in e.ids.iter().zip(&e.scores).enumerate() {
            let a = (s / max).clamp(-1.0, 1.0);
            let bg = if a >= 0.0 {
                format!("rgba(214,39,40,{a:.3})")
            } else {
                format!("rgba(31,119,180,{:.3})", -a)
            };
            let outline = if i == e.focus { "outline:2px solid #000;" } else { "" };
            spans.push_str(&format!(
                "<span title=\"{s:.4}\" style=\"background:{bg};{outline}white-space:pre-wrap\">{}</span>",
                escape(&visible(&tok.decode(&[id])?))
            ));
        }
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td class=\"ctx\">{spans}</td></tr>\n",
            rank + 1,
            e.score,
            e.document,
            e.position
        ));
    }
    Ok(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>top examples — {w}</title><style>\
         body{{font:14px sans-serif;margin:20px}} td{{padding:3px 8px;vertical-align:top}} \
         .ctx{{font:13px monospace}} th{{text-align:left}}</style></head><body>\
         <h2>Top examples: {w}</h2><p>{l}; {documents} documents; a token's shade is its own score \
         (red positive, blue negative, relative to the best example's {max:.3}); hover for the value; \
         the example's token is outlined.</p>\
         <table><tr><th>#</th><th>score</th><th>document</th><th>token</th><th>context</th></tr>\n{rows}</table></body></html>",
        w = escape(what),
        l = escape(label),
    ))
}

pub fn run(args: TopExamplesArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
