//! `next pretrain` and `next train`: the embedded base model and the RL loop, with a progress
//! bar, a compact line per logging interval, and a summary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use next_trainer::metrics::greedy_val_mean;
use next_trainer::train::Event;
use next_trainer::TrainConfig;
use serde_json::Value;

use crate::ui::{bar, ensure_base, say};

#[derive(Debug, clap::Args)]
pub struct PretrainArgs {
    /// TOML config; its [pretrain] table is used (see configs/embedded.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dotted overrides, e.g. --set pretrain.steps=500.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Where to pretrain the HF model directory (default: pretrain.out) when no base shipped in
    /// `bases/` has these settings; the directory of the base used is printed either way.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// TOML config (see configs/embedded.toml); without one, the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dotted overrides, e.g. --set optim.lr=2e-3 --set trainer.steps=100.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (metrics.jsonl, checkpoints, config.resolved.toml). Resumes if it has a
    /// checkpoint.
    #[arg(long)]
    out: PathBuf,
}

pub fn pretrain(a: PretrainArgs) -> Result<()> {
    let mut cfg: TrainConfig = crate::config::load(a.config.as_deref(), &a.sets)?;
    if let Some(out) = &a.out {
        cfg.pretrain.out = out.display().to_string();
    }
    cfg.model.path.clear();
    cfg.absolutize(&crate::config::cwd()?);
    println!("{}", ensure_base(&mut cfg)?.display());
    Ok(())
}

fn f(m: &serde_json::Map<String, Value>, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

pub fn train(a: TrainArgs) -> Result<()> {
    let mut cfg: TrainConfig = crate::config::load(a.config.as_deref(), &a.sets)?;
    cfg.absolutize(&crate::config::cwd()?);
    let base = ensure_base(&mut cfg)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    crate::config::write_resolved(&a.out.join(next_files::resolved::FILE), &cfg)?;
    let pb = bar(cfg.trainer.steps as u64, "train")?;
    let log_every = cfg.trainer.log_every.max(1);
    let mut last_val = None;
    let summary = next_trainer::train::train(&cfg, &a.out, Path::new(&base), &mut |e| match e {
        Event::Start {
            step,
            steps,
            resumed,
        } => {
            pb.set_position(step as u64);
            if resumed {
                say(
                    &pb,
                    format!("resuming {} at step {step}/{steps}", a.out.display()),
                );
            }
        }
        Event::Validating { step, problems } => {
            pb.set_message(format!("validating {problems} problems"));
            if pb.is_hidden() {
                eprintln!("step {step:>4}: validating on {problems} problems (greedy)");
            }
        }
        Event::Validation { step, metrics } => {
            last_val = greedy_val_mean(&metrics).or(last_val);
            say(
                &pb,
                format!(
                    "step {step:>4}: validation {}",
                    metrics
                        .iter()
                        .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Event::Step { step, metrics } => {
            pb.set_position(step as u64);
            pb.set_message(format!(
                "reward {:.3} val {:.3} {:.0} tok/s",
                f(&metrics, "critic/score/mean"),
                last_val.unwrap_or(f64::NAN),
                f(&metrics, "perf/throughput")
            ));
            if step % log_every == 0 {
                say(&pb, format!(
                    "step {step:>4}: score {:.3}, len {:.1}, entropy {:.3}, grad_norm {:.3}, flat groups {:.2}, {:.3}s/step (gen {:.3}, verify {:.3}, update {:.3})",
                    f(&metrics, "critic/score/mean"),
                    f(&metrics, "response_length/mean"),
                    f(&metrics, "actor/entropy"),
                    f(&metrics, "actor/grad_norm"),
                    f(&metrics, "batch/zero_variance_group_frac"),
                    f(&metrics, "timing_s/step"),
                    f(&metrics, "timing_s/gen"),
                    f(&metrics, "timing_s/verify"),
                    f(&metrics, "timing_s/update"),
                ));
            }
        }
        Event::Checkpoint { .. } => {}
    })?;
    pb.finish_and_clear();
    eprintln!(
        "trained {} steps in {:.1}s; greedy validation {} -> {}; run directory {}",
        summary.steps,
        summary.seconds,
        summary.first_val.map_or("?".into(), |v| format!("{v:.3}")),
        summary.last_val.map_or("?".into(), |v| format!("{v:.3}")),
        a.out.display()
    );
    Ok(())
}
