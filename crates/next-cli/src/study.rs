//! `next study`: every regime of a study file as an experiment (`next experiment`'s runner),
//! then the report across regimes (`next_scheduler::study`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_scheduler::study::{self, Regime, RegimeSpec};

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
    /// Only these regimes (repeat the flag); their report goes to report-<NAME>[+<NAME>...]/, so
    /// that report/ stays the whole study's.
    #[arg(long = "regime", value_name = "NAME")]
    regimes: Vec<String>,
    /// Overrides applied to every regime, after its own.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let file: study::File = crate::config::load(Some(&a.config), &[])?;
    let experiment = file.experiment_config(&a.config);
    let chosen = file.select(&a.config, &a.regimes)?;
    let sets_of = |g: &RegimeSpec| file.sets(g, a.quick, &a.sets);
    // Every regime's settings are checked before the first runs: a study takes hours, and a
    // bad regime found after them would cost the report.
    for g in &chosen {
        crate::experiment::prepare(Some(&experiment), &sets_of(g))
            .with_context(|| format!("{}: regime {}", a.config.display(), g.name))?;
    }
    if a.check {
        let n = chosen.len();
        eprintln!("{}: {n} regime(s) fit together", a.config.display());
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
    let s = study::write(&study::report_dir(&a.out, &a.regimes), &regimes, &commit)?;
    println!("{}", s.table);
    let plots = s.plots.len();
    eprintln!("study report: {} ({plots} plots)", s.markdown.display());
    Ok(())
}
