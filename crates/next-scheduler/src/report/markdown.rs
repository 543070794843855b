//! `report.md`: the prose is `template.md` (minijinja), filled with the plan's settings, the
//! tables and the plots' names.

use serde::Serialize;

use super::rows::cost;
use crate::experiment::{Plan, Results};
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
    base: String,
    target: String,
    lower: String,
    steps: String,
    seconds: String,
}

/// What the report shows besides the plan's settings.
#[derive(Debug)]
pub(super) struct Tables<'a> {
    pub table: &'a str,
    pub budgets: Vec<Budget>,
    /// The trajectory analysis of the first baseline (empty if none).
    pub analysis: String,
    /// The resolved configuration as TOML.
    pub config: &'a str,
    pub commit: &'a str,
}

/// The text of `report.md`.
pub(super) fn render(plan: &Plan, results: &Results, t: &Tables) -> Result<String> {
    let e = &plan.experiment;
    let baselines: Vec<BaselineLine> = results
        .baselines
        .iter()
        .map(|b| {
            let (st, se) = cost(&b.curve, b.target, plan);
            BaselineLine {
                seed: b.seed,
                base: format!("{:.3}", b.curve[0].accuracy),
                target: format!("{:.3}", b.target),
                lower: format!("{:.3}", b.lower_target),
                steps: format!("{st:.0}"),
                seconds: format!("{se:.1}"),
            }
        })
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
        lower_target_pct => format!("{:.0}", e.lower_target * 100.0),
        confidence_pct => format!("{:.0}", e.confidence * 100.0),
        resamples => e.resamples,
        never_steps => plan.steps + plan.val_every,
        stop_at_target => e.stop_at_target,
        rounds => e.rounds,
        every => e.every,
        table => t.table,
        budgets => t.budgets,
        baselines => baselines,
        analysis => t.analysis,
        config => t.config,
    };
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.render_str(TEMPLATE, ctx)
        .map_err(|e| Error::Config(format!("report template: {e:#}")))
}
