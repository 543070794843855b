//! `next study`: every regime of a study file as an experiment (`next experiment`'s runner),
//! then the report across regimes (`next_scheduler::study`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use next_scheduler::study::{self, Regime};
use serde::Deserialize;

/// Where predict-extend pays off: several regimes (learning rate, batch, task, run length), each
/// an experiment with a tuned baseline, and one report across them in `<out>/report/`.
///
/// The study file names the experiment config the regimes start from (`experiment`, relative
/// to the study file), `--set`-style overrides every regime shares (`sets`), and lists
/// `[[regime]]`s, each with a `name`, what it varies (`about`) and its own overrides (`sets`,
/// applied after the shared ones); `quick` overrides (study-wide and per regime) apply with
/// `--quick` on top of `next experiment --quick`'s. Every experiment resumes arm by arm, so a
/// study may span several sittings: run the same command again.
///
/// Example: `next study --config configs/study.toml --out runs/study`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The study file (see configs/study.toml).
    #[arg(long)]
    config: PathBuf,
    /// The study directory: one experiment per regime, and report/.
    #[arg(long)]
    out: PathBuf,
    /// A smoke run of every regime (tiny base, one seed, short runs).
    #[arg(long)]
    quick: bool,
    /// Check every regime's settings (as they would run, with --quick if given) and stop.
    #[arg(long)]
    check: bool,
    /// Only these regimes (repeat the flag); the report covers the ones that ran.
    #[arg(long = "regime", value_name = "NAME")]
    regimes: Vec<String>,
    /// Overrides applied to every regime, after its own.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// `configs/study.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    /// The experiment config every regime starts from, relative to the study file.
    experiment: PathBuf,
    /// Overrides of every regime (before the regime's own).
    #[serde(default)]
    sets: Vec<String>,
    #[serde(default)]
    quick: Vec<String>,
    regime: Vec<RegimeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegimeSpec {
    name: String,
    about: String,
    #[serde(default)]
    sets: Vec<String>,
    #[serde(default)]
    quick: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let file: StudyFile = crate::config::load(Some(&a.config), &[])?;
    let dir = next_files::parent_of(&a.config).to_path_buf();
    let experiment = dir.join(&file.experiment);
    if let Some(r) = a
        .regimes
        .iter()
        .find(|r| !file.regime.iter().any(|g| &g.name == *r))
    {
        bail!(
            "{}: no regime `{r}` (it has {})",
            a.config.display(),
            file.regime
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let chosen: Vec<&RegimeSpec> = file
        .regime
        .iter()
        .filter(|g| a.regimes.is_empty() || a.regimes.contains(&g.name))
        .collect();
    if let Some(g) = file
        .regime
        .iter()
        .enumerate()
        .find(|(i, g)| file.regime[..*i].iter().any(|h| h.name == g.name))
    {
        bail!(
            "{}: regime `{}` is listed twice",
            a.config.display(),
            g.1.name
        );
    }
    let sets_of = |g: &RegimeSpec| {
        let mut sets: Vec<String> = file.sets.iter().chain(&g.sets).cloned().collect();
        if a.quick {
            sets.extend(crate::experiment::QUICK.iter().map(|s| s.to_string()));
            sets.extend(file.quick.iter().cloned());
            sets.extend(g.quick.iter().cloned());
        }
        sets.extend(a.sets.iter().cloned());
        sets
    };
    // Every regime's settings are checked before the first runs: a study takes hours, and a
    // bad regime found after them would cost the report.
    for g in &chosen {
        crate::experiment::prepare(Some(&experiment), &sets_of(g))
            .with_context(|| format!("{}: regime {}", a.config.display(), g.name))?;
    }
    if a.check {
        eprintln!(
            "{}: {} regime(s) fit together",
            a.config.display(),
            chosen.len()
        );
        return Ok(());
    }
    let mut done = vec![];
    for g in &chosen {
        eprintln!("regime {}: {}", g.name, g.about);
        let out = a.out.join(&g.name);
        let d = crate::experiment::execute(Some(&experiment), &sets_of(g), &out)
            .with_context(|| format!("regime {}", g.name))?;
        done.push((g, out, d));
    }
    let regimes: Vec<Regime> = done
        .iter()
        .map(|(g, out, d)| Regime {
            name: &g.name,
            about: &g.about,
            plan: &d.plan,
            results: &d.results,
            dir: out,
        })
        .collect();
    let commit = next_scheduler::experiment::current_commit();
    let s = study::write(&a.out.join("report"), &regimes, &commit)?;
    println!("{}", s.table);
    eprintln!(
        "study report: {} ({} plots)",
        s.markdown.display(),
        s.plots.len()
    );
    Ok(())
}
