//! `scalpel tokenize`: each token's id and string.

use clap::Args;
use serde_json::json;

use super::common::ModelArgs;
use crate::interp::words::{pad, quote};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to tokenize.
    pub text: String,
    /// Wrap the text in the model's chat template first, as `generate --chat` does.
    #[arg(long)]
    pub chat: bool,
    /// Print one JSON object: ids, decoded strings and vocabulary pieces.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    let tok = &files.tokenizer;
    let prompt = super::common::PromptArgs::new(args.text.clone(), args.chat);
    let (_, ids) = prompt.encode(tok)?;
    let strs: Vec<String> = ids.iter().map(|&i| tok.decode(&[i])).collect::<crate::Result<_>>()?;
    let pieces: Vec<String> = ids.iter().map(|&i| tok.piece(i).unwrap_or_default()).collect();
    if args.json {
        println!("{}", json!({ "ids": ids, "strings": strs, "pieces": pieces }));
        return Ok(());
    }
    for ((id, s), piece) in ids.iter().zip(&strs).zip(&pieces) {
        println!("{id:>8}  {} {}", pad(&quote(s), 24), quote(piece));
    }
    crate::info!("{} tokens", ids.len());
    Ok(())
}
