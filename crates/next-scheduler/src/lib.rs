//! `next-scheduler`: predict-extend as a process. It sequences a trainer (behind the
//! [`Engine`] seam), the trajectory store and the predictors; it decides nothing about models
//! or losses.
//!
//! - [`jump`]: one jump — extract, fit, choose λ with the verifier against no jump, write the
//!   adapter and `extend.json`; shared by `next run`, `next extend` and the experiment.
//! - [`run`] (the loop): train in segments, jump after each of the first `rounds`, resume in
//!   any phase from `scheduler.json`.
//! - [`experiment`]: every method side by side on the same seeds, against the same-LR
//!   baseline and a tuned one (B*); [`stats`] its targets, paired bootstrap, modelled wall clock
//!   and equivalent learning rate; [`report`] its table, `report.md` and plots.
//! - [`study`]: several experiments (regimes) and one report across them.
//! - [`InProcess`]: this project's trainer behind the engine seam; [`Trl`]: TRL's
//!   GRPOTrainer behind it (`[engine] kind = "trl"`); [`Verl`]: verl's `main_ppo` (`kind =
//!   "verl"`, [`verl`] its overrides, checkpoint layout and exporter); picked by
//!   [`build_engine`].
//!
//! Layout of a `next run` directory: `segment-N/` (an ordinary training run per segment),
//! `extend/round-N/` (the chosen adapter with `extend.json`), `scheduler.json`.
//!
//! Architecture invariant: reads the trainer's output only through `metrics.jsonl` and
//! checkpoints, and owns only `scheduler.json`, `experiment.json` and their layouts (and, for
//! the TRL and verl engines, a segment's `trl/` or `verl/` directory, mirrored into the
//! trainer's checkpoint layout through `next_trainer::checkpoint`). Every phase is resumable: a loop or experiment killed
//! at any point continues from its state file and the last complete checkpoint. A saving is
//! reported only when its paired interval excludes zero.
//!
//! Entry points: [`run()`] with an [`Engine`] ([`InProcess`] for this project's trainer,
//! [`Trl`] for TRL's, [`Verl`] for verl's; [`build_engine`] from the `[engine]` table),
//! [`jump::jump`], [`experiment::run`], [`study`].
//!
//! ```
//! use next_scheduler::stats::{paired_saving, Verdict};
//! // Steps to a target on four seeds, without and with a jump (same seeds, paired).
//! let control = [180.0, 200.0, 190.0, 210.0];
//! let method = [160.0, 185.0, 170.0, 190.0];
//! let s = paired_saving(&control, &method, 2000, 0.95, 0);
//! assert!((s.estimate - 9.615).abs() < 0.001); // percent of the control's steps
//! assert_eq!(s.verdict(), Verdict::Saves); // the whole interval is above zero
//! ```

use std::path::Path;

use jump::Predicted;
pub use next_trainer::train::ScoreSet;

mod child;
mod config;
mod engine;
pub mod experiment;
mod external;
pub mod jump;
pub mod report;
mod run;
pub mod study;
mod trl;
pub mod verl;

// The experiment's statistics read its plan and curves, so they live in `experiment`; the
// path `next_scheduler::stats` stays.
pub use experiment::stats;

pub use config::{EngineKind, EngineSection, SchedulerSection, SearchKind};
pub use engine::{build as build_engine, InProcess, TrainProgress};
pub use run::{run, segment_dir, Decision, Event, Phase, State, STATE};
pub use trl::Trl;
pub use verl::Verl;

/// Errors of the loop; each names the phase and file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Trainer(#[from] next_trainer::Error),
    #[error(transparent)]
    Trajectory(#[from] next_trajectory::Error),
    #[error(transparent)]
    Predictor(#[from] next_predictor::Error),
    #[error(transparent)]
    File(#[from] next_files::Error),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| next_files::Error::io(path, source).into()
}

/// The Python client of `next verify --serve` that the engines' drivers score rewards with.
const VERIFY_CLIENT: &str = include_str!("next_verify.py");

/// Writes `next_verify.py` (the client of `next verify --serve`) into a driver's directory.
fn write_verify_client(dir: &Path) -> Result<()> {
    Ok(next_files::atomic::write(
        &dir.join("next_verify.py"),
        VERIFY_CLIENT.as_bytes(),
    )?)
}

/// What predict-extend needs from a trainer.
pub trait Engine {
    /// Trains `run` (resuming from its last checkpoint) until `step`; checkpoints at `step`.
    fn train(&mut self, run: &Path, step: usize) -> Result<()>;
    /// The greedy reward of the base with `adapter` on the split `set`, and the tokens
    /// generated to score it.
    fn score(&mut self, adapter: &Path, set: ScoreSet) -> Result<(f64, u64)>;
    /// The selection reward (and tokens) of each candidate λ of `predicted` from `adapter`
    /// (a merged-space prediction's first `rank` terms) for each λ of `lambdas`; λ = 0 is
    /// `adapter` itself. The default scores each candidate alone ([`score_alone`]).
    fn score_jumps(
        &mut self,
        adapter: &Path,
        predicted: &Predicted,
        rank: usize,
        lambdas: &[f64],
    ) -> Result<Vec<(f64, u64)>> {
        score_alone(self, adapter, predicted, rank, lambdas)
    }
    /// Makes `run` start at `from`'s checkpoint `step` (data cursor, seed) with `adapter`,
    /// and that checkpoint's optimizer moments if `keep_moments` (else fresh ones).
    fn start_from(
        &mut self,
        run: &Path,
        from: &Path,
        step: usize,
        adapter: &Path,
        keep_moments: bool,
    ) -> Result<()>;
    /// The trainer seed (sampling, data order) of the runs trained from now on.
    fn set_seed(&mut self, seed: u64);
    /// The multiple of the configured learning rate the runs trained from now on use (a tuned
    /// baseline trains at several).
    fn set_lr_scale(&mut self, scale: f64);
}

/// Scores each candidate λ of `predicted` alone on the selection split: λ = 0 is `adapter`, any
/// other is written as an adapter into a temporary directory first ([`jump::write_candidate`]).
/// What any engine can do (the [`Engine`] default); the in-process engine decodes all
/// candidates in one pass instead.
pub fn score_alone<E: Engine + ?Sized>(
    engine: &mut E,
    adapter: &Path,
    predicted: &Predicted,
    rank: usize,
    lambdas: &[f64],
) -> Result<Vec<(f64, u64)>> {
    let scratch = tempfile::Builder::new()
        .prefix("next-lambda-")
        .tempdir()
        .map_err(io(&std::env::temp_dir()))?;
    let mut out = Vec::with_capacity(lambdas.len());
    for (i, &lambda) in lambdas.iter().enumerate() {
        let scored = if lambda == 0.0 {
            engine.score(adapter, ScoreSet::Selection)?
        } else {
            let dir = scratch.path().join(format!("candidate-{i}"));
            std::fs::create_dir(&dir).map_err(io(&dir))?;
            jump::write_candidate(predicted, adapter, lambda, rank, &dir)?;
            engine.score(&dir, ScoreSet::Selection)?
        };
        out.push(scored);
    }
    Ok(out)
}
