//! The report's tables: one row per arm and jump step (paired savings against the control with
//! bootstrap intervals, wall clock with every overhead, accuracies), the mean curves per arm,
//! and the accuracy at equal step budgets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::experiment::{accuracy_at, reached, Arm, Baseline, Plan, Point, Results, CONTROL};
use crate::stats::{mean_sd, paired_saving, Interval, Verdict};

/// One method's line of the results table, at one jump step.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub jump_at: usize,
    pub arm: String,
    /// Seeds in which the arm reached the target by the last step.
    pub reached: usize,
    pub seeds: usize,
    /// Mean RL steps to the target (an arm that never reached it counts `steps + val_every`).
    pub steps_to_target: f64,
    /// Paired against the control, in percent of the control's steps (positive: fewer).
    pub steps_saved: Interval,
    pub steps_saved_lower: Interval,
    pub wall_saved: Interval,
    /// Validation accuracy at the last step: mean and spread over seeds (NaN if stopped early).
    pub final_accuracy: (f64, f64),
    /// Right after the jump, and its difference from the control's accuracy there.
    pub jump_accuracy: f64,
    pub jump_gain: f64,
    pub lambda: f64,
    pub overhead_seconds: f64,
}

impl Row {
    pub fn verdict(&self) -> Verdict {
        self.steps_saved.verdict()
    }
}

/// Steps and seconds to `target` on `curve`; a curve that never gets there counts one
/// validation interval past its end (and the seconds at its end plus that many steps).
pub(super) fn cost(curve: &[Point], target: f64, plan: &Plan) -> (f64, f64) {
    if let Some(p) = reached(curve, target) {
        return (p.step as f64, p.seconds);
    }
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
    let extra = (plan.steps + plan.val_every).saturating_sub(last.step) as f64;
    (
        (plan.steps + plan.val_every) as f64,
        last.seconds + extra * per_step,
    )
}

/// The table: for each jump step, the control first, then the methods in config order.
pub fn rows(plan: &Plan, results: &Results) -> Vec<Row> {
    let e = &plan.experiment;
    let baseline: BTreeMap<u64, &Baseline> =
        results.baselines.iter().map(|b| (b.seed, b)).collect();
    let mut out = vec![];
    for &k in &e.jump_at {
        let arm_of = |seed: u64, name: &str| -> Option<&Arm> {
            results
                .arms
                .iter()
                .find(|a| a.seed == seed && a.jump_at == k && a.name == name)
        };
        for name in plan.arms() {
            // Seeds where both this arm and the control finished (pairs).
            let pairs: Vec<(&Baseline, &Arm, &Arm)> = baseline
                .values()
                .filter_map(|b| Some((*b, arm_of(b.seed, CONTROL)?, arm_of(b.seed, &name)?)))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&Baseline, &Arm) -> f64, which: bool| -> Vec<f64> {
                pairs
                    .iter()
                    .map(|(b, c, a)| f(b, if which { a } else { c }))
                    .collect()
            };
            let steps = |b: &Baseline, a: &Arm| cost(&a.curve, b.target, plan).0;
            let secs = |b: &Baseline, a: &Arm| cost(&a.curve, b.target, plan).1;
            let lower = |b: &Baseline, a: &Arm| cost(&a.curve, b.lower_target, plan).0;
            let seed = 0x5eed ^ k as u64;
            let interval = |f: &dyn Fn(&Baseline, &Arm) -> f64| {
                paired_saving(
                    &col(f, false),
                    &col(f, true),
                    e.resamples,
                    e.confidence,
                    seed,
                )
            };
            let mean = |x: Vec<f64>| mean_sd(&x).0;
            out.push(Row {
                jump_at: k,
                arm: name.clone(),
                reached: pairs
                    .iter()
                    .filter(|(b, _, a)| reached(&a.curve, b.target).is_some())
                    .count(),
                seeds: pairs.len(),
                steps_to_target: mean(col(&steps, true)),
                steps_saved: interval(&steps),
                steps_saved_lower: interval(&lower),
                wall_saved: interval(&secs),
                final_accuracy: mean_sd(&col(&|_, a| accuracy_at(&a.curve, plan.steps), true)),
                jump_accuracy: mean(col(&|_, a| a.jump_accuracy(), true)),
                jump_gain: mean(
                    pairs
                        .iter()
                        .map(|(_, c, a)| a.jump_accuracy() - c.jump_accuracy())
                        .collect(),
                ),
                lambda: mean(col(&|_, a| a.lambda.unwrap_or(0.0), true)),
                overhead_seconds: mean(col(&|_, a| a.overhead.total(), true)),
            });
        }
    }
    out
}

fn pct(i: &Interval) -> String {
    if i.estimate.is_nan() {
        return "–".into();
    }
    if i.lo.is_nan() {
        return format!("{:+.1}% (n={})", i.estimate, i.n);
    }
    format!("{:+.1}% [{:+.1}, {:+.1}]", i.estimate, i.lo, i.hi)
}

fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// The results table as Markdown.
pub fn table(plan: &Plan, rows: &[Row]) -> String {
    let level = (plan.experiment.confidence * 100.0).round();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| K | arm | reached | steps to target | steps saved ({level}% CI) | to lower target | wall clock saved | verdict | final acc (± sd) | acc after jump (vs control) | λ | overhead s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        // The control is what the others are measured against: no saving, gain or λ of its own.
        let vs_control = |x: String| if r.arm == CONTROL { "–".into() } else { x };
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} ± {} | {} ({}) | {} | {} |",
            r.jump_at,
            r.arm,
            r.reached,
            r.seeds,
            num(r.steps_to_target, 1),
            vs_control(pct(&r.steps_saved)),
            vs_control(pct(&r.steps_saved_lower)),
            vs_control(pct(&r.wall_saved)),
            vs_control(r.verdict().to_string()),
            num(r.final_accuracy.0, 3),
            num(r.final_accuracy.1, 3),
            num(r.jump_accuracy, 3),
            vs_control(format!("{:+.3}", r.jump_gain)),
            vs_control(num(r.lambda, 2)),
            num(r.overhead_seconds, 1),
        );
    }
    s
}

/// Mean over seeds of each arm's curve at jump step `k`, by step: (step, accuracy, seconds).
pub(super) fn mean_curves(
    results: &Results,
    k: usize,
    names: &[String],
) -> Vec<(String, Vec<Point>)> {
    let mut out = vec![];
    let mut push = |label: String, curves: Vec<&[Point]>| {
        let mut by: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
        for c in &curves {
            for p in c.iter() {
                let e = by.entry(p.step).or_default();
                e.0 += p.accuracy;
                e.1 += p.seconds;
                e.2 += 1;
            }
        }
        // Only steps every seed has, so an early-stopped seed does not bend the mean.
        let n = curves.len();
        let pts = by
            .into_iter()
            .filter(|(_, v)| v.2 == n)
            .map(|(step, (a, s, m))| Point {
                step,
                accuracy: a / m as f64,
                seconds: s / m as f64,
            })
            .collect();
        out.push((label, pts));
    };
    push(
        "baseline".into(),
        results.baselines.iter().map(|b| &b.curve[..]).collect(),
    );
    for name in names {
        let curves: Vec<&[Point]> = results
            .arms
            .iter()
            .filter(|a| a.jump_at == k && &a.name == name)
            .map(|a| &a.curve[..])
            .collect();
        if !curves.is_empty() {
            push(name.clone(), curves);
        }
    }
    out
}

/// The accuracy at equal step budgets (mean over seeds, `curves` from [`mean_curves`]) at a
/// few steps after the jump at `k`.
pub(super) fn budget_table(plan: &Plan, curves: &[(String, Vec<Point>)], k: usize) -> String {
    let ve = plan.val_every;
    let span = plan.steps - k;
    let mut steps: Vec<usize> = [0, span / 4, span / 2, 3 * span / 4, span]
        .iter()
        .map(|d| k + (d / ve) * ve)
        .collect();
    steps.dedup();
    let mut s = String::new();
    let _ = write!(s, "| arm |");
    for t in &steps {
        let _ = write!(s, " step {t} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in &steps {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for (name, c) in curves {
        let _ = write!(s, "| {name} |");
        for &t in &steps {
            let _ = write!(s, " {} |", num(accuracy_at(c, t), 3));
        }
        s.push('\n');
    }
    s
}
