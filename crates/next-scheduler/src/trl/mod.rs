//! The TRL engine: TRL's `GRPOTrainer` with a PEFT LoRA adapter trains each segment in a Python
//! driver shipped inside this crate (`driver.py`), which mirrors its checkpoints into the
//! layout the scheduler reads; validation and the λ search stay in-process ([`InProcess`]'s
//! scorers on the same base and adapters), and rewards come from `next verify`, so every engine
//! is judged by one verifier implementation.
//!
//! Files of a run directory trained by it, besides the usual ones: `trl/checkpoint-N/` (TRL's
//! own checkpoints: adapter, optimizer, scheduler, RNG, trainer state), `trl/train.jsonl` (the
//! rows it trains on), `trl/{train,prepare}.json` (the driver's inputs) and `trl/driver.log`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::jump::Predicted;
use next_trainer::checkpoint;
use next_trainer::config::{AdvEstimator, KlType, LossAgg, LrSchedule, TrainConfig};
use next_trainer::metrics;
use serde_json::{json, Value};

use crate::config::EngineSection;
use crate::{Engine, Error, InProcess, Result, ScoreSet};

/// The driver script, written into each run directory it trains.
const DRIVER: &str = include_str!("driver.py");

/// The exit status with which the driver refuses its input (the message names the file or
/// key); any other failure is a crash.
const REFUSED: i32 = 2;

/// TRL's trainer behind the [`Engine`] seam.
pub struct Trl<'a> {
    inner: InProcess<'a>,
    section: EngineSection,
    /// The `next` binary the driver scores rewards with (`next verify`).
    next: PathBuf,
}

impl std::fmt::Debug for Trl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trl").field("next", &self.next).finish()
    }
}

fn bad(why: String) -> Error {
    Error::Config(why)
}

impl<'a> Trl<'a> {
    /// The engine for `inner`'s config; refuses settings TRL's GRPO cannot reproduce, naming
    /// the key.
    pub fn new(inner: InProcess<'a>, section: EngineSection, next: PathBuf) -> Result<Self> {
        check(&inner.cfg)?;
        Ok(Trl {
            inner,
            section,
            next,
        })
    }

    fn python(&self) -> PathBuf {
        let explicit = (!self.section.python.is_empty()).then(|| Path::new(&self.section.python));
        next_files::python::interpreter(explicit)
    }

    /// The training rows as JSONL under the run (the embedded task's are generated here), and
    /// how many there are.
    fn train_rows(&self, dir: &Path) -> Result<(PathBuf, usize)> {
        let (rows, _, _) = next_trainer::data::load_splits(&self.inner.cfg.data)?;
        let mut text = String::new();
        for r in &rows {
            text.push_str(&serde_json::to_string(r).expect("rows serialize"));
            text.push('\n');
        }
        let path = dir.join("train.jsonl");
        next_files::atomic::write(&path, text.as_bytes())?;
        Ok((path, rows.len()))
    }

    /// The driver's input for training `run` until `stop_at`.
    fn train_spec(&self, run: &Path, stop_at: usize) -> Result<Value> {
        let cfg = &self.inner.cfg;
        let dir = run.join("trl");
        let (train, rows) = self.train_rows(&dir)?;
        let (o, r, a, t) = (&cfg.optim, &cfg.rollout, &cfg.algorithm, &cfg.trainer);
        let mut extra = self.section.trl.clone();
        let (schedule, kwargs) = match o.schedule {
            LrSchedule::Constant => ("constant_with_warmup", json!({})),
            LrSchedule::Cosine => ("cosine_with_min_lr", json!({"min_lr_rate": o.min_lr_ratio})),
        };
        extra.entry("lr_scheduler_kwargs").or_insert(kwargs);
        let (scale_rewards, loss_type) = trl_loss(cfg)?;
        extra.entry("scale_rewards").or_insert(scale_rewards.into());
        extra.entry("loss_type").or_insert(loss_type.into());
        extra.entry("adam_beta1").or_insert(o.beta1.into());
        extra.entry("adam_beta2").or_insert(o.beta2.into());
        extra.entry("adam_epsilon").or_insert(o.eps.into());
        if let Some(hi) = a.clip_ratio_high {
            extra.entry("epsilon_high").or_insert(hi.into());
        }
        Ok(json!({
            "run": run,
            "model": self.inner.base,
            "next": self.next,
            "verify_args": crate::external::verify_args(cfg)?,
            "train": train,
            "rows": rows,
            "lora": {
                "r": cfg.lora.r,
                "alpha": cfg.lora.alpha,
                "dropout": cfg.lora.dropout,
                "target_modules": cfg.lora.peft_target_modules(),
                "use_rslora": cfg.lora.use_rslora,
            },
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "grad_clip": o.grad_clip,
            "schedule": schedule,
            "warmup_steps": o.warmup_steps,
            "prompts_per_step": t.prompts_per_step,
            "n": r.n,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "top_k": r.top_k,
            "max_new_tokens": r.max_new_tokens,
            "kl_coef": a.kl_coef,
            "clip_ratio": a.clip_ratio_low,
            "ppo_epochs": a.ppo_epochs,
            "steps": t.steps,
            "stop_at": stop_at,
            "save_every": t.save_every,
            "seed": t.seed,
            "threads": cfg.model.threads,
            "extra": extra,
        }))
    }

    /// Runs the driver's `verb` with `spec`; its output goes to `trl/driver.log`.
    fn call(&mut self, run: &Path, verb: &str, spec: &Value) -> Result<()> {
        let dir = run.join("trl");
        std::fs::create_dir_all(&dir).map_err(crate::io(&dir))?;
        let script = dir.join("driver.py");
        next_files::atomic::write(&script, DRIVER.as_bytes())?;
        crate::write_verify_client(&dir)?;
        let spec_path = dir.join(format!("{verb}.json"));
        next_files::json::write(&spec_path, spec)?;
        let log_path = dir.join("driver.log");
        let python = self.python();
        let mut cmd = match (verb, self.section.launcher.split_first()) {
            ("train", Some((launcher, args))) => {
                let mut c = Command::new(launcher);
                c.args(args);
                c
            }
            _ => Command::new(&python),
        };
        cmd.arg(&script).arg(verb).arg(&spec_path);
        let what = format!(
            "the TRL driver with {} (set engine.python, or install the project's Python with `cargo xtask setup`)",
            python.display()
        );
        // The driver appends a metrics row per step: report them as the trainer's events, so
        // progress bars move as they do with the in-process trainer.
        let mut reported = checkpoint::latest(run).ok().flatten().unwrap_or(0);
        let header = format!("{verb} {}", spec_path.display());
        let status = crate::child::run(cmd, &log_path, &header, &what, || {
            reported = self.report_steps(run, reported)
        })?;
        if status.success() {
            return Ok(());
        }
        let tail = crate::child::log_tail(&log_path);
        let what = if status.code() == Some(REFUSED) {
            "refused its input"
        } else {
            "failed"
        };
        Err(bad(format!(
            "the TRL driver ({verb}) {what} ({status}) in {}; the end of {}:\n{tail}",
            run.display(),
            log_path.display()
        )))
    }

    /// Reports the driver's new metrics rows of `run` (after step `after`) as trainer events;
    /// returns the last step reported.
    fn report_steps(&mut self, run: &Path, after: usize) -> usize {
        let rows = metrics::read(run).unwrap_or_default();
        crate::external::report_rows(&mut self.inner.on_train, run, rows, after)
    }

    fn validate(&mut self, run: &Path, until: usize) -> Result<()> {
        crate::external::validate_saved(&mut self.inner, run, until, "TRL driver")
    }
}

/// The `scale_rewards` and `loss_type` of TRL's GRPO that compute this config's loss; other
/// configs are refused with the key at fault.
fn trl_loss(cfg: &TrainConfig) -> Result<(&'static str, &'static str)> {
    let a = &cfg.algorithm;
    let scale = match a.adv_estimator {
        AdvEstimator::Grpo => "group",
        AdvEstimator::DrGrpo => "none",
        other => {
            return Err(bad(format!(
                "algorithm.adv_estimator = {other:?} has no TRL GRPOTrainer equivalent: use grpo or dr_grpo with engine.kind = \"trl\""
            )))
        }
    };
    let loss =
        match a.loss_agg() {
            LossAgg::TokenMean => "dapo",
            LossAgg::SeqMeanTokenMean => "grpo",
            LossAgg::SeqMeanTokenSumNorm => "dr_grpo",
            LossAgg::SeqMeanTokenSum => return Err(bad(
                "algorithm.loss_agg_mode = seq-mean-token-sum has no TRL GRPOTrainer equivalent"
                    .into(),
            )),
        };
    Ok((scale, loss))
}

/// Refuses what the driver would silently train differently.
fn check(cfg: &TrainConfig) -> Result<()> {
    let a = &cfg.algorithm;
    trl_loss(cfg)?;
    if a.dynamic() {
        return Err(bad(
            "algorithm.dynamic_sampling is not supported by engine.kind = \"trl\"".into(),
        ));
    }
    if a.overlong_buffer > 0 {
        return Err(bad(
            "algorithm.overlong_buffer is not supported by engine.kind = \"trl\"".into(),
        ));
    }
    if a.kl_coef > 0.0 && a.kl_type != KlType::K3 {
        return Err(bad(
            "algorithm.kl_type must be k3 with engine.kind = \"trl\" (TRL's GRPO estimates the KL with k3)".into(),
        ));
    }
    // TRL's num_iterations reuses one generation for that many optimizer *steps*, each counted
    // as a step; here (and in verl) ppo_epochs are passes within one step. A run of N steps
    // would see N / ppo_epochs batches under TRL.
    if a.ppo_epochs > 1 {
        return Err(bad(format!(
            "algorithm.ppo_epochs = {} is not supported by engine.kind = \"trl\": TRL's num_iterations counts each pass as a step of its own",
            a.ppo_epochs
        )));
    }
    if !cfg.rollout.stop.is_empty() {
        return Err(bad(
            "rollout.stop is not supported by engine.kind = \"trl\" (responses end at EOS or max_new_tokens)".into(),
        ));
    }
    if cfg.rollout.val_n > 0 {
        return Err(bad(
            "rollout.val_n is not supported by engine.kind = \"trl\": its validation is greedy"
                .into(),
        ));
    }
    if cfg.trainer.save_every == 0 || !cfg.trainer.val_every.is_multiple_of(cfg.trainer.save_every)
    {
        return Err(bad(format!(
            "with engine.kind = \"trl\", trainer.val_every ({}) must be a multiple of trainer.save_every ({}): validation scores saved checkpoints",
            cfg.trainer.val_every, cfg.trainer.save_every
        )));
    }
    Ok(())
}

impl Engine for Trl<'_> {
    fn train(&mut self, run: &Path, step: usize) -> Result<()> {
        let from = crate::external::begin_segment(&mut self.inner, run, step)?;
        if from < step {
            let spec = self.train_spec(run, step)?;
            self.call(run, "train", &spec)?;
        }
        match checkpoint::latest(run)? {
            Some(s) if s == step => {}
            other => {
                return Err(bad(format!(
                    "the TRL driver exited without a checkpoint at step {step} in {} (last: {other:?}); see {}",
                    run.display(),
                    run.join("trl/driver.log").display()
                )))
            }
        }
        self.validate(run, step)
    }

    fn score(&mut self, adapter: &Path, set: ScoreSet) -> Result<(f64, u64)> {
        self.inner.score(adapter, set)
    }

    fn score_jumps(
        &mut self,
        adapter: &Path,
        predicted: &Predicted,
        rank: usize,
        lambdas: &[f64],
    ) -> Result<Vec<(f64, u64)>> {
        self.inner.score_jumps(adapter, predicted, rank, lambdas)
    }

    fn start_from(
        &mut self,
        run: &Path,
        from: &Path,
        step: usize,
        adapter: &Path,
        keep_moments: bool,
    ) -> Result<()> {
        let spec = json!({
            "model": self.inner.base,
            "from": from.join(format!("trl/checkpoint-{step}")),
            "adapter": adapter,
            "out": run.join(format!("trl/checkpoint-{step}")),
            "moments": if keep_moments { "keep" } else { "fresh" },
        });
        self.call(run, "prepare", &spec)?;
        // The scheduler's view of the new segment: the jumped adapter at `step`.
        let state = checkpoint::state(from, step)?;
        Ok(checkpoint::save_adapter_files(run, adapter, &state)?)
    }

    fn set_seed(&mut self, seed: u64) {
        self.inner.set_seed(seed);
    }

    fn set_lr_scale(&mut self, scale: f64) {
        self.inner.set_lr_scale(scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` of the default config changed by `edit`: Ok, or the error's text.
    fn check_with(edit: impl Fn(&mut TrainConfig)) -> std::result::Result<(), String> {
        let mut cfg = TrainConfig::default();
        edit(&mut cfg);
        check(&cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_trl_cannot_reproduce_are_refused_by_key() {
        type Edit = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.algorithm.adv_estimator = AdvEstimator::Rloo),
                "algorithm.adv_estimator",
            ),
            (
                Box::new(|c| c.algorithm.overlong_buffer = 4),
                "algorithm.overlong_buffer",
            ),
            (
                Box::new(|c| {
                    c.algorithm.kl_coef = 0.1;
                    c.algorithm.kl_type = KlType::K1;
                }),
                "algorithm.kl_type",
            ),
            (
                Box::new(|c| c.rollout.stop = vec!["\n".into()]),
                "rollout.stop",
            ),
            (Box::new(|c| c.rollout.val_n = 4), "rollout.val_n"),
            (
                Box::new(|c| c.algorithm.ppo_epochs = 2),
                "algorithm.ppo_epochs",
            ),
            (
                Box::new(|c| (c.trainer.save_every, c.trainer.val_every) = (4, 10)),
                "trainer.val_every (10) must be a multiple of trainer.save_every (4)",
            ),
        ];
        for (edit, key) in cases {
            let err = check_with(edit).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
        assert_eq!(check_with(|_| {}), Ok(()));
        assert_eq!(
            check_with(|c| c.algorithm.adv_estimator = AdvEstimator::DrGrpo),
            Ok(())
        );
    }
}
