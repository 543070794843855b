//! `next study`: several regimes (learning rate, batch, task, run length), each an experiment,
//! and one report across them — `report.md` with the headline table of every regime, the
//! diagnostics, and each regime's mean accuracy curves (baseline, tuned baseline, methods) as
//! PNG plots. Each regime's own experiment report stays in its directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::experiment::{Plan, Results, CONTROL};
use crate::report::{self, num, pct, Row, TUNED};
use crate::{io, Error, Result};

/// One regime's experiment and what it measured.
#[derive(Debug)]
pub struct Regime<'a> {
    pub name: &'a str,
    /// What the regime varies, in words.
    pub about: &'a str,
    pub plan: &'a Plan,
    pub results: &'a Results,
    /// The regime's experiment directory (its own report is in `report/` there).
    pub dir: &'a Path,
}

/// One line of the study's table: a method at the headline target in one regime.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub regime: String,
    pub row: Row,
}

/// What [`write()`] produced.
#[derive(Debug, Clone)]
pub struct Study {
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
    pub lines: Vec<Line>,
    pub table: String,
}

/// The headline rows of every regime: `regime | K | arm | ...`.
pub fn table(lines: &[Line]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| regime | K | arm | reached | steps to target | vs same LR | verdict | vs tuned B* | verdict vs B* | wall vs same LR (modelled) | wall vs B* (modelled) | equiv. LR | acc after jump (vs control) | λ | overhead (RL steps) |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for l in lines {
        let r = &l.row;
        let none = |x: String| if r.arm == CONTROL { "–".into() } else { x };
        let jumped = |x: String| {
            if r.arm == CONTROL || r.arm == TUNED {
                "–".into()
            } else {
                x
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.3} ({}) | {} | {} |",
            l.regime,
            r.jump_at,
            r.arm,
            r.reached,
            r.seeds,
            r.steps,
            none(pct(&r.vs_control)),
            none(r.verdict().to_string()),
            r.vs_tuned.as_ref().map_or("–".into(), pct),
            r.vs_tuned
                .as_ref()
                .map_or("–".into(), |i| i.verdict().to_string()),
            none(pct(&r.wall_modelled)),
            r.wall_modelled_tuned.as_ref().map_or("–".into(), pct),
            r.equivalent_lr.map_or("–".into(), |x| x.to_string()),
            r.jump_accuracy,
            jumped(format!("{:+.3}", r.jump_gain)),
            jumped(num(r.lambda, 2)),
            jumped(num(r.overhead_steps, 1)),
        );
    }
    s
}

/// Writes the study's `report.md` and plots into `dir`.
pub fn write(dir: &Path, regimes: &[Regime], commit: &str) -> Result<Study> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut lines = vec![];
    let mut md = String::new();
    let mut body = String::new();
    let mut charts = vec![];
    for g in regimes {
        let e = &g.plan.experiment;
        let rows = report::rows(g.plan, g.results);
        lines.extend(
            rows.iter()
                .filter(|r| r.target == e.headline)
                .map(|r| Line {
                    regime: g.name.to_string(),
                    row: r.clone(),
                }),
        );
        let targets = report::targets(g.plan, g.results);
        // Relative when the regime sits beside the study's report (as `next study` lays it
        // out), so the link survives moving the study directory.
        let link = match (g.dir.parent(), dir.parent(), g.dir.file_name()) {
            (Some(a), Some(b), Some(n)) if a == b => {
                format!("../{}/report/report.md", n.to_string_lossy())
            }
            _ => g.dir.join("report/report.md").display().to_string(),
        };
        let _ = writeln!(
            body,
            "## {}\n\n{}\n\n{} reporting seed(s), {} RL steps, jumps at {:?}; base accuracy {:.3}, plateau {:.3}; tuned baseline: {}. Full report: [{link}]({link}).\n",
            g.name,
            g.about,
            e.seeds,
            g.plan.steps,
            e.jump_at,
            targets.base,
            targets.plateau,
            g.results
                .tuned_scale
                .map_or("none".to_string(), |s| format!("{s} x the learning rate")),
        );
        for &k in &e.jump_at {
            let _ = writeln!(body, "{}", report::diagnostics_table(g.plan, g.results, k));
            let name = format!("{}_k{k}", g.name);
            let _ = writeln!(body, "![{} at {k}]({name}.png)\n", g.name);
            charts.push((name, g, k));
        }
    }
    let mut plots = vec![];
    for (name, g, k) in &charts {
        if let Some(p) = report::curves_plot(dir, name, g.plan, g.results, *k)? {
            plots.push(p);
        }
    }
    let table = table(&lines);
    let _ = writeln!(md, "# Predict-extend study\n");
    let _ = writeln!(
        md,
        "Commit `{commit}`. Each regime is an experiment (`next experiment`) whose own report has every target, the accuracy at equal step budgets and the configuration. The table below is each regime at its headline target: steps saved against the same-LR baseline and against the tuned baseline B* (paired by seed, bootstrap intervals; a saving only when the whole interval is above zero), the modelled wall clock (steps at the baseline's median step time plus the measured jump overhead), and the learning-rate multiple a baseline needs to reach the target as fast (equivalent LR).\n"
    );
    let _ = writeln!(md, "{table}\n{body}");
    let markdown = dir.join("report.md");
    next_files::atomic::write(&markdown, md.as_bytes())?;
    if lines.is_empty() {
        return Err(Error::Config(
            "the study has no finished arms to report".into(),
        ));
    }
    Ok(Study {
        markdown,
        plots,
        lines,
        table,
    })
}
