//! Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p and
//! min-p, after an optional repetition penalty — applied in that order, as transformers does.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    /// > 1 discourages tokens already in the prompt or the output (transformers' convention).
    pub repetition_penalty: Option<f32>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: None,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("--temperature {} must be ≥ 0", self.temperature));
        }
        if self.top_k == Some(0) {
            return bad("--top-k must be ≥ 1".into());
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("--top-p {p} must be in (0, 1]"));
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return bad(format!("--min-p {p} must be in [0, 1]"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return bad(format!("--repetition-penalty {r} must be > 0"));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

/// Index of the largest value; the first one on ties (as torch.argmax). NaN never wins.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The sampling rule, shared by the host and the device kernel `scalpel_sample` (its CPU twin):
/// greedy at temperature 0; otherwise z = logits / T, and the candidates are the tokens with
/// z ≥ the largest of three thresholds — the k-th largest z (top-k, ties kept), the value where
/// the descending cumulative probability of the top-k set first reaches top_p, and
/// max z + ln(min_p) — chosen by `u` ∈ [0, 1) walking their cumulative probability in index order.
pub fn pick(logits: &[f32], params: &SamplingParams, u: f64) -> Result<u32> {
    if logits.iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
        return Err(Error::Invalid(
            "the logits contain NaN or infinity: the forward pass produced garbage (--check-finite finds where)".into(),
        ));
    }
    if params.is_greedy() {
        return Ok(argmax(logits) as u32);
    }
    let inv_t = 1.0 / params.temperature;
    let z: Vec<f32> = logits.iter().map(|&x| x * inv_t).collect();
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut floor = f32::NEG_INFINITY;
    if params.top_k.is_some() || params.top_p.is_some_and(|p| p < 1.0) {
        let mut sorted = z.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if let Some(k) = params.top_k.filter(|&k| k < z.len()) {
            floor = sorted[k - 1];
        }
        if let Some(top_p) = params.top_p.filter(|&p| p < 1.0) {
            let kept = sorted.iter().take_while(|&&v| v >= floor);
            let total: f64 = kept.clone().map(|&v| ((v - m) as f64).exp()).sum();
            let need = top_p as f64 * total;
            let mut cum = 0.0;
            for &v in kept {
                cum += ((v - m) as f64).exp();
                if cum >= need {
                    floor = floor.max(v);
                    break;
                }
            }
        }
    }
    if let Some(min_p) = params.min_p.filter(|&p| p > 0.0) {
        floor = floor.max(m + min_p.ln());
    }
    let total: f64 = z.iter().filter(|&&v| v >= floor).map(|&v| ((v - m) as f64).exp()).sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last = None;
    for (i, &v) in z.iter().enumerate() {
        if v < floor {
            continue;
        }
        cum += ((v - m) as f64).exp();
        last = Some(i);
        if target < cum {
            return Ok(i as u32);
        }
    }
    Ok(last.expect("the largest logit always passes") as u32)
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next uniform number in [0, 1) of this sampler's stream (53 random bits). Greedy
    /// sampling draws none.
    pub fn next_uniform(&mut self) -> f64 {
        if self.params.is_greedy() {
            return 0.0;
        }
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a token from one row of logits with the uniform number `u`; `history` is every token
    /// so far (prompt included), for the repetition penalty.
    pub fn pick_with(&self, logits: &[f32], history: &[u32], u: f64) -> Result<u32> {
        match self.params.repetition_penalty {
            Some(penalty) => {
                let mut logits = logits.to_vec();
                let mut seen = history.to_vec();
                seen.sort_unstable();
                seen.dedup();
                for &id in &seen {
                    if let Some(l) = logits.get_mut(id as usize) {
                        *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
                    }
                }
                pick(&logits, &self.params, u)
            }
            None => pick(logits, &self.params, u),
        }
    }

    /// Draws the next uniform number and picks a token with it.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        let u = self.next_uniform();
        self.pick_with(logits, history, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams { temperature: t, seed: 7, ..Default::default() }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(params(0.0)).unwrap();
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, -1.0], &[]).unwrap(), 1);
    }

    #[test]
    fn nan_is_an_error() {
        let mut s = Sampler::new(params(0.0)).unwrap();
        assert!(s.sample(&[1.0, f32::NAN], &[]).is_err());
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams { top_k: Some(1), ..params(1.5) }).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 0.3, 2.0, 1.9], &[]).unwrap(), 2);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probabilities ≈ 0.64, 0.24, 0.09, 0.03: top-p 0.8 keeps the first two
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams { top_p: Some(0.8), ..params(1.0) }).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]).unwrap() < 2);
        }
    }

    #[test]
    fn min_p_cuts_unlikely_tokens() {
        let logits = [3.0, 2.9, -5.0, -6.0];
        let mut s = Sampler::new(SamplingParams { min_p: Some(0.1), ..params(1.0) }).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]).unwrap() < 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0, (3.0f32).ln()]; // p = 0.25, 0.75
        let mut s = Sampler::new(params(1.0)).unwrap();
        let draws: Vec<u32> = (0..4000).map(|_| s.sample(&logits, &[]).unwrap()).collect();
        let ones = draws.iter().filter(|&&d| d == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        let mut again = Sampler::new(params(1.0)).unwrap();
        let replay: Vec<u32> = (0..4000).map(|_| again.sample(&logits, &[]).unwrap()).collect();
        assert_eq!(draws, replay);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        let mut s = Sampler::new(SamplingParams { repetition_penalty: Some(2.0), ..params(0.0) }).unwrap();
        // token 0 (logit 3) was seen: 3/2 = 1.5 < 2 → token 1 wins; a negative seen logit doubles.
        assert_eq!(s.sample(&[3.0, 2.0, -1.0], &[0, 0]).unwrap(), 1);
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(Sampler::new(SamplingParams { top_p: Some(0.0), ..params(1.0) }).is_err());
        assert!(Sampler::new(SamplingParams { top_k: Some(0), ..params(1.0) }).is_err());
        assert!(Sampler::new(params(-1.0)).is_err());
        assert!(Sampler::new(params(f32::NAN)).is_err());
    }
}
