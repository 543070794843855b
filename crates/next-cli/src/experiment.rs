//! `next experiment`: every predict-extend method side by side on the same seeds, then a
//! report (`<out>/report/report.md` and PNG plots) and the results table on stdout.

use std::path::{Path, PathBuf};

use anyhow::Result;
use next_scheduler::experiment::{self, Event, ExperimentSection, Plan};
use next_scheduler::{report, EngineSection, InProcess, SchedulerSection};
use next_trainer::config::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::ui::{bar, ensure_base, say, stage, steps_across_runs};

/// Compare predict-extend methods with plain RL: per seed a baseline GRPO run, and from its
/// checkpoint at each `experiment.jump_at` step one arm per method (extract, fit, choose λ on
/// the selection split, jump, continue) next to a control (no jump). With
/// `experiment.lr_scales` the baseline is also trained at other learning rates on separate
/// tuning seeds, and the best of them (B*) is a second reference. Reports steps and wall clock
/// to targets on the way from the base accuracy to the plateau, paired by seed with bootstrap
/// intervals, and writes `<out>/report/report.md` with PNG plots. Resumes where it stopped.
///
/// The config is `next run`'s ([model], [lora], [data], [rollout], [algorithm], [optim],
/// [trainer], [pretrain], [scheduler]) plus [experiment] (see configs/experiment.toml for every
/// key with its meaning).
///
/// Example: `next experiment --config configs/experiment.toml --out runs/experiment`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config; without one, the built-in defaults (the embedded task).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides, e.g. `--set experiment.seeds=3 --set experiment.jump_at=[30,60]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// A smoke run: a tiny base, one seed, short runs (about a minute on 2 cores). Applied
    /// before --set, so single values can still be changed.
    #[arg(long)]
    quick: bool,
    /// The experiment directory.
    #[arg(long)]
    out: PathBuf,
}

/// `next run`'s config plus the experiment's table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ExperimentFile {
    #[serde(flatten)]
    train: TrainConfig,
    #[serde(default)]
    scheduler: SchedulerSection,
    #[serde(default)]
    experiment: ExperimentSection,
    #[serde(default)]
    engine: EngineSection,
}

impl experiment::Settings for ExperimentFile {
    fn methods_mut(&mut self) -> &mut Vec<next_predictor::Method> {
        &mut self.experiment.methods
    }
}

/// The tables `next experiment` adds to `next train`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extra {
    #[serde(default)]
    scheduler: SchedulerSection,
    #[serde(default)]
    experiment: ExperimentSection,
    #[serde(default)]
    engine: EngineSection,
}

pub fn run(a: Args) -> Result<()> {
    let quick = if a.quick { experiment::QUICK } else { &[] };
    let sets: Vec<String> = quick.iter().map(|s| s.to_string()).chain(a.sets).collect();
    let done = execute(a.config.as_deref(), &sets, &a.out)?;
    println!("{}", done.table);
    eprintln!("report: {}", done.report.display());
    Ok(())
}

/// A finished experiment.
pub(crate) struct Done {
    pub plan: Plan,
    pub results: experiment::Results,
    pub table: String,
    pub report: PathBuf,
}

/// The experiment of `config` with `sets`: its whole configuration and its checked plan. Bad
/// settings fail here, before anything runs (`next study` checks every regime this way first).
pub(crate) fn prepare(config: Option<&Path>, sets: &[String]) -> Result<(ExperimentFile, Plan)> {
    let (train, extra): (_, Extra) =
        crate::config::load_with(config, sets, &["scheduler", "experiment", "engine"])?;
    let mut cfg = ExperimentFile {
        train,
        scheduler: extra.scheduler,
        experiment: extra.experiment,
        engine: extra.engine,
    };
    cfg.train.absolutize(&crate::config::cwd()?);
    let t = &cfg.train.trainer;
    let (e, s) = (cfg.experiment.clone(), cfg.scheduler.clone());
    let plan = Plan::new(e, s, t.steps, t.save_every, t.val_every)?;
    Ok((cfg, plan))
}

/// Runs (or resumes) the experiment of `config` with `sets` in `out` and writes its report.
pub(crate) fn execute(config: Option<&Path>, sets: &[String], out: &Path) -> Result<Done> {
    let (mut cfg, plan) = prepare(config, sets)?;
    let base = ensure_base(&mut cfg.train)?;
    let resolved = out.join(next_files::resolved::FILE);
    let stamp = experiment::open(out, &cfg, &resolved, &experiment::current_commit())?;
    let text = crate::config::to_toml(&cfg)?;
    next_files::atomic::write(&resolved, text.as_bytes())?;
    let pb = bar(plan.total_steps() as u64, "experiment")?;
    let inproc = InProcess::new(cfg.train.clone(), base, steps_across_runs(&pb));
    let exe = std::env::current_exe()?;
    let mut engine = next_scheduler::build_engine(inproc, &cfg.engine, &plan.scheduler, exe)?;
    let results = experiment::run(engine.as_mut(), &plan, out, &mut |e| match e {
        Event::Stage { seed, what } => stage(&pb, format!("seed {seed}: {what}")),
        Event::Candidate { lambda, score } => {
            pb.set_message(format!("λ {lambda:.3} -> selection accuracy {score:.3}"))
        }
        Event::ArmDone(arm) => say(&pb, arm.summary_line()),
    })?;
    drop(engine);
    pb.finish_and_clear();
    let input = report::Input {
        plan: &plan,
        results: &results,
        config: &text,
        commit: &stamp,
        select_size: cfg.train.data.select_size,
    };
    let r = report::write(&out.join("report"), &input)?;
    let (table, report) = (r.table, r.markdown);
    Ok(Done {
        plan,
        results,
        table,
        report,
    })
}
