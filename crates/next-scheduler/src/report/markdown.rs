//! `report.md`: the prose is `template.md` (minijinja), filled with the plan's settings, the
//! tables and the plots' names.

use serde::Serialize;

use crate::experiment::stats::{cost, Targets};
use crate::experiment::{Baseline, Plan, Results};
use crate::{Error, Result};

const TEMPLATE: &str = include_str!("template.md");

/// The accuracy at equal step budgets after the jump at `k`, as a Markdown table.
#[derive(Debug, Serialize)]
pub(super) struct Budget {
    pub k: usize,
    pub table: String,
}

#[derive(Debug, Serialize)]
struct BaselineLine {
    seed: u64,
    scale: String,
    base: String,
    plateau: String,
    steps: String,
    seconds: String,
    step_seconds: String,
}

/// What the report shows besides the plan's settings.
#[derive(Debug)]
pub(super) struct Tables<'a> {
    pub table: &'a str,
    pub budgets: Vec<Budget>,
    /// Every target's savings.
    pub targets: String,
    /// Per jump step, the diagnostics of the methods' jumps.
    pub diagnostics: Vec<Budget>,
    /// The trajectory analysis of the first baseline (empty if none).
    pub analysis: String,
    /// The resolved configuration as TOML.
    pub config: &'a str,
    pub commit: &'a str,
    /// Problems of the selection split λ was chosen on.
    pub select_size: usize,
}

fn baseline_line(b: &Baseline, level: f64, plan: &Plan) -> BaselineLine {
    let c = cost(&b.curve, level, plan, b.step_seconds, &[]);
    BaselineLine {
        seed: b.seed,
        scale: format!("{}", b.lr_scale),
        base: format!("{:.3}", b.curve[0].accuracy),
        plateau: format!("{:.3}", b.target),
        steps: format!("{:.0}", c.steps),
        seconds: format!("{:.1}", c.measured),
        step_seconds: format!("{:.3}", b.step_seconds),
    }
}

/// The text of `report.md`.
pub(super) fn render(plan: &Plan, results: &Results, t: &Tables) -> Result<String> {
    let e = &plan.experiment;
    let targets: Targets = super::rows::targets(plan, results);
    let level = targets.level(e.headline);
    let baselines: Vec<BaselineLine> = results
        .baselines
        .iter()
        .chain(&results.tuned)
        .map(|b| baseline_line(b, level, plan))
        .collect();
    // At the level B* was chosen by (the tuning's own same-LR runs), so this table shows the
    // choice as it was made.
    let tuning_level = crate::experiment::stats::tuning_level(plan, &results.tuning);
    let tuning: Vec<BaselineLine> = results
        .tuning
        .iter()
        .map(|b| baseline_line(b, tuning_level, plan))
        .collect();
    let ctx = minijinja::context! {
        commit => t.commit,
        seeds => e.seeds,
        first_seed => e.first_seed,
        steps => plan.steps,
        val_every => plan.val_every,
        jump_at => format!("{:?}", e.jump_at),
        keep_moments => plan.scheduler.keep_moments,
        final_window => e.final_window,
        targets => e.targets.iter().map(|f| format!("{:.0}%", f * 100.0)).collect::<Vec<_>>().join(", "),
        levels => targets.levels.iter().map(|(f, l)| format!("{:.0}% = {l:.3}", f * 100.0)).collect::<Vec<_>>().join(", "),
        base => format!("{:.3}", targets.base),
        plateau => format!("{:.3}", targets.plateau),
        headline => format!("{:.0}", e.headline * 100.0),
        tuning_level => format!("{tuning_level:.3}"),
        smooth => e.smooth,
        select_size => t.select_size,
        lr_scales => format!("{:?}", plan.scales()),
        tuning_seeds => e.tuning_seeds,
        tuned_scale => results.tuned_scale.map(|s| format!("{s}")),
        confidence_pct => format!("{:.0}", e.confidence * 100.0),
        resamples => e.resamples,
        never_steps => plan.steps + plan.val_every,
        stop_at_target => e.stop_at_target,
        at_tuned_lr => e.at_tuned_lr,
        arm_scale => format!("{}", results.arm_scale),
        rounds => e.rounds,
        every => e.every,
        table => t.table,
        targets_table => t.targets,
        budgets => t.budgets,
        diagnostics => t.diagnostics,
        baselines => baselines,
        tuning => tuning,
        analysis => t.analysis,
        config => t.config,
    };
    fill("report", TEMPLATE, ctx)
}

/// `template` (minijinja, the reports' prose) filled with `ctx`; `what` names it in errors.
pub(crate) fn fill(what: &str, template: &str, ctx: minijinja::Value) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.render_str(template, ctx)
        .map_err(|e| Error::Config(format!("{what} template: {e:#}")))
}
