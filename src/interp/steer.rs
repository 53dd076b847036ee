//! Steering vectors (representation engineering): built from contrasting prompts, stored as
//! llama.cpp control vectors, added to or projected out of the residual stream while generating.
//!
//! Layer convention: llama.cpp applies the control-vector tensor `direction.N` to the output of
//! block N (0-based) — scalpel's `blocks.N.resid_post`. Files written here follow it, so vectors
//! move between the two tools unchanged. `direction.0` is not valid in llama.cpp (its layer
//! indices start at 1), so a vector for `blocks.0.resid_post` cannot be stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Result;
use crate::backend::Backend;
use crate::error::Error;
use crate::forward::Model;
use crate::model::gguf::{GgufFile, GgufWriter, Value};
use crate::probe::{Edit, Point, Positions, Probes};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlVector {
    /// resid_post layer (0-based) → direction.
    pub directions: BTreeMap<usize, Vec<f32>>,
    pub model_hint: String,
}

impl ControlVector {
    pub fn width(&self) -> usize {
        self.directions.values().next().map_or(0, Vec::len)
    }

    /// Reads a llama.cpp control-vector GGUF (general.architecture = controlvector).
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_gguf(GgufFile::open(path)?)
    }

    /// From a control-vector GGUF already parsed (a file, or bytes in memory).
    pub fn from_gguf(g: GgufFile) -> Result<Self> {
        let path = g.path.clone();
        let path = path.as_path();
        let arch = g.opt_str("general.architecture")?.unwrap_or("");
        if arch != "controlvector" {
            return Err(Error::format(
                path,
                "general.architecture",
                format!("{arch:?}, expected \"controlvector\""),
            ));
        }
        let mut directions = BTreeMap::new();
        for t in g.tensors() {
            let layer: usize = t
                .name
                .strip_prefix("direction.")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::format(path, &t.name, "tensor is not named direction.<layer>"))?;
            if layer == 0 {
                return Err(Error::format(
                    path,
                    &t.name,
                    "layer 0 is not valid (llama.cpp's indices start at 1)",
                ));
            }
            if t.dims.len() != 1 {
                return Err(Error::format(
                    path,
                    &t.name,
                    format!("shape {:?}, expected a vector", t.shape()),
                ));
            }
            let v = crate::model::quant::dequantize(t.dtype, g.tensor_bytes(t), t.n_elements() as usize)?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::format(path, &t.name, "holds NaN or infinity"));
            }
            directions.insert(layer, v);
        }
        let cv = ControlVector {
            directions,
            model_hint: g.opt_str("controlvector.model_hint")?.unwrap_or("").to_string(),
        };
        if cv.directions.is_empty() {
            return Err(Error::format(path, "tensors", "no direction.<layer> tensors"));
        }
        let w = cv.width();
        if let Some((l, v)) = cv.directions.iter().find(|(_, v)| v.len() != w) {
            return Err(Error::format(
                path,
                format!("direction.{l}"),
                format!("{} values, others have {w}", v.len()),
            ));
        }
        Ok(cv)
    }

    pub fn to_gguf(&self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str("controlvector".into()))
            .meta("controlvector.model_hint", Value::Str(self.model_hint.clone()))
            .meta("controlvector.layer_count", Value::U32(self.directions.len() as u32));
        for (l, v) in &self.directions {
            w.tensor(&format!("direction.{l}"), &[v.len()], v.clone());
        }
        w.to_bytes()
    }

    pub fn write(&self, path: &Path, force: bool) -> Result<()> {
        let bytes = self.to_gguf();
        crate::dump::write_atomic(path, force, |f| std::io::Write::write_all(f, &bytes))
    }

    /// Checks the vector fits the model.
    pub fn check_fits(&self, hidden: usize, n_layers: usize, path: &Path) -> Result<()> {
        if self.width() != hidden {
            return Err(Error::Invalid(format!(
                "{}: directions of {} values, but the model's hidden size is {hidden}",
                path.display(),
                self.width()
            )));
        }
        if let Some(l) = self.directions.keys().find(|&&l| l >= n_layers) {
            return Err(Error::Invalid(format!(
                "{}: direction.{l} is past the model's {n_layers} layers",
                path.display()
            )));
        }
        Ok(())
    }
}

/// `FILE[:SCALE][@LAYERS]` as given to --steer (SCALE defaults to 1) or --ablate (no scale).
#[derive(Clone, Debug, PartialEq)]
pub struct VectorSpec {
    pub path: PathBuf,
    pub scale: f32,
    pub layers: Option<String>,
}

impl std::str::FromStr for VectorSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (rest, layers) = match s.rsplit_once('@') {
            Some((a, b))
                if !b.is_empty() && b.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-')
                    || b == "all" =>
            {
                (a, Some(b.to_string()))
            }
            _ => (s, None),
        };
        // After the last ':' comes a scale, unless the whole is a file that exists or the tail is
        // visibly part of a path (a '/' in it): `happy.gguf:abc` is a bad scale, not a file name.
        let (path, scale) = match rest.rsplit_once(':') {
            Some((p, sc)) if !p.is_empty() && !sc.contains('/') && !Path::new(rest).exists() => {
                match sc.parse::<f32>() {
                    Ok(v) if v.is_finite() => (p, v),
                    Ok(_) => return Err(format!("{s:?}: the scale {sc:?} is not a finite number")),
                    Err(_) => {
                        return Err(format!(
                            "{s:?}: the scale {sc:?} is not a number (FILE[:SCALE][@LAYERS])"
                        ));
                    }
                }
            }
            _ => (rest, 1.0),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: no file"));
        }
        Ok(VectorSpec { path: PathBuf::from(path), scale, layers })
    }
}

/// Adds `scale` × each direction at its layer's resid_post, at every position (generated tokens
/// included), for the layers `spec` selects.
pub fn add_steering<B: Backend>(model: &Model<B>, probes: &mut Probes<B>, spec: &VectorSpec) -> Result<()> {
    let cv = ControlVector::read(&spec.path)?;
    steer_with(model, probes, &cv, spec.scale, spec.layers.as_deref(), &Positions::All, &spec.path)
}

/// `add_steering` with a vector in memory, at `positions` (absolute, generated tokens included);
/// `source` names it in messages.
pub fn steer_with<B: Backend>(
    model: &Model<B>,
    probes: &mut Probes<B>,
    cv: &ControlVector,
    scale: f32,
    layers: Option<&str>,
    positions: &Positions,
    source: &Path,
) -> Result<()> {
    let c = &model.config;
    cv.check_fits(c.hidden_size, c.n_layers, source)?;
    let chosen = match layers {
        Some(l) => super::parse_layers(l, c.n_layers)?,
        None => cv.directions.keys().copied().collect(),
    };
    let mut any = false;
    for l in chosen {
        if let Some(v) = cv.directions.get(&l) {
            let vector = model.backend.upload(v, &[v.len()])?;
            probes.edit(Point::ResidPost(l), Edit::Add { vector, scale, positions: positions.clone() })?;
            any = true;
        }
    }
    if !any {
        return Err(Error::Invalid(format!(
            "{}: none of the selected layers has a direction (the vector has layers {:?})",
            source.display(),
            cv.directions.keys().collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Projects the direction out of the residual stream after every sublayer of the selected layers
/// (all by default): a file with one direction uses it everywhere, otherwise each layer its own.
pub fn add_ablation<B: Backend>(model: &Model<B>, probes: &mut Probes<B>, spec: &VectorSpec) -> Result<()> {
    let cv = ControlVector::read(&spec.path)?;
    ablate_with(model, probes, &cv, spec.layers.as_deref(), &Positions::All, &spec.path)
}

/// `add_ablation` with a vector in memory, at `positions`; `source` names it in messages.
pub fn ablate_with<B: Backend>(
    model: &Model<B>,
    probes: &mut Probes<B>,
    cv: &ControlVector,
    layers: Option<&str>,
    positions: &Positions,
    source: &Path,
) -> Result<()> {
    let c = &model.config;
    cv.check_fits(c.hidden_size, c.n_layers, source)?;
    let layers = match layers {
        Some(l) => super::parse_layers(l, c.n_layers)?,
        None => (0..c.n_layers).collect(),
    };
    let single = (cv.directions.len() == 1).then(|| cv.directions.values().next().expect("one"));
    for l in layers {
        let Some(v) = cv.directions.get(&l).or(single) else { continue };
        let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(Error::Invalid(format!("{}: the direction for layer {l} is zero", source.display())));
        }
        let unit: Vec<f32> = v.iter().map(|x| (*x as f64 / norm) as f32).collect();
        let mut points = vec![Point::ResidMid(l), Point::ResidPost(l)];
        if l == 0 {
            points.insert(0, Point::Embed);
        }
        for p in points {
            let unit = model.backend.upload(&unit, &[unit.len()])?;
            probes.edit(p, Edit::Ablate { unit, positions: positions.clone() })?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Method {
    /// Mean of the positive prompts' representations minus mean of the negatives'.
    Mean,
    /// First principal component of the paired differences (positive i − negative i), scaled
    /// to the mean projection of the differences, signed so positives project higher.
    Pca,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum StreamPoint {
    ResidPre,
    ResidPost,
}

/// Last-token representations of every prompt at the chosen point of each layer: [layer][prompt].
fn last_token_reps<B: Backend>(
    model: &Model<B>,
    prompts: &[Vec<u32>],
    points: &[Point],
) -> Result<Vec<Vec<Vec<f32>>>> {
    let mut out = vec![Vec::with_capacity(prompts.len()); points.len()];
    for ids in prompts {
        let caps = super::capture::capture(model, ids, points.iter().copied())?;
        for (i, p) in points.iter().enumerate() {
            out[i].push(super::capture::row(&caps[p], ids.len() - 1).to_vec());
        }
    }
    Ok(out)
}

/// Builds one direction per chosen layer from positive and negative prompts. The result is keyed
/// by the resid_post layer it applies to (resid_pre of layer l is resid_post of l − 1).
pub fn build<B: Backend>(
    model: &Model<B>,
    positive: &[Vec<u32>],
    negative: &[Vec<u32>],
    layers: &[usize],
    point: StreamPoint,
    method: Method,
) -> Result<BTreeMap<usize, Vec<f32>>> {
    if positive.is_empty() || negative.is_empty() {
        return Err(Error::Invalid("steer build needs at least one positive and one negative prompt".into()));
    }
    if method == Method::Pca && positive.len() != negative.len() {
        return Err(Error::Invalid(format!(
            "--method pca pairs prompts line by line: {} positive vs {} negative",
            positive.len(),
            negative.len()
        )));
    }
    if method == Method::Pca && positive.len() < 2 {
        return Err(Error::Invalid("--method pca needs at least two pairs".into()));
    }
    let (points, keys): (Vec<Point>, Vec<usize>) = layers
        .iter()
        .filter_map(|&l| match point {
            StreamPoint::ResidPost => Some((Point::ResidPost(l), l)),
            StreamPoint::ResidPre if l >= 1 => Some((Point::ResidPre(l), l - 1)),
            StreamPoint::ResidPre => None,
        })
        .unzip();
    if points.is_empty() {
        return Err(Error::Invalid(
            "no layer left to build a vector for (resid_pre of layer 0 is the embedding)".into(),
        ));
    }
    let pos = last_token_reps(model, positive, &points)?;
    let neg = last_token_reps(model, negative, &points)?;
    let mean = |rows: &[Vec<f32>]| -> Vec<f64> {
        let d = rows[0].len();
        (0..d).map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / rows.len() as f64).collect()
    };
    let mut out = BTreeMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (mp, mn) = (mean(&pos[i]), mean(&neg[i]));
        let v: Vec<f32> = match method {
            Method::Mean => mp.iter().zip(&mn).map(|(a, b)| (a - b) as f32).collect(),
            Method::Pca => {
                let diffs: Vec<Vec<f32>> = pos[i]
                    .iter()
                    .zip(&neg[i])
                    .map(|(p, n)| p.iter().zip(n).map(|(a, b)| a - b).collect())
                    .collect();
                let pc = super::pca::pca(&diffs, 1)?;
                let mut u = pc.components[0].clone();
                let proj = |r: &Vec<f32>| r.iter().zip(&u).map(|(a, b)| *a as f64 * b).sum::<f64>();
                let gap = pos[i].iter().map(proj).sum::<f64>() / pos[i].len() as f64
                    - neg[i].iter().map(proj).sum::<f64>() / neg[i].len() as f64;
                if gap < 0.0 {
                    u.iter_mut().for_each(|x| *x = -*x);
                }
                let scale = diffs
                    .iter()
                    .map(|d| d.iter().zip(&u).map(|(a, b)| *a as f64 * b).sum::<f64>())
                    .sum::<f64>()
                    / diffs.len() as f64;
                u.iter().map(|x| (x * scale.abs()) as f32).collect()
            }
        };
        out.insert(key, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_from_the_right() {
        let s: VectorSpec = "happy.gguf:4.5@10-12".parse().unwrap();
        assert_eq!(s, VectorSpec { path: "happy.gguf".into(), scale: 4.5, layers: Some("10-12".into()) });
        let s: VectorSpec = "dir:with:colons/v.gguf:-2".parse().unwrap();
        assert_eq!((s.path.to_str().unwrap(), s.scale, s.layers), ("dir:with:colons/v.gguf", -2.0, None));
        let s: VectorSpec = "v.gguf@3,5".parse().unwrap();
        assert_eq!((s.scale, s.layers.as_deref()), (1.0, Some("3,5")));
        let s: VectorSpec = "a@b.gguf".parse().unwrap();
        assert_eq!(s.path.to_str().unwrap(), "a@b.gguf");
        assert!("".parse::<VectorSpec>().is_err());
        let e = "happy.gguf:abc".parse::<VectorSpec>().unwrap_err();
        assert!(e.contains("the scale \"abc\" is not a number"), "{e}");
        assert!("happy.gguf:".parse::<VectorSpec>().is_err());
        assert!("happy.gguf:inf@3".parse::<VectorSpec>().unwrap_err().contains("not a finite number"));
        // A file whose name has a colon is still a file when it exists.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("v.gguf:abc");
        std::fs::write(&odd, b"").unwrap();
        let s: VectorSpec = odd.to_str().unwrap().parse().unwrap();
        assert_eq!((s.path, s.scale), (odd, 1.0));
    }

    #[test]
    fn control_vectors_round_trip() {
        let mut directions = BTreeMap::new();
        directions.insert(3, vec![1.0, -2.0, 0.5]);
        directions.insert(7, vec![0.0, 1.0, 2.0]);
        let cv = ControlVector { directions, model_hint: "llama".into() };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.gguf");
        cv.write(&p, false).unwrap();
        assert_eq!(ControlVector::read(&p).unwrap(), cv);
        assert!(cv.write(&p, false).is_err(), "no overwrite without force");
    }
}
