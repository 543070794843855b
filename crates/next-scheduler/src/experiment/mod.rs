//! `next experiment`: every predict-extend method side by side on the same seeds. Per seed a
//! baseline GRPO run; from its checkpoint at each jump step K a control arm (restarted there
//! with no jump, as every arm is) and one arm per method (extract, fit, choose λ with the
//! verifier, jump, continue). Every cost is counted; every arm is resumable on its own.
//!
//! Layout under the experiment directory:
//! `seed-S/baseline/` (a training run), `seed-S/k-K/trajectory/` (the rank-1 store of the
//! baseline's checkpoints up to K: arms never see past their jump), `seed-S/k-K/<arm>/` (the
//! arm's run; `arm.json` once finished), `seed-S/k-K/<arm>.adapter/` (the adapter it starts
//! from, with `extend.json` and `jump.json`), with `experiment.rounds` > 1 also `<arm>.round-R/`
//! and `<arm>.round-R.adapter/` per further jump, `experiment.json` (every finished baseline
//! and arm), `settings.json` (the settings the arms were made with), `commit.txt`.
//!
//! `plan.rs` checks the settings; `arm.rs` runs baselines and arms; `metrics.rs` reads their
//! curves.
//!
//! Architecture invariant: knows nothing of models or tasks; it sequences the [`Engine`], the
//! trajectory store and the predictors, and reads the trainer's `metrics.jsonl`.

use std::path::{Path, PathBuf};

use next_predictor::PredictorKind;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{io, Engine, Error, Result};

mod arm;
mod metrics;
mod plan;

pub use plan::Plan;

/// The `[experiment]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentSection {
    /// Seeds (trainer seeds `first_seed`, `first_seed + 1`, ...); every arm runs on each.
    pub seeds: usize,
    pub first_seed: u64,
    /// Steps at which the arms branch off the baseline (a sweep when several); multiples of
    /// `trainer.save_every` and `trainer.val_every`.
    pub jump_at: Vec<usize>,
    /// Predictors compared; the control arm is always added.
    pub methods: Vec<PredictorKind>,
    /// The lower target: this fraction of the way from the base accuracy to the baseline's
    /// final accuracy.
    pub lower_target: f64,
    /// Last validations of the baseline averaged into its final accuracy (the target).
    pub final_window: usize,
    /// Stop an arm once its validation accuracy reaches the target (saves time; then
    /// accuracy at equal step budgets is only known up to there).
    pub stop_at_target: bool,
    /// Jumps per method arm: the first at K, then one every `every` steps, each fitted on
    /// the arm's own trajectory since its last jump.
    pub rounds: usize,
    pub every: usize,
    /// Bootstrap resamples of the seeds for the confidence intervals.
    pub resamples: usize,
    /// Confidence level of the intervals.
    pub confidence: f64,
}

impl Default for ExperimentSection {
    fn default() -> Self {
        Self {
            seeds: 5,
            first_seed: 0,
            jump_at: vec![50],
            methods: vec![
                PredictorKind::NextReference,
                PredictorKind::Next,
                PredictorKind::LinearRelex,
                PredictorKind::LinearAlpharl,
                PredictorKind::TwoPoint,
            ],
            lower_target: 0.9,
            final_window: 1,
            stop_at_target: false,
            rounds: 1,
            every: 20,
            resamples: 2000,
            confidence: 0.95,
        }
    }
}

/// The name of the arm that branches at K with no jump.
pub const CONTROL: &str = "control";

/// One validation of a run: the step, the accuracy, and the wall clock spent to get there
/// (RL steps of the run and of the baseline prefix it branched from, plus its jump's
/// overhead; validation itself is not counted, every arm does the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub step: usize,
    pub accuracy: f64,
    pub seconds: f64,
}

/// What a jump cost, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    pub extract: f64,
    pub fit: f64,
    pub search: f64,
}

impl Overhead {
    pub fn total(&self) -> f64 {
        self.extract + self.fit + self.search
    }
}

/// The baseline run of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub seed: u64,
    pub curve: Vec<Point>,
    /// The final accuracy (mean of the last `final_window` validations): the target.
    pub target: f64,
    pub lower_target: f64,
}

/// One arm of one seed at one jump step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub seed: u64,
    pub jump_at: usize,
    pub name: String,
    /// The jump chosen at K (None for the control).
    pub lambda: Option<f64>,
    /// The λ of each further jump (`experiment.rounds` > 1).
    #[serde(default)]
    pub later_lambdas: Vec<f64>,
    /// (λ, validation accuracy) scored by the search.
    pub candidates: Vec<(f64, f64)>,
    pub overhead: Overhead,
    /// Baseline validations before K, the accuracy right after the jump at K, then the arm's.
    pub curve: Vec<Point>,
}

impl Arm {
    /// Validation accuracy right after the jump.
    pub fn jump_accuracy(&self) -> f64 {
        accuracy_at(&self.curve, self.jump_at)
    }
}

/// The validation accuracy at `step` (NaN if the curve has no validation there).
pub fn accuracy_at(curve: &[Point], step: usize) -> f64 {
    curve
        .iter()
        .find(|p| p.step == step)
        .map_or(f64::NAN, |p| p.accuracy)
}

/// The first validation at or above `target`, if any.
pub fn reached(curve: &[Point], target: f64) -> Option<Point> {
    curve.iter().copied().find(|p| p.accuracy >= target)
}

/// Everything the experiment measured; `experiment.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub baselines: Vec<Baseline>,
    pub arms: Vec<Arm>,
    /// The run whose trajectory the report analyses (the first seed's baseline).
    pub analysed: Option<PathBuf>,
}

pub const RESULTS: &str = "experiment.json";

/// Progress, for the CLI.
#[derive(Debug, Clone)]
pub enum Event {
    /// What runs now (seed, what).
    Stage {
        seed: u64,
        what: String,
    },
    Candidate {
        lambda: f64,
        score: f64,
    },
    ArmDone(Arm),
}

pub fn seed_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

fn k_dir(out: &Path, seed: u64, k: usize) -> PathBuf {
    seed_dir(out, seed).join(format!("k-{k}"))
}

/// The settings an experiment directory's arms were made with.
pub const SETTINGS: &str = "settings.json";
/// The commit that started the experiment.
pub const COMMIT: &str = "commit.txt";

/// Opens the experiment directory `out` for `settings` (the whole typed configuration): a
/// directory made with other settings is refused (its finished arms would be mixed with new
/// ones; `resolved` names the file a person compares), one made with the same settings is
/// resumed. Records the settings and the commit that started it; returns that commit.
pub fn open<S>(out: &Path, settings: &S, resolved: &Path, commit: &str) -> Result<String>
where
    S: Serialize + DeserializeOwned + PartialEq,
{
    std::fs::create_dir_all(out).map_err(io(out))?;
    let path = out.join(SETTINGS);
    // Compared as parsed, so keys added since (with their defaults) are not a change.
    if let Some(before) = next_files::json::read_opt::<S>(&path).ok().flatten() {
        if &before != settings {
            return Err(Error::Config(format!(
                "{} holds an experiment with other settings than these (compare {}); use another --out, or delete it to start over",
                out.display(),
                resolved.display()
            )));
        }
    } else if path.exists() {
        return Err(Error::Config(format!(
            "{} cannot be read; delete the experiment directory {} to start over",
            path.display(),
            out.display()
        )));
    }
    next_files::json::write(&path, settings)?;
    let started = out.join(COMMIT);
    if !started.is_file() {
        next_files::atomic::write(&started, commit.as_bytes())?;
    }
    let text = std::fs::read_to_string(&started).map_err(io(&started))?;
    Ok(text.trim().to_string())
}

/// The commit of the git checkout the experiment runs in (and whether it has changes), for
/// the report.
pub fn current_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} (with uncommitted changes)")
            } else {
                c
            }
        }
        None => "unknown (not run from a git checkout)".into(),
    }
}

/// Runs (or resumes) the whole experiment in `out`; returns every measurement.
pub fn run(
    engine: &mut dyn Engine,
    plan: &Plan,
    out: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Results> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut results = Results::default();
    let mut ctx = arm::Ctx {
        engine,
        plan,
        out,
        on_event,
    };
    for seed in plan.seeds() {
        ctx.engine.set_seed(seed);
        let baseline = ctx.baseline(seed)?;
        if results.analysed.is_none() {
            results.analysed = Some(seed_dir(out, seed).join("baseline"));
        }
        for &k in &plan.experiment.jump_at {
            for name in plan.arms() {
                let arm = ctx.arm(&baseline, k, &name)?;
                (ctx.on_event)(Event::ArmDone(arm.clone()));
                results.arms.push(arm);
                next_files::json::write(&out.join(RESULTS), &results)?;
            }
        }
        results.baselines.push(baseline);
        next_files::json::write(&out.join(RESULTS), &results)?;
    }
    Ok(results)
}
