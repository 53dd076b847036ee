//! The microscope: what the layers hold, read through the same probe mechanism and backend ops
//! that generate. Each analysis is generic over the backend; rendering lives in `render`.

pub mod attention;
pub mod attribution;
pub mod capture;
pub mod embeddings;
pub mod examples;
pub mod lens;
pub mod neurons;
pub mod patching;
pub mod patchscope;
pub mod pca;
pub mod render;
pub mod report;
pub mod similarity;
pub mod steer;
pub mod words;

/// An index into `len` items, negative counting from the end (-1 = the last); None outside.
pub fn index_from_end(i: i64, len: usize) -> Option<usize> {
    let idx = if i < 0 { len as i64 + i } else { i };
    (idx >= 0 && idx < len as i64).then_some(idx as usize)
}

/// Parses a layer selection such as "10", "3-7", "0,2,5-9" or "all" (0-based, inclusive ranges)
/// for a model of `n_layers` layers.
pub fn parse_layers(spec: &str, n_layers: usize) -> crate::Result<Vec<usize>> {
    let bad = |m: String| crate::Error::Invalid(format!("layers {spec:?}: {m}"));
    if spec.trim() == "all" {
        return Ok((0..n_layers).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // A range's dash is the first one after its first character ("-3--1": -3 to -1).
        let (a, b) = match part.char_indices().skip(1).find(|&(_, c)| c == '-') {
            Some((i, _)) => (part[..i].trim(), part[i + 1..].trim()),
            None => (part, part),
        };
        // Negative numbers count from the end, as positions do: -1 is the last layer.
        let layer = |s: &str| -> crate::Result<usize> {
            let v: i64 = s.parse().map_err(|_| bad(format!("{s:?} is not a layer number")))?;
            index_from_end(v, n_layers)
                .ok_or_else(|| bad(format!("layer {v} is past the model's layers 0..{}", n_layers - 1)))
        };
        let (a, b) = (layer(a)?, layer(b)?);
        if a > b {
            return Err(bad(format!("range {a}-{b} runs backwards")));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(bad("no layers".into()));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// log Σ exp(row), in f64.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln()
}

/// Softmax of one row, in f64 for the sum.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

/// Indices of the k largest values, largest first (ties: lower index first).
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    if k == 0 {
        return vec![];
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_specs() {
        assert_eq!(parse_layers("3", 10).unwrap(), vec![3]);
        assert_eq!(parse_layers("0,2,5-7", 10).unwrap(), vec![0, 2, 5, 6, 7]);
        assert_eq!(parse_layers("all", 3).unwrap(), vec![0, 1, 2]);
        assert!(parse_layers("10", 10).is_err());
        assert!(parse_layers("5-3", 10).is_err());
        assert!(parse_layers("x", 10).is_err());
        assert_eq!(parse_layers("-1", 10).unwrap(), vec![9]);
        assert_eq!(parse_layers("-3--1", 10).unwrap(), vec![7, 8, 9]);
        assert_eq!(parse_layers("2--8", 10).unwrap(), vec![2]);
        assert!(parse_layers("-11", 10).is_err());
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.9, -1.0], 3), vec![3, 1, 2]);
        assert_eq!(top_k(&[1.0], 5), vec![0]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[3], 0.0);
    }
}
