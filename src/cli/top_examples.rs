//! `scalpel top-examples`: the corpus contexts that most activate a neuron, a direction or a
//! head's attention to a token — a terminal table, JSON, and a self-contained HTML page.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device, resolve_layer};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::examples::{Corpus, Probe, ScanOptions, html_page, scan_corpus};
use crate::interp::steer::ControlVector;
use crate::interp::words::{quote, resolve_token};
use crate::model::ModelFiles;

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
                let probe = Probe::direction(&cv.directions, layer, &path.display().to_string())?;
                let Probe::Direction { layer, .. } = probe else { unreachable!("a direction probe") };
                (probe, format!("{} on blocks.{layer}.resid_post", path.display()))
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
        if let Some(p) = &args.html {
            crate::dump::check_output(p, args.force)?;
        }
        let size = std::fs::metadata(&args.corpus).map_err(|e| Error::io(&args.corpus, e))?.len();
        let mut corpus = Corpus::open(&args.corpus)?;
        let model = Model::load(backend, &files)?;
        let bar = crate::progress::bar(size, "documents");
        let opts = ScanOptions {
            top: args.top,
            window: args.window,
            context: args.context,
            include_first: args.include_first,
            max_documents: args.max_documents,
        };
        let (examples, documents) = scan_corpus(
            &model,
            tok,
            &probe,
            &opts,
            || {
                let doc = corpus.next_document();
                bar.set_position(corpus.bytes.min(size));
                doc
            },
            || Ok(()),
        )?;
        bar.finish_and_clear();
        if documents == 0 {
            return Err(Error::Invalid(format!("{} holds no documents", args.corpus.display())));
        }
        if args.json {
            let ex: Vec<_> = examples.iter().map(|e| e.to_json(tok)).collect::<Result<_>>()?;
            println!("{}", json!({"probe": what, "documents": documents, "examples": ex}));
        } else {
            println!("top {} of {documents} documents for {what}:", examples.len());
            for (rank, e) in examples.iter().enumerate() {
                let p: Vec<String> = e.ids.iter().map(|&i| tok.decode(&[i])).collect::<Result<_>>()?;
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
            let page = html_page(&what, &files.label, documents, &examples, tok)?;
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

pub fn run(args: TopExamplesArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Task { args, files })?;
    Ok(())
}
