//! Statistics of the experiment: the targets (levels on the way from the base accuracy to the
//! plateau), read off curves smoothed over a few validations; what reaching one cost in steps
//! and wall clock; the tuned baseline; and the relative saving of a method against a reference
//! on the same seeds, with a percentile bootstrap interval over the seeds and the verdict it
//! supports.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Baseline, JumpCost, Plan, Point};

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

/// Paired seeds a verdict needs: a bootstrap over fewer cannot show the spread (two seeds with
/// equal differences give an interval of zero width, whatever the noise).
pub const MIN_SEEDS: usize = 3;

impl Interval {
    /// Saves or costs when the whole interval is on one side of zero and at least
    /// [`MIN_SEEDS`] seeds are paired; not resolved otherwise.
    pub fn verdict(&self) -> Verdict {
        if self.n < MIN_SEEDS || self.lo.is_nan() || self.hi.is_nan() {
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

/// The targets of an experiment: `base + f (plateau − base)` for each fraction f, with the base
/// accuracy and the plateau (final accuracy) averaged over the given baselines (the reporting
/// seeds' baselines at the arms' rate; the tuning's same-LR ones for choosing B*).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    pub base: f64,
    pub plateau: f64,
    /// (fraction, accuracy level)
    pub levels: Vec<(f64, f64)>,
}

impl Targets {
    pub fn new(fractions: &[f64], baselines: &[&Baseline]) -> Self {
        let mean = |f: &dyn Fn(&Baseline) -> f64| {
            baselines.iter().map(|b| f(b)).sum::<f64>() / baselines.len().max(1) as f64
        };
        let base = mean(&|b| b.curve.first().map_or(f64::NAN, |p| p.accuracy));
        let plateau = mean(&|b| b.target);
        Targets {
            base,
            plateau,
            levels: fractions
                .iter()
                .map(|&f| (f, base + f * (plateau - base)))
                .collect(),
        }
    }

    /// The accuracy level of fraction `f`.
    pub fn level(&self, f: f64) -> f64 {
        self.levels
            .iter()
            .find(|(x, _)| *x == f)
            .map_or(f64::NAN, |l| l.1)
    }
}

/// The curve with each accuracy replaced by the mean of it and the `n − 1` validations before.
pub fn smoothed(curve: &[Point], n: usize) -> Vec<Point> {
    (0..curve.len())
        .map(|i| {
            let w = &curve[i.saturating_sub(n.max(1) - 1)..=i];
            Point {
                accuracy: w.iter().map(|p| p.accuracy).sum::<f64>() / w.len() as f64,
                ..curve[i]
            }
        })
        .collect()
}

/// What reaching a target cost one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// RL steps to the first smoothed validation at or above the level; a run that never gets
    /// there counts one validation interval past its end.
    pub steps: f64,
    pub reached: bool,
    /// Wall clock as measured (its RL steps and jump overheads).
    pub measured: f64,
    /// Wall clock as modelled: the steps at the baseline's median seconds per step, plus the
    /// measured overhead of every jump made before the target was reached.
    pub modelled: f64,
}

/// The cost of reaching `level` on `curve` (jumps `jumps`; `step_seconds` the median RL step of
/// the seed's baseline).
pub fn cost(
    curve: &[Point],
    level: f64,
    plan: &Plan,
    step_seconds: f64,
    jumps: &[JumpCost],
) -> Cost {
    let smooth = smoothed(curve, plan.experiment.smooth);
    let overhead = |step: usize| -> f64 {
        jumps
            .iter()
            .filter(|j| j.step <= step)
            .map(|j| j.seconds)
            .sum()
    };
    if let Some(p) = smooth.iter().find(|p| p.accuracy >= level) {
        return Cost {
            steps: p.step as f64,
            reached: true,
            measured: p.seconds,
            modelled: p.step as f64 * step_seconds + overhead(p.step),
        };
    }
    let never = plan.steps + plan.val_every;
    let last = curve.last().copied().unwrap_or(Point {
        step: 0,
        accuracy: f64::NAN,
        seconds: 0.0,
    });
    let per_step = if last.step > 0 {
        last.seconds / last.step as f64
    } else {
        0.0
    };
    Cost {
        steps: never as f64,
        reached: false,
        measured: last.seconds + never.saturating_sub(last.step) as f64 * per_step,
        modelled: never as f64 * step_seconds + overhead(never),
    }
}

/// Mean steps to the accuracy `level` of each learning-rate multiple's tuning baselines:
/// `(scale, mean steps, mean final accuracy)`, by scale.
pub fn scale_costs(plan: &Plan, tuning: &[Baseline], level: f64) -> Vec<(f64, f64, f64)> {
    plan.scales()
        .into_iter()
        .filter_map(|s| {
            let runs: Vec<&Baseline> = tuning.iter().filter(|b| b.lr_scale == s).collect();
            if runs.is_empty() {
                return None;
            }
            let n = runs.len() as f64;
            let steps = runs
                .iter()
                .map(|b| cost(&b.curve, level, plan, b.step_seconds, &[]).steps)
                .sum::<f64>()
                / n;
            let fin = runs.iter().map(|b| b.target).sum::<f64>() / n;
            Some((s, steps, fin))
        })
        .collect()
}

/// B*: the learning-rate multiple whose tuning baselines reach the headline target (from the
/// same-LR tuning baselines) in the fewest steps (ties: the higher final accuracy).
pub fn tuned_scale(plan: &Plan, tuning: &[Baseline]) -> f64 {
    scale_costs(plan, tuning, tuning_level(plan, tuning))
        .into_iter()
        .min_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map_or(1.0, |c| c.0)
}

/// The headline level of the tuning: from its same-LR baselines, as the reporting seeds' is
/// from theirs.
pub fn tuning_level(plan: &Plan, tuning: &[Baseline]) -> f64 {
    let same: Vec<&Baseline> = tuning.iter().filter(|b| b.lr_scale == 1.0).collect();
    Targets::new(&[plan.experiment.headline], &same).level(plan.experiment.headline)
}

/// The learning-rate multiple at which a baseline reaches a level in as many steps as an arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Equivalent {
    /// Log-linear between the two tuned multiples whose mean steps bracket the arm's.
    Scale(f64),
    /// Faster than every tuned multiple (the fastest is this one).
    Above(f64),
    /// Slower than every tuned multiple (the slowest is this one).
    Below(f64),
}

impl std::fmt::Display for Equivalent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Equivalent::Scale(x) => write!(f, "{x:.2}x"),
            Equivalent::Above(x) => write!(f, "> {x}x"),
            Equivalent::Below(x) => write!(f, "< {x}x"),
        }
    }
}

/// Where `steps` falls among the tuned multiples' `costs` (from [`scale_costs`]); None without
/// tuning.
pub fn equivalent_scale(costs: &[(f64, f64, f64)], steps: f64) -> Option<Equivalent> {
    let within = costs.windows(2).find_map(|w| {
        let ((s0, n0, _), (s1, n1, _)) = (w[0], w[1]);
        let (lo, hi) = (n0.min(n1), n0.max(n1));
        if !(lo..=hi).contains(&steps) {
            return None;
        }
        let t = if n1 == n0 {
            0.0
        } else {
            (steps - n0) / (n1 - n0)
        };
        Some(Equivalent::Scale((s0.ln() + t * (s1.ln() - s0.ln())).exp()))
    });
    within.or_else(|| {
        let fastest = costs.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
        let slowest = costs.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        if steps < fastest.1 {
            Some(Equivalent::Above(fastest.0))
        } else if steps > slowest.1 {
            Some(Equivalent::Below(slowest.0))
        } else {
            // One tuned multiple only, matched exactly.
            Some(Equivalent::Scale(fastest.0))
        }
    })
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
        // Two seeds that each save 2 of 8 steps: a zero-width interval, not evidence of a
        // saving (the SmolLM2 experiment's 2-seed report once called this "saves +25%").
        check(&[8.0, 8.0], &[6.0, 6.0], 25.0, Verdict::NotResolved);
        // Three that each save: the smallest number of seeds a verdict rests on.
        check(
            &[8.0, 8.0, 8.0],
            &[6.0, 6.0, 7.0],
            100.0 * 5.0 / 24.0,
            Verdict::Saves,
        );
    }

    #[test]
    fn mean_and_spread() {
        assert_eq!(mean_sd(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(mean_sd(&[5.0]), (5.0, 0.0));
        assert!(mean_sd(&[]).0.is_nan());
    }

    #[test]
    fn equivalent_learning_rate() {
        // (scale, mean steps, final accuracy): faster with a higher rate.
        let costs = [(1.0, 200.0, 0.9), (2.0, 100.0, 0.9), (8.0, 50.0, 0.9)];
        let check = |steps: f64, want: Option<Equivalent>| {
            let got = equivalent_scale(&costs, steps);
            match (got, want) {
                (Some(Equivalent::Scale(a)), Some(Equivalent::Scale(b))) => {
                    assert!((a - b).abs() < 1e-9, "{steps}: {a} != {b}")
                }
                _ => assert_eq!(got, want, "{steps}"),
            }
        };
        check(200.0, Some(Equivalent::Scale(1.0)));
        check(150.0, Some(Equivalent::Scale(2f64.sqrt())));
        check(75.0, Some(Equivalent::Scale(4.0)));
        check(40.0, Some(Equivalent::Above(8.0)));
        check(250.0, Some(Equivalent::Below(1.0)));
        assert_eq!(equivalent_scale(&[], 10.0), None);
        assert_eq!(Equivalent::Above(8.0).to_string(), "> 8x");
        assert_eq!(Equivalent::Scale(1.5).to_string(), "1.50x");
    }
}
