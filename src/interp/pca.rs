//! Principal components of a set of representations (one per prompt), for a 2-D map.

use serde::Serialize;

use crate::Result;
use crate::backend::Backend;
use crate::error::Error;
use crate::forward::Model;
use crate::probe::Point;

#[derive(Clone, Debug, Serialize)]
pub struct Pca {
    /// Each input's coordinates on the first `k` components.
    pub coords: Vec<Vec<f64>>,
    /// The fraction of the total variance each component explains.
    pub explained: Vec<f64>,
    /// The components themselves (unit vectors in the representation space).
    pub components: Vec<Vec<f64>>,
}

/// PCA of `rows` (n vectors of equal length) onto `k` components, by subspace iteration on the
/// n×n Gram matrix of the centred rows (n is the number of prompts, far below the width).
pub fn pca(rows: &[Vec<f32>], k: usize) -> Result<Pca> {
    let n = rows.len();
    if n < 2 {
        return Err(Error::Invalid(format!("PCA needs at least 2 representations, got {n}")));
    }
    let d = rows[0].len();
    if rows.iter().any(|r| r.len() != d) {
        return Err(Error::Invalid("PCA: representations of different widths".into()));
    }
    let k = k.min(n - 1).max(1);
    let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64).collect();
    let x: Vec<Vec<f64>> =
        rows.iter().map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect()).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let gram: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| dot(&x[i], &x[j])).collect()).collect();
    let total: f64 = (0..n).map(|i| gram[i][i]).sum();
    if total <= 0.0 {
        return Err(Error::Invalid("PCA: all representations are identical".into()));
    }
    // Subspace iteration: V ← orth(G V), deterministic start.
    let mut v: Vec<Vec<f64>> =
        (0..k).map(|c| (0..n).map(|i| 1.0 + ((i * 7 + c * 13) % 11) as f64 * 0.1).collect()).collect();
    let orth = |v: &mut Vec<Vec<f64>>| {
        for c in 0..v.len() {
            for p in 0..c {
                let proj = dot(&v[c], &v[p]);
                let vp = v[p].clone();
                v[c].iter_mut().zip(&vp).for_each(|(a, b)| *a -= proj * b);
            }
            let norm = dot(&v[c], &v[c]).sqrt().max(1e-300);
            v[c].iter_mut().for_each(|a| *a /= norm);
        }
    };
    orth(&mut v);
    for _ in 0..5000 {
        let mut next: Vec<Vec<f64>> =
            v.iter().map(|col| (0..n).map(|i| dot(&gram[i], col)).collect()).collect();
        orth(&mut next);
        let change: f64 = next.iter().zip(&v).map(|(a, b)| 1.0 - dot(a, b).abs()).sum();
        v = next;
        if change < 1e-15 {
            break;
        }
    }
    let mut explained = Vec::new();
    let mut coords = vec![Vec::with_capacity(k); n];
    let mut components = Vec::new();
    for col in v.iter_mut() {
        // Sign: the largest entry positive, so the picture does not flip between runs.
        let big = col.iter().copied().fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            col.iter_mut().for_each(|a| *a = -*a);
        }
        let gv: Vec<f64> = (0..n).map(|i| dot(&gram[i], col)).collect();
        let lambda = dot(col, &gv).max(0.0);
        explained.push(lambda / total);
        let s = lambda.sqrt();
        for (i, c) in coords.iter_mut().enumerate() {
            c.push(col[i] * s);
        }
        // The component in representation space: Xᵀ u / √λ.
        let comp: Vec<f64> =
            (0..d).map(|j| (0..n).map(|i| x[i][j] * col[i]).sum::<f64>() / s.max(1e-300)).collect();
        components.push(comp);
    }
    Ok(Pca { coords, explained, components })
}

/// PCA onto 2 components of each prompt's `blocks.{layer}.resid_post` at `position` (negative
/// counts from each prompt's end): `scalpel pca` and Python's `Model.pca`.
pub fn of_prompts<B: Backend>(
    model: &Model<B>,
    prompts: &[Vec<u32>],
    layer: usize,
    position: i64,
) -> Result<Pca> {
    if prompts.len() < 3 {
        return Err(Error::Invalid(format!("PCA needs at least 3 prompts, got {}", prompts.len())));
    }
    let point = Point::ResidPost(layer);
    let mut reps = Vec::with_capacity(prompts.len());
    for (i, ids) in prompts.iter().enumerate() {
        let pos = super::index_from_end(position, ids.len()).ok_or_else(|| {
            Error::Invalid(format!("position {position} is outside prompt {i}'s {} tokens", ids.len()))
        })?;
        let caps = super::capture::capture(model, ids, [point])?;
        reps.push(super::capture::row(&caps[&point], pos).to_vec());
    }
    pca(&reps, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_dominant_direction() {
        // Points along (1, 2, 0) with a little spread along (0, 0, 1).
        let rows: Vec<Vec<f32>> =
            (0..10).map(|i| vec![i as f32, 2.0 * i as f32, ((i % 3) as f32) * 0.1]).collect();
        let p = pca(&rows, 2).unwrap();
        let c = &p.components[0];
        let cos = (c[0] + 2.0 * c[1]) / 5f64.sqrt();
        assert!(cos.abs() > 0.9999, "{c:?}");
        assert!(p.explained[0] > 0.99 && p.explained[0] + p.explained[1] <= 1.0 + 1e-9);
        // Scores along the first component are the projections of the centred points.
        let proj: Vec<f64> = rows
            .iter()
            .map(|r| (r[0] as f64 - 4.5) * c[0] + (r[1] as f64 - 9.0) * c[1] + (r[2] as f64 - 0.09) * c[2])
            .collect();
        for (a, b) in p.coords.iter().zip(&proj) {
            assert!((a[0] - b).abs() < 1e-6, "{a:?} vs {b}");
        }
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        assert!(pca(&[vec![1.0, 2.0]], 2).is_err());
        assert!(pca(&[vec![1.0, 2.0], vec![1.0, 2.0]], 2).is_err());
    }
}
