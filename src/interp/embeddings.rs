//! The embedding table as a space: nearest neighbours of a token, and vector arithmetic over
//! token embeddings ("冷 - cold + small").

use serde::Serialize;

use crate::Result;
use crate::backend::{Backend, Step};
use crate::error::Error;
use crate::forward::Model;
use crate::model::tokenizer::Tokenizer;

/// Which matrix to search: the input embedding, or the LM head (different only when untied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Table {
    Embedding,
    Unembedding,
}

#[derive(Clone, Debug, Serialize)]
pub struct Neighbour {
    pub id: u32,
    pub text: String,
    pub cosine: f32,
}

/// The token ids a word stands for: `#id`; the word-initial token (" word", "▁word": what follows
/// a space in running text) when that is one token, before the bare piece; a word typed with its
/// leading space as it is; or (failing all) the tokens it splits into, whose embeddings are then
/// averaged.
pub fn word_tokens(tok: &Tokenizer, word: &str) -> Result<Vec<u32>> {
    if word.is_empty() {
        return Err(Error::Invalid("an empty word".into()));
    }
    if word.starts_with('#') && word.len() > 1 {
        return Ok(vec![super::words::resolve_token(tok, word, "token")?.0]);
    }
    let plain = |s: &str| -> Result<Vec<u32>> {
        let ids = tok.encode_raw(s)?;
        Ok(ids)
    };
    let candidates = if word.starts_with(char::is_whitespace) {
        vec![word.to_string()]
    } else {
        vec![format!(" {word}"), word.to_string()]
    };
    for candidate in candidates {
        let ids = plain(&candidate)?;
        if ids.len() == 1 {
            return Ok(ids);
        }
    }
    let ids = plain(word)?;
    if ids.is_empty() {
        return Err(Error::Invalid(format!("{word:?} encodes to no tokens")));
    }
    Ok(ids)
}

/// Rows of `table` for `ids`, averaged.
fn mean_row<B: Backend>(model: &Model<B>, table: &B::Tensor, ids: &[u32]) -> Result<Vec<f32>> {
    let be = &model.backend;
    let step = be.step(ids, 0)?;
    let rows = be.download(&be.embed(table, &step, None)?)?;
    let d = rows.len() / step.len();
    let mut mean = vec![0f32; d];
    for r in rows.chunks(d) {
        mean.iter_mut().zip(r).for_each(|(m, x)| *m += x / ids.len() as f32);
    }
    Ok(mean)
}

fn table<B: Backend>(model: &Model<B>, which: Table) -> &B::Tensor {
    match which {
        Table::Embedding => model.embedding(),
        Table::Unembedding => model.unembedding(),
    }
}

/// Case- and space-insensitive spelling, to recognise " Small" as the input word "small".
fn normalized(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The `k` rows of the table most cosine-similar to `v`, skipping the ids in `exclude`, any
/// token spelled like one of `exclude_words` (up to case and surrounding spaces), and special or
/// control tokens unless `special` (their rows sit near everything rarely trained).
#[allow(clippy::too_many_arguments)]
pub fn nearest<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    which: Table,
    v: &[f32],
    k: usize,
    exclude: &[u32],
    exclude_words: &[String],
    special: bool,
) -> Result<Vec<Neighbour>> {
    let be = &model.backend;
    let q = be.upload(v, &[v.len()])?;
    let sims = be.download(&be.cosine_rows(table(model, which), &q)?)?;
    let words: Vec<String> = exclude_words.iter().map(|w| normalized(w)).collect();
    // Variants of the input words can crowd the top: look deeper than k.
    let order = super::top_k(&sims, (k + exclude.len()) * 4 + 64);
    let mut out = Vec::with_capacity(k);
    for i in order {
        if out.len() == k {
            break;
        }
        if exclude.contains(&(i as u32)) || (!special && tok.is_special(i as u32)) {
            continue;
        }
        let text = tok.decode(&[i as u32])?;
        if words.contains(&normalized(&text)) {
            continue;
        }
        out.push(Neighbour { id: i as u32, text, cosine: sims[i] });
    }
    Ok(out)
}

/// Nearest neighbours of a word's token(s).
pub fn neighbours<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    which: Table,
    ids: &[u32],
    k: usize,
    special: bool,
) -> Result<Vec<Neighbour>> {
    let v = mean_row(model, table(model, which), ids)?;
    nearest(model, tok, which, &v, k, ids, &[], special)
}

/// A parsed arithmetic expression: signed words.
pub fn parse_expression(expr: &str) -> Result<Vec<(f32, String)>> {
    let mut terms = Vec::new();
    let mut sign = 1.0f32;
    let mut word = String::new();
    let push = |sign: f32, word: &mut String, terms: &mut Vec<(f32, String)>| -> Result<()> {
        let w = word.trim().to_string();
        if w.is_empty() {
            return Err(Error::Invalid(format!("expression {expr:?}: a + or - with no word beside it")));
        }
        terms.push((sign, w));
        word.clear();
        Ok(())
    };
    // Terms are separated by " + " and " - " (spaces around the operator), so words may contain
    // hyphens; a leading sign applies to the first word.
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            "+" | "-" if i > 0 || !word.is_empty() => {
                push(sign, &mut word, &mut terms)?;
                sign = if *t == "+" { 1.0 } else { -1.0 };
            }
            "-" => sign = -1.0,
            "+" => sign = 1.0,
            w => {
                if !word.is_empty() {
                    word.push(' ');
                }
                word.push_str(w);
            }
        }
    }
    push(sign, &mut word, &mut terms)?;
    Ok(terms)
}

#[derive(Clone, Debug, Serialize)]
pub struct Analogy {
    pub terms: Vec<(f32, String, Vec<u32>)>,
    pub neighbours: Vec<Neighbour>,
}

/// Σ sign · embedding(word), then its nearest tokens (the input words excluded).
pub fn analogy<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    which: Table,
    expr: &str,
    k: usize,
    special: bool,
) -> Result<Analogy> {
    let terms = parse_expression(expr)?;
    let mut sum: Option<Vec<f32>> = None;
    let mut resolved = Vec::new();
    let mut exclude = Vec::new();
    for (sign, word) in terms {
        let ids = word_tokens(tok, &word)?;
        let v = mean_row(model, table(model, which), &ids)?;
        let acc = sum.get_or_insert_with(|| vec![0.0; v.len()]);
        acc.iter_mut().zip(&v).for_each(|(a, x)| *a += sign * x);
        exclude.extend(&ids);
        resolved.push((sign, word, ids));
    }
    let v = sum.expect("at least one term");
    // As in word-vector analogies, the input words (in any case or spacing) are not answers.
    let words: Vec<String> = resolved.iter().map(|(_, w, _)| w.clone()).collect();
    let neighbours = nearest(model, tok, which, &v, k, &exclude, &words, special)?;
    Ok(Analogy { terms: resolved, neighbours })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse() {
        assert_eq!(
            parse_expression("冷 - cold + small").unwrap(),
            vec![(1.0, "冷".into()), (-1.0, "cold".into()), (1.0, "small".into())]
        );
        assert_eq!(
            parse_expression("- king + queen").unwrap(),
            vec![(-1.0, "king".into()), (1.0, "queen".into())]
        );
        assert_eq!(parse_expression("well-known").unwrap(), vec![(1.0, "well-known".into())]);
        assert!(parse_expression("king + ").is_err());
        assert!(parse_expression("").is_err());
    }
}
