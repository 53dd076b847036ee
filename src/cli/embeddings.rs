//! `scalpel neighbors` and `scalpel analogy`: the embedding table as a space.

use clap::Args;
use serde_json::json;

use super::common::{Device, ModelArgs, OnBackend, on_device};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::Model;
use crate::interp::embeddings::{Neighbour, Table, analogy, neighbours, word_tokens};
use crate::interp::words::{pad, quote, quote_all};
use crate::model::ModelFiles;

#[derive(Args, Debug)]
pub struct NeighborsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The word: its word-initial token (with the leading space or ▁) when that is one token,
    /// else the bare piece; text with its own leading space as given; #id for a token id; a word
    /// of several tokens uses their mean embedding. The token used is printed.
    #[arg(long, required_unless_present = "id")]
    pub token: Option<String>,
    /// A token id instead of a word.
    #[arg(long, conflicts_with = "token")]
    pub id: Option<u32>,
    /// How many neighbours.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also list special and control tokens (BOS, chat markers, control bytes).
    #[arg(long)]
    pub include_special: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

#[derive(Args, Debug)]
pub struct AnalogyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Words joined by " + " and " - ", e.g. "冷 - cold + small" or "king - man + woman".
    pub expression: String,
    /// How many nearest tokens to the result.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also list special and control tokens (BOS, chat markers, control bytes).
    #[arg(long)]
    pub include_special: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

fn print_list(title: &str, list: &[Neighbour]) {
    println!("{title}");
    for n in list {
        println!("  {:>8}  {} {:.4}", n.id, pad(&quote(&n.text), 20), n.cosine);
    }
}

struct Neigh {
    args: NeighborsArgs,
    files: ModelFiles,
}

impl OnBackend for Neigh {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Neigh { args, files } = self;
        let tok = &files.tokenizer;
        let ids = match (args.id, &args.token) {
            (Some(id), _) if (id as usize) < files.config.vocab_size => vec![id],
            (Some(id), _) => {
                return Err(Error::Invalid(format!(
                    "--id {id} is outside the vocabulary of {}",
                    files.config.vocab_size
                )));
            }
            (None, Some(w)) => word_tokens(tok, w)?,
            (None, None) => return Err(Error::Invalid("give --token or --id".into())),
        };
        let model = Model::load(backend, &files)?;
        let pieces: Vec<String> = ids.iter().map(|&i| tok.decode(&[i])).collect::<Result<_>>()?;
        let emb = neighbours(&model, tok, Table::Embedding, &ids, args.top, args.include_special)?;
        let head = if files.config.tie_embeddings {
            None
        } else {
            Some(neighbours(&model, tok, Table::Unembedding, &ids, args.top, args.include_special)?)
        };
        if args.json {
            println!("{}", json!({ "ids": ids, "tokens": pieces, "embedding": emb, "lm_head": head }));
            return Ok(());
        }
        if ids.len() > 1 {
            crate::info!(
                "note: {} is {} tokens {}; using their mean embedding",
                quote(&args.token.unwrap_or_default()),
                ids.len(),
                quote_all(&pieces)
            );
        }
        print_list(&format!("nearest to {} in the embedding table (cosine):", quote_all(&pieces)), &emb);
        match head {
            Some(h) => print_list("in the LM head (untied):", &h),
            None => println!("(the LM head is tied to the embedding table)"),
        }
        Ok(())
    }
}

struct Ana {
    args: AnalogyArgs,
    files: ModelFiles,
}

impl OnBackend for Ana {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Ana { args, files } = self;
        let tok = &files.tokenizer;
        let model = Model::load(backend, &files)?;
        let a = analogy(&model, tok, Table::Embedding, &args.expression, args.top, args.include_special)?;
        if args.json {
            println!("{}", json!({ "expression": args.expression, "analogy": a }));
            return Ok(());
        }
        for (sign, word, ids) in &a.terms {
            let pieces: Vec<String> = ids.iter().map(|&i| tok.decode(&[i])).collect::<Result<_>>()?;
            let how = if ids.len() == 1 {
                "one token".to_string()
            } else {
                format!("mean of {} tokens", ids.len())
            };
            println!(
                "{} {} → {} ({how})",
                if *sign > 0.0 { "+" } else { "-" },
                quote(word),
                quote_all(&pieces)
            );
        }
        print_list(&format!("nearest tokens to {} (inputs excluded):", args.expression), &a.neighbours);
        Ok(())
    }
}

pub fn run_neighbors(args: NeighborsArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Neigh { args, files })?;
    Ok(())
}

pub fn run_analogy(args: AnalogyArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let device = args.device;
    on_device(device, Ana { args, files })?;
    Ok(())
}
