//! Choosing the extending coefficient λ with the task's own verifier: a grid, or a
//! golden-section search on the validation reward, always against λ = 0 (no jump), with the
//! cost of every evaluation recorded.

use serde::Serialize;

use crate::{Error, Result};

/// One evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub lambda: f64,
    /// Validation reward with the candidate adapter.
    pub score: f64,
    /// Wall seconds spent writing and scoring it.
    pub seconds: f64,
    /// Tokens generated to score it.
    pub tokens: u64,
}

/// How to search.
#[derive(Debug, Clone, PartialEq)]
pub enum Search {
    /// Every λ of the grid.
    Grid(Vec<f64>),
    /// Golden-section search for the best λ in [lo, hi] with `evals` evaluations (assumes the
    /// reward is unimodal in λ there).
    Golden { lo: f64, hi: f64, evals: usize },
}

impl Search {
    /// The default grid: 0.5, 1.0, ..., 4.0.
    pub fn default_grid() -> Self {
        Self::Grid((1..=8).map(|i| i as f64 * 0.5).collect())
    }
}

/// Scores λ = 0 and the candidates `search` asks for; `score(λ)` returns (reward, tokens).
/// Returns every candidate in evaluation order; the best is the one with the highest score
/// (ties go to the smaller jump).
pub fn run(
    search: &Search,
    score: &mut dyn FnMut(f64) -> Result<(f64, u64)>,
) -> Result<Vec<Candidate>> {
    let mut out = vec![];
    let mut eval = |lambda: f64, out: &mut Vec<Candidate>| -> Result<f64> {
        if let Some(c) = out.iter().find(|c: &&Candidate| c.lambda == lambda) {
            return Ok(c.score);
        }
        let t = std::time::Instant::now();
        let (s, tokens) = score(lambda)?;
        out.push(Candidate {
            lambda,
            score: s,
            seconds: t.elapsed().as_secs_f64(),
            tokens,
        });
        Ok(s)
    };
    eval(0.0, &mut out)?;
    match search {
        Search::Grid(grid) => {
            if grid.is_empty() {
                return Err(Error::Invalid("the λ grid is empty".into()));
            }
            if let Some(x) = grid.iter().find(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!("the λ grid holds {x}")));
            }
            for &l in grid {
                eval(l, &mut out)?;
            }
        }
        &Search::Golden { lo, hi, evals } => {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) || evals < 2 {
                return Err(Error::Invalid(format!(
                    "golden-section search needs lo < hi and at least 2 evaluations (got [{lo}, {hi}], {evals})"
                )));
            }
            let phi = (5f64.sqrt() - 1.0) / 2.0;
            let (mut a, mut b) = (lo, hi);
            let mut c = b - phi * (b - a);
            let mut d = a + phi * (b - a);
            let mut fc = eval(c, &mut out)?;
            let mut fd = eval(d, &mut out)?;
            for _ in 2..evals {
                if fc >= fd {
                    b = d;
                    d = c;
                    fd = fc;
                    c = b - phi * (b - a);
                    fc = eval(c, &mut out)?;
                } else {
                    a = c;
                    c = d;
                    fc = fd;
                    d = a + phi * (b - a);
                    fd = eval(d, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

/// The best candidate: highest score, ties to the smaller |λ|.
pub fn best(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates.iter().max_by(|x, y| {
        x.score
            .total_cmp(&y.score)
            .then(y.lambda.abs().total_cmp(&x.lambda.abs()))
    })
}
