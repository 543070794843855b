//! `next-trainer`: RLVR on LoRA adapters — the GRPO family of advantage estimators and losses,
//! a resumable AdamW, checkpoints in verl's layout with exact resume, datasets, the embedded task
//! and its pretrained base.
//!
//! Architecture invariant: this crate never reads configuration files (it receives a typed
//! `TrainConfig`) and never prints; progress goes to a callback and logs to `tracing`. Every
//! random choice derives from `(seed, step)`, so a run killed at any point and resumed from its
//! last checkpoint repeats the uninterrupted run; checkpoints appear whole or not at all.
//!
//! Entry points: [`train::train`] (a run in a directory, resumable; [`train::train_with`] with
//! verifiers of your own), [`train::Scorer`] (greedy validation of adapters),
//! [`config::TrainConfig`] (every key with its default), [`pretrain`] (the embedded base),
//! [`metrics`] (reading `metrics.jsonl`).
//!
//! ```
//! use next_trainer::config::TrainConfig;
//! # fn main() -> next_trainer::Result<()> {
//! let base = next_model::testing::rust_model(31);
//! let run = tempfile::tempdir().expect("temporary directory");
//! let mut cfg = TrainConfig::default();
//! cfg.model.path = base.path().display().to_string();
//! cfg.data.task = next_trainer::tasks::Task::parse("add2")?;
//! (cfg.data.train_size, cfg.data.val_size) = (64, 8);
//! (cfg.rollout.n, cfg.rollout.max_new_tokens) = (4, 4);
//! (cfg.trainer.steps, cfg.trainer.prompts_per_step) = (2, 4);
//! let summary = next_trainer::train::train(&cfg, run.path(), base.path(), &mut |_event| {})?;
//! assert_eq!(summary.steps, 2);
//! // verl's layout: a checkpoint per save, the latest step in a text file.
//! assert!(run.path().join("latest_checkpointed_iteration.txt").exists());
//! # Ok(())
//! # }
//! ```

pub mod advantage;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod demo;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod pretrain;
mod row;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod train;

pub use config::TrainConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] next_model::Error),
    #[error(transparent)]
    Rollout(#[from] next_rollout::Error),
    #[error(transparent)]
    Verifier(#[from] next_verifiers::Error),
    #[error(transparent)]
    File(#[from] next_files::Error),
    #[error("config: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("numerical failure: {0}")]
    Numerics(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
