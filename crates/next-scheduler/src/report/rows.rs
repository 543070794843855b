//! The report's tables: for each jump step, target and arm, the steps and wall clock to the
//! target, paired against the same-LR baseline (the control) and the tuned baseline B* with
//! bootstrap intervals; the accuracies around the jump; the diagnostics; the mean curves per
//! arm; and the accuracy at equal step budgets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::experiment::stats::{
    cost, equivalent_scale, mean_sd, paired_saving, scale_costs, Cost, Equivalent, Interval,
    Targets, Verdict,
};
use crate::experiment::{accuracy_at, Arm, Baseline, JumpCost, Plan, Point, Results, CONTROL};

/// The name of the tuned baseline's row.
pub const TUNED: &str = "tuned";

/// One arm's line at one jump step and target.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub jump_at: usize,
    pub arm: String,
    /// The target: a fraction of the way from base to plateau, and its accuracy level.
    pub target: f64,
    pub level: f64,
    /// Seeds in which the arm reached the target, of those measured.
    pub reached: usize,
    pub seeds: usize,
    /// Mean RL steps to the target (a run that never reaches it counts `steps + val_every`).
    pub steps: f64,
    /// In percent of the reference's steps (positive: fewer), paired by seed: against the
    /// same-LR baseline (the control) and against B*.
    pub vs_control: Interval,
    pub vs_tuned: Option<Interval>,
    /// Wall clock saved against the control: measured, and modelled (steps at the baseline's
    /// median step time plus every jump's measured overhead); the modelled one against B*.
    pub wall_measured: Interval,
    pub wall_modelled: Interval,
    pub wall_modelled_tuned: Option<Interval>,
    /// The learning-rate multiple at which a tuning baseline reaches this row's level in as
    /// many steps (interpolated between the tuned multiples, or a bound outside them).
    pub equivalent_lr: Option<Equivalent>,
    /// Final validation accuracy: mean and spread over seeds.
    pub final_accuracy: (f64, f64),
    /// Right after the jump, and its difference from the control there.
    pub jump_accuracy: f64,
    pub jump_gain: f64,
    pub lambda: f64,
    pub overhead_seconds: f64,
    /// The overhead in RL steps of the seed's baseline.
    pub overhead_steps: f64,
}

impl Row {
    pub fn verdict(&self) -> Verdict {
        self.vs_control.verdict()
    }
}

/// One seed's costs of reaching a target: the control's, the arm's, and B*'s if any.
type Costs = (Cost, Cost, Option<Cost>);

/// One run of a row: its curve, jumps and the seed's step time.
struct Run<'a> {
    curve: &'a [Point],
    jumps: &'a [JumpCost],
    step_seconds: f64,
}

impl<'a> Run<'a> {
    /// A baseline: no jumps.
    fn baseline(curve: &'a [Point], step_seconds: f64) -> Self {
        Run {
            curve,
            jumps: &[],
            step_seconds,
        }
    }

    fn cost(&self, level: f64, plan: &Plan) -> Cost {
        cost(self.curve, level, plan, self.step_seconds, self.jumps)
    }
}

/// The targets of the experiment: from the same-LR baselines of the reporting seeds.
pub fn targets(plan: &Plan, results: &Results) -> Targets {
    let b: Vec<&Baseline> = results.baselines.iter().collect();
    Targets::new(&plan.experiment.targets, &b)
}

/// The table: for each jump step and target, the control first, then B*, then the methods.
pub fn rows(plan: &Plan, results: &Results) -> Vec<Row> {
    let e = &plan.experiment;
    let targets = targets(plan, results);
    let baselines: BTreeMap<u64, &Baseline> =
        results.baselines.iter().map(|b| (b.seed, b)).collect();
    let tuned: BTreeMap<u64, &Baseline> = results.tuned.iter().map(|b| (b.seed, b)).collect();
    let mut names = vec![CONTROL.to_string()];
    if results.tuned_scale.is_some() {
        names.push(TUNED.to_string());
    }
    names.extend(e.methods.iter().map(|m| m.to_string()));
    let mut out = vec![];
    for &k in &e.jump_at {
        let arm_of = |seed: u64, name: &str| -> Option<&Arm> {
            results
                .arms
                .iter()
                .find(|a| a.seed == seed && a.jump_at == k && a.name == name)
        };
        for &(fraction, level) in &targets.levels {
            for name in &names {
                // Per seed: (control, arm, B* if any), every one measured.
                let mut runs: Vec<(Run, Run, Option<Run>, Option<&Arm>)> = vec![];
                for (&seed, b) in &baselines {
                    let Some(control) = arm_of(seed, CONTROL) else {
                        continue;
                    };
                    let tuned_run = tuned
                        .get(&seed)
                        .map(|t| Run::baseline(&t.curve, b.step_seconds))
                        .or_else(|| {
                            (results.tuned_scale == Some(results.arm_scale))
                                .then(|| Run::baseline(&b.curve, b.step_seconds))
                        });
                    let (arm, run) = if name == TUNED {
                        match &tuned_run {
                            Some(t) => (None, Run::baseline(t.curve, t.step_seconds)),
                            None => continue,
                        }
                    } else {
                        let Some(a) = arm_of(seed, name) else {
                            continue;
                        };
                        (
                            Some(a),
                            Run {
                                curve: &a.curve,
                                jumps: &a.jumps,
                                step_seconds: b.step_seconds,
                            },
                        )
                    };
                    let c = Run {
                        curve: &control.curve,
                        jumps: &control.jumps,
                        step_seconds: b.step_seconds,
                    };
                    runs.push((c, run, tuned_run, arm));
                }
                if runs.is_empty() {
                    continue;
                }
                let costs: Vec<Costs> = runs
                    .iter()
                    .map(|(c, a, t, _)| {
                        (
                            c.cost(level, plan),
                            a.cost(level, plan),
                            t.as_ref().map(|t| t.cost(level, plan)),
                        )
                    })
                    .collect();
                let seed = 0x5eed ^ k as u64 ^ (fraction * 1000.0) as u64;
                let saving = |f: &dyn Fn(&Cost) -> f64,
                              reference: &dyn Fn(&Costs) -> Option<f64>|
                 -> Option<Interval> {
                    let pairs: Option<Vec<(f64, f64)>> = costs
                        .iter()
                        .map(|c| Some((reference(c)?, f(&c.1))))
                        .collect();
                    let pairs = pairs?;
                    let (r, m): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
                    Some(paired_saving(&r, &m, e.resamples, e.confidence, seed))
                };
                let steps_of = |c: &Cost| c.steps;
                let modelled = |c: &Cost| c.modelled;
                let measured = |c: &Cost| c.measured;
                let arms: Vec<&Arm> = runs.iter().filter_map(|r| r.3).collect();
                let mean = |x: Vec<f64>| mean_sd(&x).0;
                let mean_steps = mean(costs.iter().map(|c| c.1.steps).collect());
                let overhead: Vec<f64> = arms.iter().map(|a| a.overhead.total()).collect();
                let overhead_steps: Vec<f64> = arms
                    .iter()
                    .filter_map(|a| {
                        let b = baselines.get(&a.seed)?;
                        (b.step_seconds > 0.0).then(|| a.overhead.total() / b.step_seconds)
                    })
                    .collect();
                let control_jump: BTreeMap<u64, f64> = runs
                    .iter()
                    .filter_map(|(c, _, _, a)| Some(((*a)?.seed, accuracy_at(c.curve, k))))
                    .collect();
                out.push(Row {
                    jump_at: k,
                    arm: name.clone(),
                    target: fraction,
                    level,
                    reached: costs.iter().filter(|c| c.1.reached).count(),
                    seeds: costs.len(),
                    steps: mean_steps,
                    vs_control: saving(&steps_of, &|c| Some(c.0.steps))
                        .expect("the control is there"),
                    vs_tuned: (name != TUNED)
                        .then(|| saving(&steps_of, &|c| c.2.map(|t| t.steps)))
                        .flatten(),
                    wall_measured: saving(&measured, &|c| Some(c.0.measured)).expect("control"),
                    wall_modelled: saving(&modelled, &|c| Some(c.0.modelled)).expect("control"),
                    wall_modelled_tuned: (name != TUNED)
                        .then(|| saving(&modelled, &|c| c.2.map(|t| t.modelled)))
                        .flatten(),
                    equivalent_lr: equivalent_scale(
                        &scale_costs(plan, &results.tuning, level),
                        mean_steps,
                    ),
                    final_accuracy: mean_sd(
                        &runs
                            .iter()
                            .map(|r| accuracy_at(r.1.curve, plan.steps))
                            .collect::<Vec<_>>(),
                    ),
                    jump_accuracy: mean(runs.iter().map(|r| accuracy_at(r.1.curve, k)).collect()),
                    jump_gain: mean(
                        arms.iter()
                            .map(|a| a.jump_accuracy() - control_jump[&a.seed])
                            .collect(),
                    ),
                    lambda: mean(arms.iter().filter_map(|a| a.lambda).collect()),
                    overhead_seconds: mean(overhead),
                    overhead_steps: mean(overhead_steps),
                });
            }
        }
    }
    out
}

/// A saving as text: `+12.3% [+4.0, +20.1]`; `–` when there is none.
pub(crate) fn pct(i: &Interval) -> String {
    if i.estimate.is_nan() {
        return "–".into();
    }
    if i.lo.is_nan() {
        return format!("{:+.1}% (n={})", i.estimate, i.n);
    }
    format!("{:+.1}% [{:+.1}, {:+.1}]", i.estimate, i.lo, i.hi)
}

/// A number as text; `–` for NaN (not measured).
pub(crate) fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// The headline table (rows at `experiment.headline`) as Markdown.
pub fn table(plan: &Plan, rows: &[Row]) -> String {
    let level = (plan.experiment.confidence * 100.0).round();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| K | arm | reached | steps to target | steps saved vs same LR ({level}% CI) | vs tuned B* | wall saved, modelled | wall saved, measured | verdict | equiv. LR | final acc (± sd) | acc after jump (vs control) | λ | overhead s (RL steps) |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows.iter().filter(|r| r.target == plan.experiment.headline) {
        // The control is what the others are measured against: no saving, gain or λ of its own;
        // B* is a baseline: no jump.
        let own = |x: String| if r.arm == CONTROL { "–".into() } else { x };
        let jumped = |x: String| {
            if r.arm == CONTROL || r.arm == TUNED {
                "–".into()
            } else {
                x
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} ± {} | {} ({}) | {} | {} ({}) |",
            r.jump_at,
            r.arm,
            r.reached,
            r.seeds,
            num(r.steps, 1),
            own(pct(&r.vs_control)),
            r.vs_tuned.as_ref().map_or("–".into(), pct),
            own(pct(&r.wall_modelled)),
            own(pct(&r.wall_measured)),
            own(r.verdict().to_string()),
            r.equivalent_lr.map_or("–".into(), |x| x.to_string()),
            num(r.final_accuracy.0, 3),
            num(r.final_accuracy.1, 3),
            num(r.jump_accuracy, 3),
            jumped(format!("{:+.3}", r.jump_gain)),
            jumped(num(r.lambda, 2)),
            num(r.overhead_seconds, 1),
            num(r.overhead_steps, 1),
        );
    }
    s
}

/// Every target's steps saved, as Markdown.
pub fn targets_table(plan: &Plan, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| K | arm | target | accuracy | reached | steps | vs same LR | verdict | vs tuned B* | verdict vs B* |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.arm != CONTROL) {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}% | {:.3} | {}/{} | {:.1} | {} | {} | {} | {} |",
            r.jump_at,
            r.arm,
            100.0 * r.target,
            r.level,
            r.reached,
            r.seeds,
            r.steps,
            pct(&r.vs_control),
            r.verdict(),
            r.vs_tuned.as_ref().map_or("–".into(), pct),
            r.vs_tuned
                .as_ref()
                .map_or("–".into(), |i| i.verdict().to_string()),
        );
    }
    let _ = plan;
    s
}

/// The diagnostics of each method's jump at `k`, averaged over seeds, as Markdown.
pub fn diagnostics_table(plan: &Plan, results: &Results, k: usize) -> String {
    let horizons = &plan.experiment.diag_horizons;
    let mut s = String::new();
    let _ = write!(s, "| arm |");
    for h in horizons {
        let _ = write!(s, " cos@{h} |");
    }
    let _ = writeln!(
        s,
        " mixed groups before / after / baseline at that accuracy | entropy before / after / baseline |"
    );
    let _ = writeln!(s, "|---|{}---|---|", "---|".repeat(horizons.len()));
    for m in &plan.experiment.methods {
        let name = m.to_string();
        let d: Vec<_> = results
            .arms
            .iter()
            .filter(|a| a.jump_at == k && a.name == name)
            .filter_map(|a| a.diagnostics.as_ref())
            .collect();
        if d.is_empty() {
            continue;
        }
        let mean = |f: &dyn Fn(&crate::experiment::Diagnostics) -> Option<f64>| {
            let v: Vec<f64> = d
                .iter()
                .filter_map(|x| f(x))
                .filter(|x| x.is_finite())
                .collect();
            num(mean_sd(&v).0, 2)
        };
        let _ = write!(s, "| {name} |");
        for &h in horizons {
            let _ = write!(
                s,
                " {} |",
                mean(&|x| x.cosine.iter().find(|c| c.0 == h).map(|c| c.1))
            );
        }
        let _ = writeln!(
            s,
            " {} / {} / {} | {} / {} / {} |",
            mean(&|x| Some(x.mixed_before)),
            mean(&|x| Some(x.mixed_after)),
            mean(&|x| Some(x.mixed_control)),
            mean(&|x| Some(x.entropy_before)),
            mean(&|x| Some(x.entropy_after)),
            mean(&|x| Some(x.entropy_control)),
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
    if let (Some(s), false) = (results.tuned_scale, results.tuned.is_empty()) {
        push(
            format!("{TUNED} ({s} x lr)"),
            results.tuned.iter().map(|b| &b.curve[..]).collect(),
        );
    }
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
