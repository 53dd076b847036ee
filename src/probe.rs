//! Probe points and what can be done at them: capture (copy out), add a scaled vector, replace a
//! row, ablate a direction. Names follow TransformerLens (`blocks.{l}.resid_post`, …).
//!
//! The forward pass calls [`Probes::visit`] at every point; a point nobody asked for costs one
//! hash lookup and nothing is copied or computed for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    Embed,
    ResidPre(usize),
    AttnProbs(usize),
    /// Each head's attention-weighted values before the output projection, [T, H, head_dim].
    AttnZ(usize),
    /// Each head's share of `attn_out`, [T, H, d]: computed only when asked for.
    HeadOut(usize),
    AttnOut(usize),
    ResidMid(usize),
    MlpPost(usize),
    MlpOut(usize),
    ResidPost(usize),
    FinalNorm,
    Logits,
}

impl Point {
    /// Every point of a model with `n_layers` layers, in the order the forward pass visits them.
    pub fn all(n_layers: usize) -> Vec<Point> {
        let mut v = vec![Point::Embed];
        for l in 0..n_layers {
            v.extend([
                Point::ResidPre(l),
                Point::AttnProbs(l),
                Point::AttnZ(l),
                Point::HeadOut(l),
                Point::AttnOut(l),
                Point::ResidMid(l),
                Point::MlpPost(l),
                Point::MlpOut(l),
                Point::ResidPost(l),
            ]);
        }
        v.extend([Point::FinalNorm, Point::Logits]);
        v
    }

    pub fn layer(self) -> Option<usize> {
        match self {
            Point::ResidPre(l)
            | Point::AttnProbs(l)
            | Point::AttnZ(l)
            | Point::HeadOut(l)
            | Point::AttnOut(l)
            | Point::ResidMid(l)
            | Point::MlpPost(l)
            | Point::MlpOut(l)
            | Point::ResidPost(l) => Some(l),
            _ => None,
        }
    }

    /// Points whose rows live in the residual stream (width = hidden size).
    pub fn is_residual(self) -> bool {
        matches!(
            self,
            Point::Embed
                | Point::ResidPre(_)
                | Point::ResidMid(_)
                | Point::ResidPost(_)
                | Point::AttnOut(_)
                | Point::MlpOut(_)
                | Point::FinalNorm
        )
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Embed => write!(f, "embed"),
            Point::ResidPre(l) => write!(f, "blocks.{l}.resid_pre"),
            Point::AttnProbs(l) => write!(f, "blocks.{l}.attn_probs"),
            Point::AttnZ(l) => write!(f, "blocks.{l}.attn_z"),
            Point::HeadOut(l) => write!(f, "blocks.{l}.head_out"),
            Point::AttnOut(l) => write!(f, "blocks.{l}.attn_out"),
            Point::ResidMid(l) => write!(f, "blocks.{l}.resid_mid"),
            Point::MlpPost(l) => write!(f, "blocks.{l}.mlp_post"),
            Point::MlpOut(l) => write!(f, "blocks.{l}.mlp_out"),
            Point::ResidPost(l) => write!(f, "blocks.{l}.resid_post"),
            Point::FinalNorm => write!(f, "final_norm"),
            Point::Logits => write!(f, "logits"),
        }
    }
}

impl FromStr for Point {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "unknown probe point {s:?} (e.g. embed, blocks.3.resid_post, final_norm, logits)"
            ))
        };
        match s {
            "embed" => return Ok(Point::Embed),
            "final_norm" => return Ok(Point::FinalNorm),
            "logits" => return Ok(Point::Logits),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (l, name) = rest.split_once('.').ok_or_else(bad)?;
        let l: usize = l.parse().map_err(|_| bad())?;
        Ok(match name {
            "resid_pre" => Point::ResidPre(l),
            "attn_probs" => Point::AttnProbs(l),
            "attn_z" => Point::AttnZ(l),
            "head_out" => Point::HeadOut(l),
            "attn_out" => Point::AttnOut(l),
            "resid_mid" => Point::ResidMid(l),
            "mlp_post" => Point::MlpPost(l),
            "mlp_out" => Point::MlpOut(l),
            "resid_post" => Point::ResidPost(l),
            _ => return Err(bad()),
        })
    }
}

/// Glob match with `*` (any run of characters).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Expands comma-separated patterns (`blocks.*.resid_post,logits`) to points, in forward order.
/// A pattern that matches nothing is an error: it is almost always a typo or a layer past the end.
pub fn select(patterns: &str, n_layers: usize) -> Result<Vec<Point>> {
    let all = Point::all(n_layers);
    let mut chosen = HashSet::new();
    for pat in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut any = false;
        for p in &all {
            if glob(pat, &p.to_string()) {
                chosen.insert(*p);
                any = true;
            }
        }
        if !any {
            if let Ok(p) = pat.parse::<Point>()
                && p.layer().is_some_and(|l| l >= n_layers)
            {
                return Err(Error::Invalid(format!(
                    "probe point {pat}: the model has layers 0..{}",
                    n_layers - 1
                )));
            }
            return Err(Error::Invalid(format!(
                "probe pattern {pat:?} matches no point (points: embed, blocks.{{l}}.{{resid_pre,attn_probs,attn_z,head_out,attn_out,resid_mid,mlp_post,mlp_out,resid_post}}, final_norm, logits)"
            )));
        }
    }
    Ok(all.into_iter().filter(|p| chosen.contains(p)).collect())
}

/// Which absolute token positions an edit applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    All,
    Only(Vec<usize>),
}

impl Positions {
    /// Rows of a forward call covering positions start..start+rows that this selects.
    fn rows(&self, start: usize, rows: usize) -> Vec<usize> {
        match self {
            Positions::All => (0..rows).collect(),
            Positions::Only(ps) => {
                ps.iter().filter(|&&p| p >= start && p < start + rows).map(|&p| p - start).collect()
            }
        }
    }
}

/// An intervention at a point, holding device tensors prepared once.
pub enum Edit<T> {
    /// x ← x + scale · vector.
    Add { vector: T, scale: f32, positions: Positions },
    /// x[position] ← row (a Patchscope's transplanted state).
    Replace { position: usize, row: T },
    /// x ← x − (x·u) u, u a unit vector.
    Ablate { unit: T, positions: Positions },
}

/// A function run at a point with its values (row-major, rows = positions `start..`, `shape` as
/// captured); it may change them in place and says whether it did. The bindings' hooks
/// (`run_with_hooks` in Python) are these: arbitrary code, so the values go through the host.
pub type Hook = Box<dyn FnMut(Point, usize, &[usize], &mut [f32]) -> Result<bool> + Send>;

/// One forward call's capture at one point.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Absolute position of the first row.
    pub start: usize,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub struct Probes<B: Backend> {
    /// Check every point for NaN/Inf and fail where they first appear (`--check-finite`).
    check_finite: bool,
    capture: HashSet<Point>,
    edits: HashMap<Point, Vec<Edit<B::Tensor>>>,
    hooks: HashMap<Point, Vec<Hook>>,
    captured: BTreeMap<Point, Vec<Captured>>,
}

impl<B: Backend> Default for Probes<B> {
    fn default() -> Self {
        Probes {
            check_finite: false,
            capture: HashSet::new(),
            edits: HashMap::new(),
            hooks: HashMap::new(),
            captured: BTreeMap::new(),
        }
    }
}

impl<B: Backend> Probes<B> {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn capturing(points: impl IntoIterator<Item = Point>) -> Self {
        let mut p = Self::default();
        p.capture.extend(points);
        p
    }

    pub fn capture(&mut self, point: Point) {
        self.capture.insert(point);
    }

    pub fn edit(&mut self, point: Point, edit: Edit<B::Tensor>) -> Result<()> {
        if matches!(point, Point::AttnProbs(_)) {
            return Err(Error::Invalid(format!("{point} can be captured but not edited")));
        }
        self.edits.entry(point).or_default().push(edit);
        Ok(())
    }

    /// Runs `hook` at `point` in every forward call, after the edits and before the capture. At
    /// `attn_probs` (observed, never edited) a hook that changes the values is an error.
    pub fn hook(&mut self, point: Point, hook: Hook) {
        self.hooks.entry(point).or_default().push(hook);
    }

    /// Checks every point of every forward pass for NaN or infinity, so the error names where
    /// they first appeared (this copies every point to the host: slow, for debugging).
    pub fn check_finite(&mut self, on: bool) {
        self.check_finite = on;
    }

    pub fn is_empty(&self) -> bool {
        self.capture.is_empty() && self.edits.is_empty() && self.hooks.is_empty() && !self.check_finite
    }

    /// Whether anyone asked for this point.
    pub fn wants(&self, point: Point) -> bool {
        self.check_finite
            || self.capture.contains(&point)
            || self.edits.contains_key(&point)
            || self.hooks.contains_key(&point)
    }

    /// Whether someone asked for this point itself (a capture, an edit or a hook), not only for
    /// every point (`check_finite`): what a point computed on request only (`head_out`) needs.
    pub fn requests(&self, point: Point) -> bool {
        self.capture.contains(&point) || self.edits.contains_key(&point) || self.hooks.contains_key(&point)
    }

    /// Whether a decode step with these probes can be recorded once and replayed: nothing to
    /// copy out, and no edit whose rows depend on the position.
    pub fn replayable(&self) -> bool {
        self.capture.is_empty()
            && self.hooks.is_empty()
            && !self.check_finite
            && self.edits.values().flatten().all(|e| match e {
                Edit::Add { positions, .. } | Edit::Ablate { positions, .. } => *positions == Positions::All,
                Edit::Replace { .. } => false,
            })
    }

    /// Whether anyone reads the point without editing it (a capture or a hook): what an
    /// observed-only point (`attn_probs`) is computed for.
    pub fn observes(&self, point: Point) -> bool {
        self.capture.contains(&point) || self.hooks.contains_key(&point)
    }

    /// Applies the edits at `point` to x (rows = positions start..), then captures it if asked.
    /// Says whether an edit or a hook may have changed x.
    pub fn visit(&mut self, backend: &B, point: Point, x: &mut B::Tensor, start: usize) -> Result<bool> {
        let mut changed = false;
        if let Some(edits) = self.edits.get(&point) {
            changed = !edits.is_empty();
            let rows = x.rows();
            for e in edits {
                match e {
                    Edit::Add { vector, scale, positions } => {
                        backend.add_rows(x, vector, *scale, &positions.rows(start, rows))?
                    }
                    Edit::Replace { position, row } => {
                        if *position >= start && *position < start + rows {
                            backend.set_row(x, position - start, row)?;
                        }
                    }
                    Edit::Ablate { unit, positions } => {
                        backend.ablate_rows(x, unit, &positions.rows(start, rows))?
                    }
                }
            }
        }
        if let Some(data) = self.call_hooks(backend, point, x, start)? {
            *x = backend.upload(&data, x.shape())?;
            changed = true;
        }
        if self.check_finite {
            let data = backend.download(x)?;
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                let row = i / x.row_len().max(1);
                return Err(Error::Invalid(format!(
                    "non-finite values ({}) first appear at {point}, position {}",
                    data[i],
                    start + row
                )));
            }
        }
        self.keep(backend, point, x, start)?;
        Ok(changed)
    }

    /// Captures a tensor that is only observed, never edited (attention probabilities).
    pub fn record(&mut self, backend: &B, point: Point, x: &B::Tensor, start: usize) -> Result<()> {
        if self.call_hooks(backend, point, x, start)?.is_some() {
            return Err(Error::Invalid(format!("{point} can be observed by a hook but not changed")));
        }
        self.keep(backend, point, x, start)
    }

    /// Runs the point's hooks on a host copy of x; returns the values if any hook changed them.
    fn call_hooks(
        &mut self,
        backend: &B,
        point: Point,
        x: &B::Tensor,
        start: usize,
    ) -> Result<Option<Vec<f32>>> {
        let Some(hooks) = self.hooks.get_mut(&point) else { return Ok(None) };
        let mut data = backend.download(x)?;
        let mut changed = false;
        for h in hooks.iter_mut() {
            changed |= h(point, start, x.shape(), &mut data)?;
        }
        Ok(changed.then_some(data))
    }

    /// Copies the point out if it is captured.
    fn keep(&mut self, backend: &B, point: Point, x: &B::Tensor, start: usize) -> Result<()> {
        if self.capture.contains(&point) {
            let data = backend.download(x)?;
            self.captured.entry(point).or_default().push(Captured { start, shape: x.shape().to_vec(), data });
        }
        Ok(())
    }

    /// Everything captured so far, per point, one entry per forward call.
    pub fn captured(&self) -> &BTreeMap<Point, Vec<Captured>> {
        &self.captured
    }

    pub fn take_captured(&mut self) -> BTreeMap<Point, Vec<Captured>> {
        std::mem::take(&mut self.captured)
    }
}

/// Rows of a tensor that belong to one sequence: `len` rows from `row`, at positions `start..`
/// of that sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub row: usize,
    pub len: usize,
    pub start: usize,
}

impl Span {
    pub fn of(seqs: &[crate::backend::SeqSpan]) -> Vec<Span> {
        seqs.iter().map(|s| Span { row: s.row, len: s.len, start: s.start }).collect()
    }
}

/// The probes of every sequence of a step, one [`Probes`] each, in the step's order: each sees
/// and edits only its own rows, with positions in its own numbering, exactly as it would alone.
pub struct StepProbes<'a, 'p, B: Backend> {
    pub each: &'a mut [&'p mut Probes<B>],
}

impl<B: Backend> StepProbes<'_, '_, B> {
    /// Whether any sequence asked for the point.
    pub fn wants(&self, point: Point) -> bool {
        self.each.iter().any(|p| p.wants(point))
    }

    pub fn requests(&self, point: Point) -> bool {
        self.each.iter().any(|p| p.requests(point))
    }

    pub fn observes(&self, point: Point) -> bool {
        self.each.iter().any(|p| p.observes(point))
    }

    /// Visits the point for each sequence that wants it, on its rows of x (`spans`, one per
    /// sequence): a copy of them, written back if an edit or hook changed it. A tensor that is one
    /// sequence's rows and nothing else is visited in place. Says whether x may have changed.
    pub fn visit(&mut self, be: &B, point: Point, x: &mut B::Tensor, spans: &[Span]) -> Result<bool> {
        if let [only] = spans
            && only.row == 0
            && only.len == x.rows()
        {
            return self.each[0].visit(be, point, x, only.start);
        }
        let mut changed = false;
        for (s, p) in spans.iter().zip(self.each.iter_mut()) {
            if !p.wants(point) {
                continue;
            }
            let rows: Vec<usize> = (s.row..s.row + s.len).collect();
            let mut mine = be.gather_rows(x, &rows)?;
            if p.visit(be, point, &mut mine, s.start)? {
                be.write_rows(x, s.row, &mine)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Point::all(3) {
            assert_eq!(p.to_string().parse::<Point>().unwrap(), p);
        }
        assert!("blocks.x.resid_post".parse::<Point>().is_err());
        assert!("blocks.1.resid".parse::<Point>().is_err());
    }

    #[test]
    fn patterns_select_in_forward_order() {
        let s = select("logits,blocks.*.resid_post,embed", 2).unwrap();
        assert_eq!(s, vec![Point::Embed, Point::ResidPost(0), Point::ResidPost(1), Point::Logits]);
        assert_eq!(select("blocks.1.*", 2).unwrap().len(), 9);
        assert!(select("blocks.5.resid_post", 2).unwrap_err().to_string().contains("layers 0..1"));
        assert!(select("resid", 2).is_err());
    }

    #[test]
    fn glob_matches() {
        assert!(glob("blocks.*.resid_post", "blocks.12.resid_post"));
        assert!(!glob("blocks.*.resid_post", "blocks.12.resid_pre"));
        assert!(glob("*", "logits"));
        assert!(glob("blocks.1*.attn_*", "blocks.17.attn_out"));
    }
}
