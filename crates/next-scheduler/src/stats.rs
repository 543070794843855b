//! Paired statistics for the experiment: the relative saving of a method against the control
//! on the same seeds, with a percentile bootstrap interval over the seeds, and the verdict it
//! supports.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// An estimate with its confidence interval (NaN bounds with fewer than two pairs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    /// Pairs (seeds) behind it.
    pub n: usize,
}

/// What an interval allows one to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval is above zero.
    Saves,
    /// The whole interval is below zero.
    Costs,
    /// The interval includes zero, or there is no interval.
    NotResolved,
}

impl Interval {
    pub fn verdict(&self) -> Verdict {
        if self.n < 2 || self.lo.is_nan() || self.hi.is_nan() {
            Verdict::NotResolved
        } else if self.lo > 0.0 {
            Verdict::Saves
        } else if self.hi < 0.0 {
            Verdict::Costs
        } else {
            Verdict::NotResolved
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Saves => "saves",
            Verdict::Costs => "costs",
            Verdict::NotResolved => "not resolved",
        })
    }
}

/// 100 · Σ(c − m) / Σ c: the percentage of the control's cost that the method saves.
fn saving(control: &[f64], method: &[f64], idx: &[usize]) -> f64 {
    let c: f64 = idx.iter().map(|&i| control[i]).sum();
    let m: f64 = idx.iter().map(|&i| method[i]).sum();
    100.0 * (c - m) / c
}

/// The relative saving of paired costs (`control[i]` and `method[i]` from the same seed), in
/// percent of the control's total, with a `level` percentile bootstrap interval from
/// `resamples` resamplings of the pairs (seeded, so reports are reproducible).
pub fn paired_saving(
    control: &[f64],
    method: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Interval {
    let n = control.len().min(method.len());
    let all: Vec<usize> = (0..n).collect();
    let estimate = if n == 0 {
        f64::NAN
    } else {
        saving(control, method, &all)
    };
    if n < 2 || resamples == 0 {
        return Interval {
            estimate,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0; n];
    let mut draws: Vec<f64> = (0..resamples)
        .map(|_| {
            for i in idx.iter_mut() {
                *i = rng.random_range(0..n);
            }
            saving(control, method, &idx)
        })
        .filter(|x| x.is_finite())
        .collect();
    draws.sort_by(f64::total_cmp);
    let q = |p: f64| -> f64 {
        if draws.is_empty() {
            return f64::NAN;
        }
        let i = (p * (draws.len() - 1) as f64).round() as usize;
        draws[i.min(draws.len() - 1)]
    };
    let tail = (1.0 - level) / 2.0;
    Interval {
        estimate,
        lo: q(tail),
        hi: q(1.0 - tail),
        n,
    }
}

/// Mean and sample standard deviation (0 for one value, NaN for none).
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, 0.0);
    }
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(control: &[f64], method: &[f64], estimate: f64, verdict: Verdict) {
        let i = paired_saving(control, method, 4000, 0.95, 7);
        assert!(
            (i.estimate - estimate).abs() < 1e-9,
            "estimate {} != {estimate}",
            i.estimate
        );
        assert_eq!(i.verdict(), verdict, "{i:?}");
        if i.n >= 2 {
            assert!(
                i.lo <= i.estimate + 1e-9 && i.estimate <= i.hi + 1e-9,
                "{i:?}"
            );
        }
    }

    #[test]
    fn savings_and_their_verdicts() {
        // Every seed saves between 30 and 50 steps of 100: clearly a saving.
        check(
            &[100.0, 100.0, 100.0, 100.0, 100.0],
            &[60.0, 70.0, 50.0, 65.0, 55.0],
            40.0,
            Verdict::Saves,
        );
        // Every seed costs more.
        check(
            &[100.0, 90.0, 110.0, 100.0],
            &[120.0, 130.0, 125.0, 140.0],
            -28.75,
            Verdict::Costs,
        );
        // Noise in both directions: a positive mean that must not be called a saving.
        check(
            &[100.0, 100.0, 100.0, 100.0, 100.0],
            &[40.0, 150.0, 90.0, 130.0, 60.0],
            6.0,
            Verdict::NotResolved,
        );
        // One seed: an estimate but no interval.
        check(&[100.0], &[50.0], 50.0, Verdict::NotResolved);
    }

    #[test]
    fn mean_and_spread() {
        assert_eq!(mean_sd(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(mean_sd(&[5.0]), (5.0, 0.0));
        assert!(mean_sd(&[]).0.is_nan());
    }
}
