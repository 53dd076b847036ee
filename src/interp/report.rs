//! One self-contained HTML page (no network) about a prompt: its tokens, the logit-lens heatmap,
//! and an attention view where hovering a token shows what it attends to in a chosen layer and
//! head. The data is embedded as JSON; the page's script is plain JavaScript.

use serde_json::json;

/// The page; `__SCALPEL_DATA__` is replaced by the JSON payload.
const TEMPLATE: &str = include_str!("report.html");

use super::attention::HeadScore;
use super::lens::Lens;
use crate::Result;
use crate::model::tokenizer::Tokenizer;
use crate::probe::Captured;

pub struct ReportData<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
    pub tokens: &'a [String],
    pub lens: &'a Lens,
    /// Attention probabilities [heads, T, T] per layer, in layer order.
    pub attention: &'a [Captured],
    /// The head the page opens on (the first of `attention::focused`).
    pub shown: &'a HeadScore,
}

/// Rounds to 4 decimals: the page needs shades, not digits, and this keeps it small.
fn r4(x: f32) -> f64 {
    (x as f64 * 1e4).round() / 1e4
}

pub fn html(data: &ReportData, tok: &Tokenizer) -> Result<String> {
    let lens: Vec<Vec<Vec<(String, f64)>>> = data
        .lens
        .top
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|cands| {
                    cands.iter().map(|c| Ok((tok.decode(&[c.id])?, r4(c.prob)))).collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let attn: Vec<Vec<Vec<Vec<f64>>>> = data
        .attention
        .iter()
        .map(|m| {
            let (h, t, s) = (m.shape[0], m.shape[1], m.shape[2]);
            (0..h)
                .map(|hh| {
                    (0..t).map(|q| (0..s).map(|k| r4(m.data[hh * t * s + q * s + k])).collect()).collect()
                })
                .collect()
        })
        .collect();
    let payload = json!({
        "model": data.model,
        "prompt": data.prompt,
        "tokens": data.tokens,
        "lens": lens,
        "attention": attn,
        "shown": data.shown,
    });
    // "</" cannot appear inside the script element.
    let payload = payload.to_string().replace("</", "<\\/");
    Ok(TEMPLATE.replace("__SCALPEL_DATA__", &payload))
}
