//! Top activating examples: the contexts in a corpus where a neuron, a direction or a head's
//! attention to a token is strongest — each window of text run once through the model, one probe
//! point kept, every position scored, the best K kept with their surroundings.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::capture::capture;
use crate::interp::render::canvas::visible;
use crate::model::tokenizer::Tokenizer;
use crate::probe::{Captured, Point};

/// What is scored at each position.
#[derive(Clone, Debug)]
pub enum Probe {
    /// `blocks.{layer}.mlp_post[:, neuron]`.
    Neuron { layer: usize, neuron: usize },
    /// `blocks.{layer}.resid_post · unit` (a steering vector's direction, normalized).
    Direction { layer: usize, unit: Vec<f32> },
    /// The attention mass head `head` of `layer` puts, from each query, on keys that are `key`.
    HeadToToken { layer: usize, head: usize, key: u32 },
}

impl Probe {
    pub fn point(&self) -> Point {
        match self {
            Probe::Neuron { layer, .. } => Point::MlpPost(*layer),
            Probe::Direction { layer, .. } => Point::ResidPost(*layer),
            Probe::HeadToToken { layer, .. } => Point::AttnProbs(*layer),
        }
    }

    /// One score per position of `ids`, from the point's capture.
    fn scores(&self, cap: &Captured, ids: &[u32]) -> Vec<f32> {
        let t = ids.len();
        match self {
            Probe::Neuron { neuron, .. } => {
                let f = cap.shape[1];
                (0..t).map(|q| cap.data[q * f + neuron]).collect()
            }
            Probe::Direction { unit, .. } => {
                let d = unit.len();
                (0..t)
                    .map(|q| {
                        let row = &cap.data[q * d..(q + 1) * d];
                        row.iter().zip(unit).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32
                    })
                    .collect()
            }
            Probe::HeadToToken { head, key, .. } => {
                let s = cap.shape[2];
                (0..t)
                    .map(|q| {
                        let row = &cap.data[(head * t + q) * s..][..s];
                        // + 0.0: an empty sum is -0.0, shown as "-0.000".
                        (0..=q).filter(|&k| ids[k] == *key).map(|k| row[k]).sum::<f32>() + 0.0
                    })
                    .collect()
            }
        }
    }

    /// The probe of a control vector's direction at `layer` (default: its only layer), scaled to
    /// unit length; `name` says where the vector came from in errors.
    pub fn direction(
        directions: &BTreeMap<usize, Vec<f32>>,
        layer: Option<usize>,
        name: &str,
    ) -> Result<Probe> {
        let have = || directions.keys().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
        let layer = match layer {
            Some(l) => l,
            None if directions.len() == 1 => *directions.keys().next().expect("one direction"),
            None => {
                return Err(Error::Invalid(format!(
                    "{name} holds {} layers ({}): choose one (--layer; layer= in Python)",
                    directions.len(),
                    have()
                )));
            }
        };
        let v = directions.get(&layer).ok_or_else(|| {
            Error::Invalid(format!("{name} has no direction for layer {layer} (it has {})", have()))
        })?;
        let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(Error::Invalid(format!(
                "{name}: the direction for layer {layer} is zero or not finite"
            )));
        }
        Ok(Probe::Direction { layer, unit: v.iter().map(|&x| (x as f64 / norm) as f32).collect() })
    }

    /// Checks the probe against the model's shape.
    pub fn check<B: Backend>(&self, model: &Model<B>) -> Result<()> {
        let c = &model.config;
        let bad = |m: String| Err(Error::Invalid(m));
        match self {
            Probe::Neuron { neuron, .. } if *neuron >= c.intermediate_size => {
                bad(format!("--neuron {neuron}: the layer has neurons 0..{}", c.intermediate_size - 1))
            }
            Probe::Direction { unit, .. } if unit.len() != c.hidden_size => bad(format!(
                "the direction has {} values but the model's residual stream {}",
                unit.len(),
                c.hidden_size
            )),
            Probe::HeadToToken { head, .. } if *head >= c.n_heads => {
                bad(format!("--head {head}: the model has heads 0..{}", c.n_heads - 1))
            }
            Probe::HeadToToken { key, .. } => c.check_ids(&[*key]),
            _ => Ok(()),
        }
    }
}

/// One context: `ids[focus]` scored `score`, with its neighbours' scores in `scores`.
#[derive(Clone, Debug)]
pub struct Example {
    pub score: f32,
    /// Index of the document in the corpus, and of the token in the document.
    pub document: usize,
    pub position: usize,
    pub ids: Vec<u32>,
    pub scores: Vec<f32>,
    pub focus: usize,
}

/// The K best examples seen so far, best first; ties keep the earlier one.
pub struct TopK {
    k: usize,
    pub examples: Vec<Example>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK { k: k.max(1), examples: Vec::new() }
    }

    fn admits(&self, score: f32) -> bool {
        score.is_finite() && (self.examples.len() < self.k || score > self.examples[self.k - 1].score)
    }

    fn insert(&mut self, e: Example) {
        let at = self.examples.iter().position(|x| e.score > x.score).unwrap_or(self.examples.len());
        self.examples.insert(at, e);
        self.examples.truncate(self.k);
    }
}

/// Scans a document's tokens in windows of at most `window` positions (each later window led by
/// `prefix`, the model's BOS where it adds one), scoring every position not in `skip` (special
/// tokens), and keeps the best in `top` with `context` tokens either side (within the window).
/// A window's first position is left out unless `include_first`: with nothing before it, it is
/// where a model without BOS parks its attention sink, with activations tens of times the others'
/// (SmolLM2's first token projects ~8x higher on any direction) that would fill every list.
#[allow(clippy::too_many_arguments)]
pub fn scan_document<B: Backend>(
    model: &Model<B>,
    probe: &Probe,
    ids: &[u32],
    prefix: &[u32],
    skip: &HashSet<u32>,
    document: usize,
    window: usize,
    context: usize,
    include_first: bool,
    top: &mut TopK,
) -> Result<()> {
    let window = window.max(prefix.len() + 1);
    let mut start = 0;
    while start < ids.len() {
        let lead: &[u32] = if start == 0 { &[] } else { prefix };
        let take = (window - lead.len()).min(ids.len() - start);
        let w: Vec<u32> = lead.iter().chain(&ids[start..start + take]).copied().collect();
        let cap = capture(model, &w, [probe.point()])?;
        let scores = probe.scores(&cap[&probe.point()], &w);
        for (q, &s) in scores.iter().enumerate() {
            if (q == 0 && !include_first) || skip.contains(&w[q]) || !top.admits(s) {
                continue;
            }
            let (a, b) = (q.saturating_sub(context), (q + context + 1).min(w.len()));
            top.insert(Example {
                score: s,
                document,
                position: start + q - lead.len(),
                ids: w[a..b].to_vec(),
                scores: scores[a..b].to_vec(),
                focus: q - a,
            });
        }
        start += take;
    }
    Ok(())
}

impl Example {
    /// The example for people and programs: its token, the text before and after it, every
    /// token with its score.
    pub fn to_json(&self, tok: &Tokenizer) -> Result<Value> {
        let p: Vec<String> = self.ids.iter().map(|&i| tok.decode(&[i])).collect::<Result<_>>()?;
        Ok(json!({
            "score": self.score, "document": self.document, "position": self.position,
            "token": p[self.focus], "before": p[..self.focus].concat(), "after": p[self.focus + 1..].concat(),
            "tokens": p, "scores": self.scores, "focus": self.focus,
        }))
    }
}

/// The documents of a corpus file, read as a stream: .jsonl (one object with a "text" field per
/// line) or text (documents separated by blank lines). `bytes` counts what has been read.
pub struct Corpus {
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    path: PathBuf,
    jsonl: bool,
    line: usize,
    pub bytes: u64,
}

impl Corpus {
    pub fn open(path: &Path) -> Result<Self> {
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
    pub fn next_document(&mut self) -> Result<Option<String>> {
        if self.jsonl {
            while let Some(l) = self.next_line()? {
                if l.trim().is_empty() {
                    continue;
                }
                let bad = |m: &str| Error::format(&self.path, format!("line {}", self.line), m);
                let v: Value = serde_json::from_str(&l).map_err(|e| bad(&e.to_string()))?;
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

/// How a corpus is scanned (the CLI's --top, --window, --context, --include-first, --max-documents).
pub struct ScanOptions {
    pub top: usize,
    pub window: usize,
    pub context: usize,
    pub include_first: bool,
    pub max_documents: Option<usize>,
}

/// Scans the documents `next` yields (None: the end) with [`scan_document`], BOS and EOS never
/// counted; `after_each` runs after every document (progress, interruption) and may stop the scan
/// with an error. Returns the best examples and how many documents were read.
pub fn scan_corpus<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    probe: &Probe,
    opts: &ScanOptions,
    mut next: impl FnMut() -> Result<Option<String>>,
    mut after_each: impl FnMut() -> Result<()>,
) -> Result<(Vec<Example>, usize)> {
    if opts.window < 2 {
        return Err(Error::Invalid("the window must be at least 2 tokens".into()));
    }
    probe.check(model)?;
    let prefix = tok.encode("")?;
    let mut skip: HashSet<u32> = prefix.iter().copied().collect();
    skip.extend(tok.eos_token().and_then(|e| tok.token_id(e)));
    let window = opts.window.min(model.config.context_length);
    let mut top = TopK::new(opts.top);
    let mut documents = 0;
    while let Some(doc) = next()? {
        if opts.max_documents.is_some_and(|m| documents >= m) {
            break;
        }
        if crate::mem::interrupted() {
            return Err(Error::Interrupted(format!("stopped after {documents} documents")));
        }
        let ids = tok.encode(&doc)?;
        scan_document(
            model,
            probe,
            &ids,
            &prefix,
            &skip,
            documents,
            window,
            opts.context,
            opts.include_first,
            &mut top,
        )?;
        documents += 1;
        after_each()?;
    }
    Ok((top.examples, documents))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The examples as HTML without scripts: a line saying what was scored, then a table whose rows
/// shade each token by its own score (relative to the best example's), the example's token outlined.
pub fn html_table(
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
            "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td style=\"font:13px monospace\">{spans}</td></tr>\n",
            rank + 1,
            e.score,
            e.document,
            e.position
        ));
    }
    Ok(format!(
        "<div style=\"font:14px sans-serif\"><p><b>Top examples: {w}</b> — {l}; {documents} documents; a token's \
         shade is its own score (red positive, blue negative, relative to the best example's {max:.3}); \
         hover for the value; the example's token is outlined.</p>\
         <table><tr><th>#</th><th>score</th><th>document</th><th>token</th><th>context</th></tr>\n{rows}</table></div>",
        w = escape(what),
        l = escape(label),
    ))
}

/// [`html_table`] as a self-contained page.
pub fn html_page(
    what: &str,
    label: &str,
    documents: usize,
    examples: &[Example],
    tok: &Tokenizer,
) -> Result<String> {
    Ok(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>top examples — {}</title><style>\
         body{{margin:20px}} td{{padding:3px 8px;vertical-align:top}} th{{text-align:left}}</style></head>\
         <body>{}</body></html>",
        escape(what),
        html_table(what, label, documents, examples, tok)?
    ))
}
