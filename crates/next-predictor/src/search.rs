//! Choosing the extending coefficient λ with the task's own verifier: a grid, or a
//! golden-section search on the validation reward, always against λ = 0 (no jump), with the
//! cost of every evaluation recorded.

use serde::Serialize;

use crate::Error;

/// One evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Candidate {
    pub lambda: f64,
    /// Validation reward with the candidate adapter.
    pub score: f64,
    /// Wall seconds spent scoring it (its share of the batch it was scored in).
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

/// (reward, tokens) of each λ of a batch, or the scorer's error.
pub type Scores<E> = std::result::Result<Vec<(f64, u64)>, E>;

/// Scores λ = 0 and the candidates `search` asks for, in batches: `score(λs)` returns
/// (reward, tokens) for every λ of the batch, so a scorer can evaluate them together (a grid is
/// one batch; golden-section search starts with λ = 0 and its first pair, then one at a time).
/// Returns every candidate in evaluation order, λ = 0 first; the best is the one with the
/// highest score (ties go to the smaller jump). Errors of `score` come back unchanged.
pub fn run<E: From<Error>>(
    search: &Search,
    score: &mut dyn FnMut(&[f64]) -> Scores<E>,
) -> std::result::Result<Vec<Candidate>, E> {
    let mut out: Vec<Candidate> = vec![];
    // Scores the λs not scored yet as one batch; returns the scores of all of `lambdas`.
    let mut eval =
        |lambdas: &[f64], out: &mut Vec<Candidate>| -> std::result::Result<Vec<f64>, E> {
            let mut new: Vec<f64> = vec![];
            for &l in lambdas {
                if !out.iter().any(|c| c.lambda == l) && !new.contains(&l) {
                    new.push(l);
                }
            }
            if !new.is_empty() {
                let t = std::time::Instant::now();
                let scores = score(&new)?;
                if scores.len() != new.len() {
                    return Err(Error::Invalid(format!(
                        "the scorer returned {} scores for {} candidates",
                        scores.len(),
                        new.len()
                    ))
                    .into());
                }
                // The batch's time, shared evenly: what each candidate cost.
                let seconds = t.elapsed().as_secs_f64() / new.len() as f64;
                for (&lambda, (s, tokens)) in new.iter().zip(scores) {
                    out.push(Candidate {
                        lambda,
                        score: s,
                        seconds,
                        tokens,
                    });
                }
            }
            Ok(lambdas
                .iter()
                .map(|l| {
                    out.iter()
                        .find(|c| c.lambda == *l)
                        .map_or(f64::NAN, |c| c.score)
                })
                .collect())
        };
    match search {
        Search::Grid(grid) => {
            if grid.is_empty() {
                return Err(Error::Invalid("the λ grid is empty".into()).into());
            }
            if let Some(x) = grid.iter().find(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!("the λ grid holds {x}")).into());
            }
            let all: Vec<f64> = std::iter::once(0.0).chain(grid.iter().copied()).collect();
            eval(&all, &mut out)?;
        }
        &Search::Golden { lo, hi, evals } => {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) || evals < 2 {
                return Err(Error::Invalid(format!(
                    "golden-section search needs lo < hi and at least 2 evaluations (got [{lo}, {hi}], {evals})"
                ))
                .into());
            }
            let phi = (5f64.sqrt() - 1.0) / 2.0;
            let (mut a, mut b) = (lo, hi);
            let mut c = b - phi * (b - a);
            let mut d = a + phi * (b - a);
            let first = eval(&[0.0, c, d], &mut out)?;
            let (mut fc, mut fd) = (first[1], first[2]);
            for _ in 2..evals {
                if fc >= fd {
                    b = d;
                    d = c;
                    fd = fc;
                    c = b - phi * (b - a);
                    fc = eval(&[c], &mut out)?[0];
                } else {
                    a = c;
                    c = d;
                    fc = fd;
                    d = a + phi * (b - a);
                    fd = eval(&[d], &mut out)?[0];
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
