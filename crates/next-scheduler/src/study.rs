//! `next study`: several regimes (learning rate, batch, task, run length), each an experiment,
//! and one report across them — `report.md` with the headline table of every regime, the
//! diagnostics, and each regime's mean accuracy curves (baseline, tuned baseline, methods) as
//! PNG plots. Each regime's own experiment report stays in its directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::experiment::{Plan, Results, CONTROL, QUICK};
use crate::report::{self, num, pct, Row, TUNED};
use crate::{io, Error, Result};

const INTRO: &str = include_str!("study.md");

/// A study file (`configs/study.toml`; the CLI reads it): the experiment config every regime
/// starts from, and the regimes, each a list of `--set` overrides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The experiment config every regime starts from, relative to the study file.
    pub experiment: PathBuf,
    /// Overrides of every regime (before the regime's own).
    #[serde(default)]
    pub sets: Vec<String>,
    /// Overrides of every regime in a smoke run (after the experiment's own smoke overrides).
    #[serde(default)]
    pub quick: Vec<String>,
    pub regime: Vec<RegimeSpec>,
}

/// One `[[regime]]` of a study file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegimeSpec {
    pub name: String,
    /// What the regime varies, in words.
    pub about: String,
    #[serde(default)]
    pub sets: Vec<String>,
    #[serde(default)]
    pub quick: Vec<String>,
}

impl File {
    /// The experiment config of the study file at `path` (its `experiment` is relative to it).
    pub fn experiment_config(&self, path: &Path) -> PathBuf {
        next_files::parent_of(path).join(&self.experiment)
    }

    /// The regimes called `names` (every regime when empty), in the file's order. Refuses a
    /// name the file lacks and a regime listed twice; `path` names the file in errors.
    pub fn select(&self, path: &Path, names: &[String]) -> Result<Vec<&RegimeSpec>> {
        if let Some(n) = names
            .iter()
            .find(|n| !self.regime.iter().any(|g| &g.name == *n))
        {
            let have: Vec<&str> = self.regime.iter().map(|g| g.name.as_str()).collect();
            return Err(Error::Config(format!(
                "{}: no regime `{n}` (it has {})",
                path.display(),
                have.join(", ")
            )));
        }
        if let Some((_, g)) = self
            .regime
            .iter()
            .enumerate()
            .find(|(i, g)| self.regime[..*i].iter().any(|h| h.name == g.name))
        {
            return Err(Error::Config(format!(
                "{}: regime `{}` is listed twice",
                path.display(),
                g.name
            )));
        }
        Ok(self
            .regime
            .iter()
            .filter(|g| names.is_empty() || names.contains(&g.name))
            .collect())
    }

    /// The overrides regime `g` runs with: the study's, the regime's, in a smoke run (`quick`)
    /// then the experiment's smoke overrides ([`QUICK`]), the study's and the regime's
    /// `quick`, and last `extra` (the command line's).
    pub fn sets(&self, g: &RegimeSpec, quick: bool, extra: &[String]) -> Vec<String> {
        let mut sets: Vec<String> = self.sets.iter().chain(&g.sets).cloned().collect();
        if quick {
            sets.extend(QUICK.iter().map(|s| s.to_string()));
            sets.extend(self.quick.iter().chain(&g.quick).cloned());
        }
        sets.extend(extra.iter().cloned());
        sets
    }
}

/// Where the report of the regimes `names` goes in the study directory `out`: `report/` for the
/// whole study, `report-<a>+<b>/` for some regimes (a rerun of some must not replace the report
/// across all of them).
pub fn report_dir(out: &Path, names: &[String]) -> PathBuf {
    if names.is_empty() {
        out.join("report")
    } else {
        out.join(format!("report-{}", names.join("+")))
    }
}

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
    // The heading and opening paragraph: `study.md`, the prose kept out of format strings.
    let intro = report::fill("study", INTRO, minijinja::context! { commit })?;
    let _ = writeln!(md, "{intro}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn regime(name: &str) -> RegimeSpec {
        RegimeSpec {
            name: name.into(),
            about: format!("about {name}"),
            sets: vec![format!("{name}.set=1")],
            quick: vec![format!("{name}.quick=1")],
        }
    }

    fn file(names: &[&str]) -> File {
        File {
            experiment: "experiment.toml".into(),
            sets: vec!["study.set=1".into()],
            quick: vec!["study.quick=1".into()],
            regime: names.iter().map(|n| regime(n)).collect(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn regimes_are_chosen_in_the_file_order_and_unknown_names_refused() {
        let f = file(&["a", "b", "c"]);
        let path = Path::new("configs/study.toml");
        let all: Vec<&str> = f
            .select(path, &[])
            .unwrap()
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(all, ["a", "b", "c"]);
        let some = f.select(path, &names(&["c", "a"])).unwrap();
        assert_eq!(
            some.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        let err = f.select(path, &names(&["a", "d"])).unwrap_err().to_string();
        assert_eq!(err, "configs/study.toml: no regime `d` (it has a, b, c)");
        assert_eq!(
            f.experiment_config(path),
            Path::new("configs/experiment.toml")
        );
    }

    #[test]
    fn a_regime_listed_twice_is_refused() {
        let f = file(&["a", "b", "a"]);
        let err = f.select(Path::new("s.toml"), &[]).unwrap_err().to_string();
        assert_eq!(err, "s.toml: regime `a` is listed twice");
        // Even when only the other regime is chosen: the file itself is wrong.
        assert!(f.select(Path::new("s.toml"), &names(&["b"])).is_err());
    }

    #[test]
    fn overrides_go_study_regime_quick_then_command_line() {
        let f = file(&["a"]);
        let g = &f.regime[0];
        let extra = names(&["cli=1"]);
        assert_eq!(
            f.sets(g, false, &extra),
            names(&["study.set=1", "a.set=1", "cli=1"])
        );
        let quick = f.sets(g, true, &extra);
        let n = QUICK.len();
        assert_eq!(quick[..2], names(&["study.set=1", "a.set=1"]));
        assert_eq!(quick[2..2 + n], names(QUICK));
        assert_eq!(
            quick[2 + n..],
            names(&["study.quick=1", "a.quick=1", "cli=1"])
        );
    }

    #[test]
    fn the_report_of_some_regimes_goes_beside_the_whole_study_s() {
        let out = Path::new("runs/study");
        assert_eq!(report_dir(out, &[]), out.join("report"));
        assert_eq!(report_dir(out, &names(&["a", "b"])), out.join("report-a+b"));
    }
}
