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
//! curves; `stats.rs` turns curves into targets, costs and paired savings.
//!
//! Architecture invariant: knows nothing of models or tasks; it sequences the [`Engine`], the
//! trajectory store and the predictors, and reads the trainer's `metrics.jsonl`.

use std::path::{Path, PathBuf};

use next_predictor::{Method, PredictorKind};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{io, Engine, Error, Result};

mod arm;
mod metrics;
mod plan;
pub mod stats;

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
    /// Methods compared (merged-space predictors and factor-space methods); the control arm
    /// is always added.
    pub methods: Vec<Method>,
    /// Targets, as fractions of the way from the base accuracy to the plateau (the reporting
    /// baselines' final accuracy, averaged over seeds), reached on curves smoothed over
    /// `smooth` validations.
    pub targets: Vec<f64>,
    /// The target of the headline table (one of `targets`).
    pub headline: f64,
    /// Validations in the trailing mean a curve is smoothed with before a target is read off.
    pub smooth: usize,
    /// Last validations of the baseline averaged into its final accuracy (the plateau).
    pub final_window: usize,
    /// Multiples of the learning rate the baseline is also trained at on the tuning seeds; the
    /// best (fewest steps to the headline target) is the tuned baseline B*, trained on the
    /// reporting seeds too. Empty: no tuning.
    pub lr_scales: Vec<f64>,
    /// Seeds of the tuning (kept apart from the reporting seeds the tables use).
    pub tuning_seeds: usize,
    pub tuning_first_seed: u64,
    /// Run the reporting baselines and the arms at B*'s learning rate instead of the
    /// configured one (then the control is B*): does jumping still help a tuned run?
    pub at_tuned_lr: bool,
    /// Steps after the jump at which its predicted direction is compared with the baseline's
    /// realised change (multiples of `trainer.save_every`).
    pub diag_horizons: Vec<u64>,
    /// Steps before and after the jump over which mixed groups and entropy are averaged.
    pub diag_window: usize,
    /// Stop an arm once its smoothed curve reaches the highest of `targets` (saves time; then
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
            methods: [
                PredictorKind::NextReference,
                PredictorKind::Next,
                PredictorKind::LinearRelex,
                PredictorKind::LinearAlpharl,
                PredictorKind::TwoPoint,
            ]
            .map(Method::Merged)
            .to_vec(),
            targets: vec![0.6, 0.8, 0.9],
            headline: 0.8,
            smooth: 3,
            final_window: 1,
            lr_scales: vec![],
            tuning_seeds: 4,
            tuning_first_seed: 1000,
            at_tuned_lr: false,
            diag_horizons: vec![10, 20, 30, 40, 50],
            diag_window: 20,
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

/// What a smoke run (`next experiment --quick`) changes, as `--set` overrides applied before
/// the command line's: a base that pretrains in seconds, one seed, 40 RL steps.
pub const QUICK: &[&str] = &[
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

/// The baseline run of one seed at one learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub seed: u64,
    /// The multiple of the configured learning rate it trained at.
    #[serde(default = "one")]
    pub lr_scale: f64,
    pub curve: Vec<Point>,
    /// Its final accuracy (mean of the last `final_window` validations), the plateau.
    pub target: f64,
    /// The median seconds of its RL steps (the modelled wall clock's unit).
    #[serde(default)]
    pub step_seconds: f64,
}

fn one() -> f64 {
    1.0
}

/// A jump of an arm: the step it was made at and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JumpCost {
    pub step: usize,
    pub seconds: f64,
}

/// Why a jump helped or did not, measured around it (see `experiment.diag_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// (h, cosine between the predicted change and the baseline's change from K to K + h).
    pub cosine: Vec<(u64, f64)>,
    /// Fraction of groups with mixed rewards and the policy's entropy: the baseline in the
    /// window before K, the arm in the window after, and the baseline in the window that
    /// starts where it first reaches the arm's accuracy right after the jump.
    #[serde(with = "next_files::json::nan_null")]
    pub mixed_before: f64,
    #[serde(with = "next_files::json::nan_null")]
    pub mixed_after: f64,
    #[serde(with = "next_files::json::nan_null")]
    pub mixed_control: f64,
    #[serde(with = "next_files::json::nan_null")]
    pub entropy_before: f64,
    #[serde(with = "next_files::json::nan_null")]
    pub entropy_after: f64,
    #[serde(with = "next_files::json::nan_null")]
    pub entropy_control: f64,
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
    /// (λ, selection accuracy) scored by the search.
    pub candidates: Vec<(f64, f64)>,
    pub overhead: Overhead,
    /// Every jump with its cost (for the modelled wall clock).
    #[serde(default)]
    pub jumps: Vec<JumpCost>,
    /// Baseline validations before K, the accuracy right after the jump at K, then the arm's.
    pub curve: Vec<Point>,
    #[serde(default)]
    pub diagnostics: Option<Diagnostics>,
}

impl Arm {
    /// Validation accuracy right after the jump.
    pub fn jump_accuracy(&self) -> f64 {
        accuracy_at(&self.curve, self.jump_at)
    }

    /// One line saying what the finished arm measured (the progress log's).
    pub fn summary_line(&self) -> String {
        let last = self.curve.last();
        format!(
            "seed {} k={} {}: λ {}, after jump {:.3}, last validation {:.3} at step {}, overhead {:.1}s",
            self.seed,
            self.jump_at,
            self.name,
            self.lambda.map_or("–".into(), |l| format!("{l}")),
            self.jump_accuracy(),
            last.map_or(f64::NAN, |p| p.accuracy),
            last.map_or(0, |p| p.step),
            self.overhead.total()
        )
    }
}

/// The validation accuracy at `step` (NaN if the curve has no validation there).
pub fn accuracy_at(curve: &[Point], step: usize) -> f64 {
    curve
        .iter()
        .find(|p| p.step == step)
        .map_or(f64::NAN, |p| p.accuracy)
}

/// Everything the experiment measured; `experiment.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The baselines of the reporting seeds, at the arms' rate (`arm_scale`: 1, or B*'s with
    /// `at_tuned_lr`).
    pub baselines: Vec<Baseline>,
    /// The baselines at every scale of `lr_scales`, on the tuning seeds.
    #[serde(default)]
    pub tuning: Vec<Baseline>,
    /// B*: the scale chosen on the tuning seeds.
    #[serde(default)]
    pub tuned_scale: Option<f64>,
    /// B* on the reporting seeds (empty when B* is the configured rate or the arms' rate).
    #[serde(default)]
    pub tuned: Vec<Baseline>,
    /// The learning-rate multiple the reporting baselines and the arms trained at (B*'s with
    /// `experiment.at_tuned_lr`, else 1).
    #[serde(default = "one")]
    pub arm_scale: f64,
    pub arms: Vec<Arm>,
    /// The run whose trajectory the report analyses (the first seed's baseline).
    pub analysed: Option<PathBuf>,
}

impl Default for Results {
    fn default() -> Self {
        Results {
            baselines: vec![],
            tuning: vec![],
            tuned_scale: None,
            tuned: vec![],
            arm_scale: 1.0,
            arms: vec![],
            analysed: None,
        }
    }
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
    ArmDone(Box<Arm>),
}

pub fn seed_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

/// The baseline run of `seed` at learning-rate multiple `scale`.
pub fn baseline_dir(out: &Path, seed: u64, scale: f64) -> PathBuf {
    if scale == 1.0 {
        seed_dir(out, seed).join("baseline")
    } else {
        seed_dir(out, seed).join(format!("baseline-lr{scale}"))
    }
}

fn k_dir(out: &Path, seed: u64, k: usize) -> PathBuf {
    seed_dir(out, seed).join(format!("k-{k}"))
}

/// The settings an experiment directory's arms were made with.
pub const SETTINGS: &str = "settings.json";
/// The commit that started the experiment, then one line per sitting that added methods.
pub const COMMIT: &str = "commit.txt";

/// The settings an experiment directory is opened with: the whole typed configuration.
pub trait Settings: Serialize + DeserializeOwned + PartialEq + Clone {
    /// The methods compared: the one setting that may change between sittings (each method's
    /// arms are directories of their own, so adding one only runs its arms).
    fn methods_mut(&mut self) -> &mut Vec<Method>;
}

/// Opens the experiment directory `out` for `settings`: a directory made with other settings
/// is refused (its finished arms would be mixed with new ones; `resolved` names the file a
/// person compares), one made with the same settings is resumed, and one made with other
/// methods only gains the new methods (`commit.txt` then says at which commit they were
/// added). Records the settings and the commit that started it; returns the stamp for the
/// report: that record (one entry per sitting that added methods, joined by "; "), and the
/// commit writing the report when it is another.
pub fn open<S: Settings>(
    out: &Path,
    settings: &S,
    resolved: &Path,
    commit: &str,
) -> Result<String> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let path = out.join(SETTINGS);
    let mut record = settings.clone();
    let mut added = Vec::new();
    // Compared as parsed, so keys added since (with their defaults) are not a change.
    if let Some(mut before) = next_files::json::read_opt::<S>(&path).ok().flatten() {
        let ran = std::mem::take(before.methods_mut());
        let mut now = settings.clone();
        let wanted = std::mem::take(now.methods_mut());
        if before != now {
            return Err(Error::Config(format!(
                "{} holds an experiment with other settings than these (compare {}); only experiment.methods may change; use another --out, or delete it to start over",
                out.display(),
                resolved.display()
            )));
        }
        for m in wanted {
            if !ran.contains(&m) && !added.contains(&m) {
                added.push(m);
            }
        }
        // Every method ever run stays recorded, so removing one and adding it back later
        // is not a new sitting.
        *record.methods_mut() = ran.into_iter().chain(added.iter().copied()).collect();
    } else if path.exists() {
        return Err(Error::Config(format!(
            "{} cannot be read; delete the experiment directory {} to start over",
            path.display(),
            out.display()
        )));
    }
    // commit.txt first: a crash between the two writes then at worst records a sitting twice,
    // never a method in settings.json whose sitting commit.txt lacks.
    let started = out.join(COMMIT);
    let text = match std::fs::read_to_string(&started) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        r => r.map_err(io(&started))?,
    };
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        lines.push(commit.to_string());
    } else if !added.is_empty() {
        let names: Vec<String> = added.iter().map(ToString::to_string).collect();
        lines.push(format!("{} {ADDED_AT}{commit}", names.join(", ")));
    }
    let record_text = lines.join("\n");
    if record_text != text.trim() {
        next_files::atomic::write(&started, record_text.as_bytes())?;
    }
    next_files::json::write(&path, &record)?;
    let last = lines
        .last()
        .map(|l| l.rsplit(ADDED_AT).next().unwrap_or(l))
        .unwrap_or(commit);
    let stamp = lines.join("; ");
    Ok(if last == commit {
        stamp
    } else {
        format!("{stamp} (report written by {commit})")
    })
}

/// How `commit.txt` records a sitting that added methods: `<methods> added at <commit>`.
const ADDED_AT: &str = "added at ";

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

/// Runs (or resumes) the whole experiment in `out`; returns every measurement. First the
/// tuning (every learning-rate scale on the tuning seeds, B* chosen by the headline target),
/// then every reporting baseline (the targets, and so where an arm may stop, come from all of
/// them), then the arms.
pub fn run(
    engine: &mut dyn Engine,
    plan: &Plan,
    out: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Results> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let e = &plan.experiment;
    let mut results = Results::default();
    let mut ctx = arm::Ctx {
        engine,
        plan,
        out,
        on_event,
        stop: None,
    };
    let save = |r: &Results| next_files::json::write(&out.join(RESULTS), r);
    if !e.lr_scales.is_empty() {
        for seed in plan.tuning_seeds() {
            ctx.engine.set_seed(seed);
            for scale in plan.scales() {
                results.tuning.push(ctx.baseline(seed, scale)?);
                save(&results)?;
            }
        }
        results.tuned_scale = Some(stats::tuned_scale(plan, &results.tuning));
    }
    let scale = match results.tuned_scale {
        Some(s) if e.at_tuned_lr => s,
        _ => 1.0,
    };
    results.arm_scale = scale;
    for seed in plan.seeds() {
        ctx.engine.set_seed(seed);
        let baseline = ctx.baseline(seed, scale)?;
        if results.analysed.is_none() {
            results.analysed = Some(baseline_dir(out, seed, scale));
        }
        results.baselines.push(baseline);
        if let Some(tuned) = results.tuned_scale.filter(|&s| s != scale) {
            results.tuned.push(ctx.baseline(seed, tuned)?);
        }
        save(&results)?;
    }
    if e.stop_at_target {
        let all: Vec<&Baseline> = results.baselines.iter().collect();
        let levels = stats::Targets::new(&e.targets, &all).levels;
        ctx.stop = levels.iter().map(|l| l.1).reduce(f64::max);
    }
    for b in results.baselines.clone() {
        ctx.engine.set_seed(b.seed);
        for &k in &e.jump_at {
            for name in plan.arms() {
                let arm = ctx.arm(&b, k, &name)?;
                (ctx.on_event)(Event::ArmDone(Box::new(arm.clone())));
                results.arms.push(arm);
                save(&results)?;
            }
        }
    }
    Ok(results)
}
