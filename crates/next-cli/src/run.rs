//! `next run`: the whole predict-extend loop — train a segment, extract, fit, choose a jump with
//! the verifier, continue from it — resumable in any phase.

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_scheduler::{EngineSection, Event, InProcess, Phase, SchedulerSection};
use next_trainer::config::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::ui::{bar, ensure_base, say};

/// RLVR with predict-extend: train `scheduler.segment_steps`, jump along the predicted rank-1
/// trajectory (λ chosen by the task's verifier, against no jump), continue; `scheduler.rounds`
/// times, then train to `trainer.steps`. Kill it at any moment and run it again to resume.
///
/// The config is `next train`'s plus a [scheduler] table (segment_steps, rounds, predictor,
/// horizon, search, grid, lambda, lambda_max, evals, rank, window, keep_moments) and an
/// [engine] table: kind = "inproc" (this project's trainer) or "trl" (TRL's GRPOTrainer with
/// PEFT, run by the project's Python; python, launcher, and a `trl` table of GRPOConfig fields).
///
/// Example: `next run --out runs/pe --set scheduler.predictor=two-point`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config; without one, the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides, e.g. `--set scheduler.rounds=2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The run directory.
    #[arg(long)]
    out: PathBuf,
}

/// `next train`'s config plus the scheduler's table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunConfig {
    #[serde(flatten)]
    train: TrainConfig,
    #[serde(default)]
    scheduler: SchedulerSection,
    #[serde(default)]
    engine: EngineSection,
}

/// The tables `next run` adds to `next train`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extra {
    #[serde(default)]
    scheduler: SchedulerSection,
    #[serde(default)]
    engine: EngineSection,
}

pub fn run(a: Args) -> Result<()> {
    let (train, extra): (_, Extra) =
        crate::config::load_with(a.config.as_deref(), &a.sets, &["scheduler", "engine"])?;
    let mut cfg = RunConfig {
        train,
        scheduler: extra.scheduler,
        engine: extra.engine,
    };
    cfg.train.absolutize(&crate::config::cwd()?);
    let base = ensure_base(&mut cfg.train)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    crate::config::write_resolved(&a.out.join(next_files::resolved::FILE), &cfg)?;
    let total = cfg.train.trainer.steps;
    let pb = bar(total as u64, "run")?;
    let inproc = InProcess::new(
        cfg.train.clone(),
        base,
        Box::new(|_, e| match e {
            next_trainer::train::Event::Step { step, .. } => {
                pb.set_position(step as u64);
                pb.set_message("");
            }
            next_trainer::train::Event::Validating { problems, .. } => {
                pb.set_message(format!("validating {problems} problems"));
            }
            _ => {}
        }),
    );
    let exe = std::env::current_exe()?;
    let mut engine = next_scheduler::build_engine(inproc, &cfg.engine, &cfg.scheduler, exe)?;
    let state = next_scheduler::run(
        engine.as_mut(),
        &cfg.scheduler,
        &a.out,
        total,
        cfg.train.trainer.save_every,
        &mut |e| match e {
            Event::Phase {
                round,
                phase,
                until,
            } => match phase {
                Phase::Train => {
                    pb.set_message(format!("segment {round}: training to step {until}"))
                }
                Phase::Extend => pb.set_message(format!("round {round}: extract, fit, choose λ")),
                Phase::Done => {}
            },
            Event::Candidate {
                round,
                lambda,
                score,
            } => say(
                &pb,
                format!("round {round}: λ {lambda:.4} -> selection accuracy {score:.4}"),
            ),
            Event::Decided(d) => say(
                &pb,
                format!(
                    "round {}: jumped from step {} with {} λ {} ({} candidates, {:.1}s, {} tokens)",
                    d.round,
                    d.from_step,
                    d.predictor,
                    d.lambda,
                    d.candidates.len(),
                    d.search_seconds,
                    d.search_tokens
                ),
            ),
        },
    )?;
    drop(engine);
    pb.finish_and_clear();
    eprintln!(
        "predict-extend run finished: {} steps, {} jump(s) (λ {:?}); run directory {}",
        total,
        state.decisions.len(),
        state.decisions.iter().map(|d| d.lambda).collect::<Vec<_>>(),
        a.out.display()
    );
    Ok(())
}
