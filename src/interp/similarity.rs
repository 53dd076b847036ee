//! How one word's representation in two contexts relates, layer by layer ("apple" the fruit and
//! "Apple" the company drift apart with depth).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Result;
use crate::backend::Backend;
use crate::forward::Model;
use crate::interp::words::{require_word, token_strings};
use crate::model::tokenizer::Tokenizer;
use crate::probe::{Captured, Point};

#[derive(Clone, Debug, Serialize)]
pub struct LayerSimilarity {
    /// "embed" or the layer number.
    pub point: String,
    pub cosine: f64,
}

/// The points compared: the embedding and every layer's output.
fn points(n_layers: usize) -> Vec<Point> {
    std::iter::once(Point::Embed).chain((0..n_layers).map(Point::ResidPost)).collect()
}

/// The residual stream of one text at every compared point: one forward pass.
type Stream = BTreeMap<Point, Captured>;

fn stream<B: Backend>(model: &Model<B>, ids: &[u32]) -> Result<Stream> {
    super::capture::capture(model, ids, points(model.config.n_layers))
}

/// Per point, the mean of the residual stream over the tokens of `texts` (each text's first token
/// left out where it has others): what is subtracted to
/// centre the vectors. Later layers share a large common component (anisotropy) that keeps raw
/// cosines near 1 whatever the sense; the centred cosine compares what is left.
pub fn mean_residuals<B: Backend>(model: &Model<B>, texts: &[Vec<u32>]) -> Result<BTreeMap<Point, Vec<f32>>> {
    let streams: Vec<Stream> = texts.iter().map(|ids| stream(model, ids)).collect::<Result<_>>()?;
    mean_of(&streams.iter().collect::<Vec<_>>(), model.config.hidden_size)
}

/// [`mean_residuals`] of streams already captured.
fn mean_of(streams: &[&Stream], d: usize) -> Result<BTreeMap<Point, Vec<f32>>> {
    let mut sums: BTreeMap<Point, Vec<f64>> = BTreeMap::new();
    let mut count = 0usize;
    for cap in streams {
        let t = cap.values().next().map_or(0, |c| c.shape[0]);
        // The first token is left out: with nothing before it, it holds the attention sink's
        // activations, tens of times any other token's, and would be all the mean says.
        let skip = usize::from(t > 1);
        for (p, c) in cap.iter() {
            let acc = sums.entry(*p).or_insert_with(|| vec![0.0; d]);
            for row in c.data.chunks(d).skip(skip) {
                acc.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
            }
        }
        count += t - skip;
    }
    if count == 0 {
        return Err(crate::Error::Invalid("no tokens to take the mean over".into()));
    }
    Ok(sums.into_iter().map(|(p, v)| (p, v.iter().map(|x| (x / count as f64) as f32).collect())).collect())
}

/// Cosine similarity of the residual stream at position `pa` of stream `a` and `pb` of `b`, at
/// embed and after every layer; with `centre`, of the two vectors minus that point's mean.
fn across_layers(
    a: &Stream,
    pa: usize,
    b: &Stream,
    pb: usize,
    centre: Option<&BTreeMap<Point, Vec<f32>>>,
) -> Vec<LayerSimilarity> {
    let centred = |row: &[f32], p: &Point| -> Vec<f32> {
        match centre {
            Some(m) => row.iter().zip(&m[p]).map(|(x, m)| x - m).collect(),
            None => row.to_vec(),
        }
    };
    a.keys()
        .map(|p| LayerSimilarity {
            point: p.layer().map_or("embed".to_string(), |l| l.to_string()),
            cosine: super::cosine(
                &centred(super::capture::row(&a[p], pa), p),
                &centred(super::capture::row(&b[p], pb), p),
            ),
        })
        .collect()
}

/// What the vectors are centred on before the cosine.
pub enum Centre {
    /// Raw cosines.
    None,
    /// The mean over every token of the compared contexts.
    Contexts,
    /// The mean over every token of these texts, named `.1` in what is shown.
    Texts(Vec<String>, String),
}

/// One word in context `a` compared with one in each other context, at every layer.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: String,
    pub a_word: String,
    pub a_position: usize,
    /// The token followed in `a` (the word's last token).
    pub a_token: String,
    /// Which cosine is shown, in words.
    pub shown: String,
    pub centred: bool,
    pub others: Vec<Other>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Other {
    pub b: String,
    pub b_word: String,
    pub b_position: usize,
    pub b_token: String,
    pub similarity: Vec<LayerSimilarity>,
}

/// `a_word` in `a` (its first occurrence) against each (context, word) of `others`, at the
/// embedding and after every layer, centred as `centre` says: what `scalpel similarity` and
/// Python's `Model.similarity` show.
pub fn compare<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    a: &str,
    a_word: &str,
    others: &[(String, String)],
    centre: &Centre,
) -> Result<Comparison> {
    if a.is_empty() || others.iter().any(|(b, _)| b.is_empty()) {
        return Err(crate::Error::Invalid("the contexts must not be empty".into()));
    }
    if others.is_empty() {
        return Err(crate::Error::Invalid("nothing to compare the first context with".into()));
    }
    let ia = tok.encode(a)?;
    let sa = token_strings(tok, &ia)?;
    let pa = require_word(&sa, a_word, "the word")?[0];
    let mut found = Vec::new();
    for (b, w) in others {
        let ib = tok.encode(b)?;
        let sb = token_strings(tok, &ib)?;
        let pb = require_word(&sb, w, "the word")?[0];
        found.push((ib, sb, pb));
    }
    let reference = match centre {
        Centre::Texts(texts, name) => {
            let ids: Vec<Vec<u32>> = texts
                .iter()
                .filter(|t| !t.trim().is_empty())
                .map(|t| tok.encode(t))
                .collect::<Result<_>>()?;
            if ids.is_empty() {
                return Err(crate::Error::Invalid(format!("{name} holds no texts to centre on")));
            }
            Some(ids)
        }
        _ => None,
    };
    // Each context runs once: its stream serves the cosines and, with Centre::Contexts, the mean.
    let stream_a = stream(model, &ia)?;
    let streams: Vec<Stream> = found.iter().map(|f| stream(model, &f.0)).collect::<Result<_>>()?;
    let (means, shown) = match centre {
        Centre::None => (None, "raw cosine (centring subtracts the contexts' mean)".to_string()),
        Centre::Contexts => (
            Some(mean_of(
                &std::iter::once(&stream_a).chain(&streams).collect::<Vec<_>>(),
                model.config.hidden_size,
            )?),
            "centred cosine (mean over every token of the contexts subtracted)".to_string(),
        ),
        Centre::Texts(_, name) => (
            reference.map(|r| mean_residuals(model, &r)).transpose()?,
            format!("centred cosine (mean over every token of {name} subtracted)"),
        ),
    };
    let mut out = Vec::new();
    for (((b, w), (_, sb, pb)), s) in others.iter().zip(found).zip(&streams) {
        out.push(Other {
            b: b.clone(),
            b_word: w.clone(),
            b_position: pb,
            b_token: sb[pb].clone(),
            similarity: across_layers(&stream_a, pa, s, pb, means.as_ref()),
        });
    }
    Ok(Comparison {
        a: a.to_string(),
        a_word: a_word.to_string(),
        a_position: pa,
        a_token: sa[pa].clone(),
        shown,
        centred: means.is_some(),
        others: out,
    })
}
