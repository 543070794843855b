//! The experiment's report: `rows.rs` the tables, `plots.rs` the PNG plots, `markdown.rs`
//! `report.md` from `template.md`.

use std::path::{Path, PathBuf};

use next_trajectory::analyze;

use crate::experiment::{Plan, Results};
use crate::{io, Result};

mod markdown;
mod plots;
mod rows;

pub use rows::{rows, table, Row};

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
    pub rows: Vec<Row>,
    pub table: String,
}

/// Writes `report.md` and the plots into `dir`. `config` is the resolved config as text and
/// `commit` what produced it; `trajectory`, if given, is the analysed baseline's store.
pub fn write(
    dir: &Path,
    plan: &Plan,
    results: &Results,
    config: &str,
    commit: &str,
    trajectory: Option<&next_trajectory::store::Store>,
) -> Result<Report> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let rows = rows(plan, results);
    let table = table(plan, &rows);
    let names = plan.arms();
    let mut charts = vec![];
    let mut budgets = vec![];
    for &k in &plan.experiment.jump_at {
        let curves = rows::mean_curves(results, k, &names);
        budgets.push(markdown::Budget {
            k,
            table: rows::budget_table(plan, &curves, k),
        });
        charts.extend(plots::jump_charts(plan, results, k, &curves));
    }
    let mut analysis = String::new();
    if let Some(store) = trajectory {
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
            budgets,
            analysis,
            config,
            commit,
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
