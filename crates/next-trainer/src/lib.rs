//! `next-trainer`: RLVR on LoRA adapters — the GRPO family of advantage estimators and losses,
//! a resumable AdamW, checkpoints in verl's layout with exact resume, datasets, the embedded task
//! and its pretrained base.
//!
//! Architecture invariant: this crate never reads configuration files (it receives a typed
//! `TrainConfig`) and never prints; progress goes to a callback and logs to `tracing`.

pub mod advantage;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod demo;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod pretrain;
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
