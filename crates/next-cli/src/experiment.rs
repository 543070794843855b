//! `next experiment`: every predict-extend method side by side on the same seeds, then a
//! report (`<out>/report/report.md` and PNG plots) and the results table on stdout.

use std::path::{Path, PathBuf};
use std::{cell::Cell, rc::Rc};

use anyhow::Result;
use next_scheduler::experiment::{self, Event, ExperimentSection, Plan};
use next_scheduler::{jump, report, EngineSection, InProcess, SchedulerSection};
use next_trainer::config::TrainConfig;
use next_trajectory::store::Store;
use serde::{Deserialize, Serialize};

use crate::ui::{bar, ensure_base, say};

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

/// What `--quick` changes: a base that pretrains in seconds, one seed, 40 RL steps.
pub(crate) const QUICK: &[&str] = &[
    "pretrain.out=runs/base-quick",
    "pretrain.task=add2",
    "pretrain.hidden_size=64",
    "pretrain.layers=2",
    "pretrain.intermediate_size=128",
    "pretrain.steps=300",
    "pretrain.batch=64",
    "pretrain.train_size=5000",
    "pretrain.warmup_steps=20",
    "data.task=add2",
    "data.train_size=5000",
    "data.val_size=500",
    "trainer.steps=40",
    "trainer.save_every=5",
    "trainer.val_every=10",
    "scheduler.horizon=10",
    "scheduler.grid=[0.5,1.0,2.0]",
    "experiment.seeds=1",
    "experiment.jump_at=[20]",
    "experiment.resamples=200",
];

pub fn run(a: Args) -> Result<()> {
    let mut sets: Vec<String> = if a.quick {
        QUICK.iter().map(|s| s.to_string()).collect()
    } else {
        vec![]
    };
    sets.extend(a.sets.iter().cloned());
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
    let plan = Plan::new(
        cfg.experiment.clone(),
        cfg.scheduler.clone(),
        t.steps,
        t.save_every,
        t.val_every,
    )?;
    Ok((cfg, plan))
}

/// Runs (or resumes) the experiment of `config` with `sets` in `out` and writes its report.
pub(crate) fn execute(config: Option<&Path>, sets: &[String], out: &Path) -> Result<Done> {
    let (mut cfg, plan) = prepare(config, sets)?;
    let base = ensure_base(&mut cfg.train)?;
    let resolved = out.join("config.resolved.toml");
    let stamp = experiment::open(out, &cfg, &resolved, &experiment::current_commit())?;
    let text = crate::config::to_toml(&cfg)?;
    next_files::atomic::write(&resolved, text.as_bytes())?;
    let (steps, e) = (plan.steps, &plan.experiment);
    // With kept moments the control is the baseline itself and trains nothing.
    let arms = plan.arms().len() - usize::from(plan.scheduler.keep_moments);
    let arm_steps: usize = e.jump_at.iter().map(|k| arms * (steps - k)).sum();
    // The tuning, then per seed its baseline, B* (unless it is the configured rate, which only
    // the tuning tells; the bar then ends early), and the arms.
    let (tuning, tuned) = if e.lr_scales.is_empty() {
        (0, 0)
    } else {
        (
            e.tuning_seeds * plan.scales().len(),
            usize::from(!e.at_tuned_lr),
        )
    };
    let total = tuning * steps + plan.seeds().len() * ((1 + tuned) * steps + arm_steps);
    let pb = bar(total as u64, "experiment")?;
    // RL steps finished in earlier runs, and where the current run started.
    let done = Rc::new(Cell::new(0u64));
    let (start, last) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    let inproc = InProcess::new(
        cfg.train.clone(),
        base,
        Box::new({
            let (pb, done, start, last) = (pb.clone(), done.clone(), start.clone(), last.clone());
            move |_, e| match e {
                next_trainer::train::Event::Start { step, .. } => {
                    done.set(done.get() + last.get() - start.get());
                    start.set(step as u64);
                    last.set(step as u64);
                }
                next_trainer::train::Event::Step { step, .. } => {
                    last.set(step as u64);
                    pb.set_position(done.get() + last.get() - start.get());
                }
                _ => {}
            }
        }),
    );
    let exe = std::env::current_exe()?;
    let mut engine = next_scheduler::build_engine(inproc, &cfg.engine, &plan.scheduler, exe)?;
    let results = experiment::run(engine.as_mut(), &plan, out, &mut |e| match e {
        Event::Stage { seed, what } => {
            let line = format!("seed {seed}: {what}");
            // A log (output not a terminal) gets every stage as a line.
            if pb.is_hidden() {
                eprintln!("{line}");
            }
            pb.set_message(line)
        }
        Event::Candidate { lambda, score } => {
            pb.set_message(format!("λ {lambda:.3} -> selection accuracy {score:.3}"))
        }
        Event::ArmDone(arm) => {
            let hit = arm.curve.last().map_or(f64::NAN, |p| p.accuracy);
            say(
                &pb,
                format!(
                    "seed {} k={} {}: λ {}, after jump {:.3}, last validation {:.3} at step {}, overhead {:.1}s",
                    arm.seed,
                    arm.jump_at,
                    arm.name,
                    arm.lambda.map_or("–".into(), |l| format!("{l}")),
                    arm.jump_accuracy(),
                    hit,
                    arm.curve.last().map_or(0, |p| p.step),
                    arm.overhead.total()
                ),
            );
        }
    })?;
    drop(engine);
    pb.finish_and_clear();
    let store = match &results.analysed {
        Some(run) => {
            let dir = run.join("trajectory");
            jump::extract_run(run, None, cfg.scheduler.horizon, &dir)?;
            Some(Store::open(&dir)?)
        }
        None => None,
    };
    let r = report::write(
        &out.join("report"),
        &report::Input {
            plan: &plan,
            results: &results,
            config: &text,
            commit: &stamp,
            select_size: cfg.train.data.select_size,
            trajectory: store.as_ref(),
        },
    )?;
    Ok(Done {
        plan,
        results,
        table: r.table,
        report: r.markdown,
    })
}
