//! Finding a word in a tokenized prompt: the token positions a user means by "apple".

use crate::Result;
use crate::error::Error;
use crate::model::tokenizer::Tokenizer;

/// A token's text in quotes for people to read: newlines, tabs and other control characters as
/// escapes (`\n`), everything else as it is — never Rust's `\u{…}` escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Token texts as a list for people: `["a", " b"]`, each quoted as [`quote`] does.
pub fn quote_all<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// `s` padded with spaces to `width` terminal columns (CJK characters take two).
pub fn pad(s: &str, width: usize) -> String {
    let w = unicode_width::UnicodeWidthStr::width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

/// The decoded text of each token on its own.
pub fn token_strings(tok: &Tokenizer, ids: &[u32]) -> Result<Vec<String>> {
    ids.iter().map(|&i| tok.decode(&[i])).collect()
}

/// Positions where `word` occurs: the last token of each run of tokens whose text, trimmed,
/// equals the word. An exact match is preferred; failing that, a case-insensitive one.
pub fn find_word(strings: &[String], word: &str) -> Vec<usize> {
    let word = word.trim();
    for fold in [false, true] {
        let same = |a: &str| if fold { a.to_lowercase() == word.to_lowercase() } else { a == word };
        let mut found = Vec::new();
        let mut i = 0;
        while i < strings.len() {
            let mut text = String::new();
            let mut hit = None;
            for (j, s) in strings.iter().enumerate().skip(i) {
                text.push_str(s);
                let t = text.trim();
                if same(t) {
                    hit = Some(j);
                    break;
                }
                if t.chars().count() > word.chars().count() + 2 {
                    break;
                }
            }
            match hit {
                Some(j) => {
                    found.push(j);
                    i = j + 1;
                }
                None => i += 1,
            }
        }
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// Like [`find_word`], but an error that shows the tokens when the word is absent.
pub fn require_word(strings: &[String], word: &str, what: &str) -> Result<Vec<usize>> {
    let found = find_word(strings, word);
    if found.is_empty() {
        return Err(Error::Invalid(format!(
            "{what} {} is not among the tokens {}",
            quote(word),
            quote_all(strings)
        )));
    }
    Ok(found)
}

/// One token named by the user: `#id`, or a text that is one token. A word without a leading
/// space is taken as the word-initial token (" Paris", "▁Paris") when that is one token — what
/// follows a space in running text — and as itself otherwise. Returns the id and its text.
pub fn resolve_token(tok: &Tokenizer, spec: &str, what: &str) -> Result<(u32, String)> {
    if let Some(n) = spec.strip_prefix('#') {
        let id: u32 =
            n.parse().map_err(|_| Error::Invalid(format!("{what} {spec:?}: after '#' comes a token id")))?;
        if id as usize >= tok.vocab_size() {
            return Err(Error::Invalid(format!(
                "{what} {spec:?}: token id {id} is outside the vocabulary of {}",
                tok.vocab_size()
            )));
        }
        return Ok((id, tok.decode(&[id])?));
    }
    if spec.is_empty() {
        return Err(Error::Invalid(format!("{what} is empty (give a token's text or #id)")));
    }
    let mut tried = Vec::new();
    let spaced = format!(" {spec}");
    let candidates =
        if spec.starts_with(char::is_whitespace) { vec![spec] } else { vec![spaced.as_str(), spec] };
    for text in candidates {
        let ids = tok.encode_raw(text)?;
        if let [id] = ids[..] {
            return Ok((id, tok.decode(&[id])?));
        }
        tried.push(format!(
            "{} is {} tokens {}",
            quote(text),
            ids.len(),
            quote_all(&token_strings(tok, &ids)?)
        ));
    }
    Err(Error::Invalid(format!(
        "{what} {} is not one token ({}); give one token's text or its #id",
        quote(spec),
        tried.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn quotes_and_pads_for_people() {
        assert_eq!(quote("a\nb\"\u{200d}天"), "\"a\\nb\\\"\u{200d}天\"");
        assert_eq!(quote("\u{7}"), "\"\\x07\"");
        assert_eq!(quote_all(&["a", " \u{301}"]), "[\"a\", \" \u{301}\"]");
        assert_eq!(pad("天气", 6), "天气  ");
        assert_eq!(pad("ab", 6), "ab    ");
        assert_eq!(pad("toolong", 3), "toolong");
    }

    #[test]
    fn finds_single_and_split_words() {
        let toks =
            s(&["the", " apple", " is", " green", ".", " what", " color", " is", " the", " apple", "?"]);
        assert_eq!(find_word(&toks, "apple"), vec![1, 9]);
        assert_eq!(find_word(&toks, "green"), vec![3]);
        let split = s(&["I", " like", " app", "les", "!"]);
        assert_eq!(find_word(&split, "apples"), vec![3]);
        assert_eq!(find_word(&s(&[" Apple", " makes"]), "apple"), vec![0], "case-insensitive fallback");
        assert!(find_word(&toks, "banana").is_empty());
    }
}
