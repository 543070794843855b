//! The experiment's report: `rows.rs` the tables, `plots.rs` the PNG plots, `markdown.rs`
//! `report.md` from `template.md`.

use std::path::{Path, PathBuf};

use next_trajectory::analyze;
use next_trajectory::store::Store;

use crate::experiment::{Plan, Results};
use crate::{io, Result};

mod markdown;
mod plots;
mod rows;

pub(crate) use markdown::fill;
pub use rows::{diagnostics_table, rows, table, targets, Row, TUNED};
pub(crate) use rows::{num, pct};

/// The mean accuracy curves at jump step `k` (every arm, the baselines) as `<dir>/<name>.png`;
/// None when there is nothing to draw.
pub fn curves_plot(
    dir: &Path,
    name: &str,
    plan: &Plan,
    results: &Results,
    k: usize,
) -> Result<Option<PathBuf>> {
    let curves = rows::mean_curves(results, k, &plan.arms());
    let chart = plots::Chart {
        name: name.to_string(),
        title: format!("validation accuracy, jump at step {k} (mean over seeds)"),
        x: "RL step",
        y: "accuracy",
        lines: curves
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    c.iter().map(|p| (p.step as f64, p.accuracy)).collect(),
                )
            })
            .collect(),
    };
    Ok(plots::draw(dir, &[chart])?.into_iter().next())
}

/// What [`write()`] produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
    pub rows: Vec<Row>,
    pub table: String,
}

/// What a report is made of.
#[derive(Debug)]
pub struct Input<'a> {
    pub plan: &'a Plan,
    pub results: &'a Results,
    /// The resolved config as text, and the commit that produced the results.
    pub config: &'a str,
    pub commit: &'a str,
    /// Problems of the selection split λ was chosen on.
    pub select_size: usize,
}

/// The trajectory store of the run the report analyses (`results.analysed`), extracted
/// (incrementally) into its `trajectory/` with the plan's horizon as the target gap; None when
/// the experiment analyses no run.
pub fn analysed_trajectory(plan: &Plan, results: &Results) -> Result<Option<Store>> {
    let Some(run) = &results.analysed else {
        return Ok(None);
    };
    let dir = run.join("trajectory");
    crate::jump::extract_run(run, None, plan.scheduler.horizon, &dir)?;
    Ok(Some(Store::open(&dir)?))
}

/// Writes `report.md` and the plots into `dir`, with the analysed baseline's trajectory
/// ([`analysed_trajectory`]).
pub fn write(dir: &Path, input: &Input) -> Result<Report> {
    let Input {
        plan,
        results,
        config,
        commit,
        select_size,
    } = *input;
    let trajectory = analysed_trajectory(plan, results)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let rows = rows(plan, results);
    let table = table(plan, &rows);
    let names = plan.arms();
    let mut charts = vec![];
    let mut budgets = vec![];
    let mut diagnostics = vec![];
    for &k in &plan.experiment.jump_at {
        let curves = rows::mean_curves(results, k, &names);
        budgets.push(markdown::Budget {
            k,
            table: rows::budget_table(plan, &curves, k),
        });
        diagnostics.push(markdown::Budget {
            k,
            table: rows::diagnostics_table(plan, results, k),
        });
        charts.extend(plots::jump_charts(plan, results, k, &curves));
    }
    let mut analysis = String::new();
    if let Some(store) = &trajectory {
        let summaries = analyze::summarize(store);
        analysis = analyze::table(&summaries);
        charts.push(plots::Chart {
            name: "rank1_energy".into(),
            title: "rank-1 energy of W_t - W_0 in the baseline (mean over layers)".into(),
            x: "RL step",
            y: "energy",
            lines: analyze::mean_by_kind(&summaries, &|s| {
                s.steps
                    .iter()
                    .copied()
                    .zip(s.energy.iter().copied())
                    .collect()
            }),
        });
    }
    let plots = plots::draw(dir, &charts)?;
    let md = markdown::render(
        plan,
        results,
        &markdown::Tables {
            table: &table,
            targets: rows::targets_table(plan, &rows),
            budgets,
            diagnostics,
            analysis,
            config,
            commit,
            select_size,
        },
    )?;
    let markdown = dir.join("report.md");
    next_files::atomic::write(&markdown, md.as_bytes())?;
    Ok(Report {
        markdown,
        plots,
        rows,
        table,
    })
}
