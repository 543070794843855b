//! The verl engine: verl's `main_ppo` (Ray, FSDP, vLLM) trains each segment with LoRA, launched
//! with Hydra overrides generated from the run's config ([`overrides`]); this engine stops it at
//! the segment's step, exports the LoRA adapter of each of its FSDP checkpoints (verl 0.9 writes
//! none while training; `export.py`, with the true `lora_alpha`) into the layout the scheduler
//! reads, and after a jump starts the next segment from the jumped adapter with the step
//! counter, data cursor, LR scheduler and RNG of the checkpoint it jumped from (fresh AdamW
//! moments: verl's sharded optimizer state cannot take the added rank). Validation and the λ
//! search stay in-process ([`InProcess`]), and rewards come from `next verify --serve`
//! (`reward.py`), so every engine is judged by one verifier implementation.
//!
//! Files of a run directory trained by it, besides the usual ones: `verl/global_step_N/`
//! (verl's own checkpoints), `verl/train.jsonl` (the rows in verl's schema), `verl/start.json`
//! (where a jumped segment starts), `verl/metrics-L.jsonl` (verl's file logger, one per
//! launch), `verl/launch.log`, and the shipped `reward.py` and `next_verify.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::jump::Predicted;
use next_trainer::checkpoint::{self, TrainerState};
use next_trainer::config::{AdvEstimator, KlType, LrSchedule, TrainConfig};
use next_trainer::data::Prompt;
use next_trainer::metrics;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{EngineSection, SchedulerSection};
use crate::{Engine, Error, InProcess, Result, ScoreSet};

pub mod layout;
pub use layout::{complete, Incomplete};

const EXPORT: &str = include_str!("export.py");
const REWARD: &str = include_str!("reward.py");

/// The exit status with which `export.py` refuses a checkpoint.
const REFUSED: i32 = 2;

/// verl's directory inside a segment's run directory.
pub const DIR: &str = "verl";

fn bad(why: String) -> Error {
    Error::Config(why)
}

/// How one launch of `main_ppo` starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Start {
    /// From step 0 with `adapter` (the run's initial adapter).
    Fresh { adapter: PathBuf },
    /// From the segment's own last checkpoint: model, optimizer, LR scheduler, RNG and data
    /// cursor (`adapter` only gives the LoRA its shape).
    Resume { adapter: PathBuf },
    /// After a jump: the step counter, data cursor, LR scheduler and RNG of `from` (a verl
    /// `global_step_K` directory of the segment jumped from), the weights of `adapter` (the
    /// jumped one), fresh AdamW moments.
    Jump { from: PathBuf, adapter: PathBuf },
}

impl Start {
    fn adapter(&self) -> &Path {
        match self {
            Start::Fresh { adapter } | Start::Resume { adapter } | Start::Jump { adapter, .. } => {
                adapter
            }
        }
    }
}

/// What one launch needs beyond the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The segment's run directory.
    pub run: PathBuf,
    /// The HF directory of the base model.
    pub base: PathBuf,
    /// `trainer.total_training_steps`: where verl stops (and saves).
    pub stop_at: usize,
    pub start: Start,
    /// The rank of the adapter this launch trains (r, or r + k after a jump).
    pub rank: i64,
    /// Training rows in `verl/train.jsonl`.
    pub rows: usize,
    /// This launch's metrics file (verl's file logger truncates its file on every launch).
    pub metrics: PathBuf,
}

/// Keys the engine sets itself; `[engine.verl]` may not override them.
const OWNED: &[&str] = &[
    "trainer.total_training_steps",
    "trainer.default_local_dir",
    "trainer.resume_mode",
    "trainer.resume_from_path",
    "trainer.save_freq",
    "trainer.logger",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.model.lora_rank",
    "actor_rollout_ref.model.lora_adapter_path",
    "actor_rollout_ref.actor.checkpoint.load_contents",
    "actor_rollout_ref.actor.checkpoint.save_contents",
    "actor_rollout_ref.actor.checkpoint.save_lora_only",
    "reward.custom_reward_function.path",
    "reward.custom_reward_function.name",
    "data.train_files",
];

/// A Hydra override value: plain when Hydra's grammar takes it as it is, else single-quoted.
fn hydra_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:+@".contains(c));
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A JSON value of `[engine.verl]` as Hydra override text.
fn hydra_json(v: &Value) -> String {
    match v {
        Value::String(s) => hydra_value(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(hydra_json).collect::<Vec<_>>().join(",")
        ),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn path_text(p: &Path) -> String {
    hydra_value(&p.display().to_string())
}

/// The Hydra overrides of one launch, in order: those derived from the config, then
/// `[engine.verl]` (replacing a derived key of the same name; keys the engine owns are
/// refused), then a Ray address.
pub fn overrides(cfg: &TrainConfig, section: &EngineSection, l: &Launch) -> Result<Vec<String>> {
    let (o, r, a, t) = (&cfg.optim, &cfg.rollout, &cfg.algorithm, &cfg.trainer);
    let dir = l.run.join(DIR);
    let per_epoch = (l.rows / t.prompts_per_step.max(1)).max(1);
    let epochs = t.steps.div_ceil(per_epoch) + 1;
    let estimator = match a.adv_estimator {
        AdvEstimator::Grpo | AdvEstimator::DrGrpo => "grpo",
        AdvEstimator::Rloo => "rloo",
        AdvEstimator::ReinforcePlusPlusBaseline => "reinforce_plus_plus_baseline",
        AdvEstimator::Dapo => unreachable!("refused by check"),
    };
    let loss_agg = serde_json::to_value(a.loss_agg()).expect("an enum");
    let targets = match cfg.lora.peft_target_modules() {
        Value::String(s) => hydra_value(&s),
        list => hydra_json(&list),
    };
    let micro = t.micro_batch.max(1).to_string();
    let contents = match l.start {
        Start::Jump { .. } => "[extra]",
        _ => "[model,optimizer,extra]",
    };
    let mut out: Vec<(String, String)> = vec![
        ("algorithm.adv_estimator".into(), estimator.into()),
        (
            "algorithm.norm_adv_by_std_in_grpo".into(),
            (a.adv_estimator != AdvEstimator::DrGrpo).to_string(),
        ),
        ("algorithm.use_kl_in_reward".into(), "false".into()),
        (
            "data.train_files".into(),
            path_text(&dir.join("train.jsonl")),
        ),
        ("data.val_files".into(), path_text(&dir.join("train.jsonl"))),
        ("data.prompt_key".into(), "prompt".into()),
        (
            "data.train_batch_size".into(),
            t.prompts_per_step.to_string(),
        ),
        (
            "data.max_prompt_length".into(),
            cfg.data.max_prompt_len.to_string(),
        ),
        (
            "data.max_response_length".into(),
            r.max_new_tokens.to_string(),
        ),
        ("data.shuffle".into(), "true".into()),
        ("data.seed".into(), t.seed.to_string()),
        ("actor_rollout_ref.model.path".into(), path_text(&l.base)),
        (
            "actor_rollout_ref.model.lora_rank".into(),
            l.rank.to_string(),
        ),
        (
            "actor_rollout_ref.model.lora_alpha".into(),
            cfg.lora.alpha.to_string(),
        ),
        ("actor_rollout_ref.model.target_modules".into(), targets),
        (
            "actor_rollout_ref.model.lora_adapter_path".into(),
            path_text(l.start.adapter()),
        ),
        ("actor_rollout_ref.actor.optim.lr".into(), o.lr.to_string()),
        (
            "actor_rollout_ref.actor.optim.lr_scheduler_type".into(),
            "constant".into(),
        ),
        (
            "actor_rollout_ref.actor.optim.lr_warmup_steps".into(),
            o.warmup_steps.to_string(),
        ),
        (
            "actor_rollout_ref.actor.optim.weight_decay".into(),
            o.weight_decay.to_string(),
        ),
        (
            "actor_rollout_ref.actor.optim.betas".into(),
            format!("[{},{}]", o.beta1, o.beta2),
        ),
        (
            "actor_rollout_ref.actor.optim.clip_grad".into(),
            o.grad_clip.to_string(),
        ),
        (
            "actor_rollout_ref.actor.ppo_mini_batch_size".into(),
            t.prompts_per_step.to_string(),
        ),
        (
            "actor_rollout_ref.actor.ppo_epochs".into(),
            a.ppo_epochs.to_string(),
        ),
        (
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu".into(),
            micro.clone(),
        ),
        (
            "actor_rollout_ref.actor.loss_agg_mode".into(),
            loss_agg.as_str().unwrap_or_default().into(),
        ),
        (
            "actor_rollout_ref.actor.clip_ratio_low".into(),
            a.clip_ratio_low.to_string(),
        ),
        (
            "actor_rollout_ref.actor.clip_ratio_high".into(),
            a.clip_high().to_string(),
        ),
        ("actor_rollout_ref.actor.entropy_coeff".into(), "0".into()),
        (
            "actor_rollout_ref.actor.use_kl_loss".into(),
            (a.kl_coef > 0.0).to_string(),
        ),
        (
            "actor_rollout_ref.actor.kl_loss_coef".into(),
            a.kl_coef.to_string(),
        ),
        (
            "actor_rollout_ref.actor.kl_loss_type".into(),
            match a.kl_type {
                KlType::K1 => "kl",
                KlType::K3 => "low_var_kl",
            }
            .into(),
        ),
        (
            "actor_rollout_ref.actor.checkpoint.save_contents".into(),
            "[model,optimizer,extra]".into(),
        ),
        (
            "actor_rollout_ref.actor.checkpoint.load_contents".into(),
            contents.into(),
        ),
        (
            "+actor_rollout_ref.actor.checkpoint.save_lora_only".into(),
            "true".into(),
        ),
        // One GPU with vLLM unless `[engine.verl]` says otherwise.
        ("actor_rollout_ref.rollout.name".into(), "vllm".into()),
        (
            "actor_rollout_ref.rollout.tensor_model_parallel_size".into(),
            "1".into(),
        ),
        ("trainer.nnodes".into(), "1".into()),
        ("trainer.n_gpus_per_node".into(), "1".into()),
        ("actor_rollout_ref.rollout.n".into(), r.n.to_string()),
        (
            "actor_rollout_ref.rollout.temperature".into(),
            r.temperature.to_string(),
        ),
        (
            "actor_rollout_ref.rollout.top_p".into(),
            r.top_p.to_string(),
        ),
        (
            "actor_rollout_ref.rollout.top_k".into(),
            if r.top_k == 0 {
                "-1".into()
            } else {
                r.top_k.to_string()
            },
        ),
        (
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu".into(),
            micro.clone(),
        ),
        (
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu".into(),
            micro,
        ),
        (
            "reward.custom_reward_function.path".into(),
            path_text(&dir.join("reward.py")),
        ),
        (
            "reward.custom_reward_function.name".into(),
            "compute_score".into(),
        ),
        ("trainer.total_epochs".into(), epochs.to_string()),
        ("trainer.total_training_steps".into(), l.stop_at.to_string()),
        ("trainer.save_freq".into(), t.save_every.to_string()),
        ("trainer.test_freq".into(), "-1".into()),
        ("trainer.val_before_train".into(), "false".into()),
        ("trainer.logger".into(), "[console,file]".into()),
        ("trainer.project_name".into(), "next".into()),
        (
            "trainer.experiment_name".into(),
            hydra_value(
                &l.run
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "run".into()),
            ),
        ),
        ("trainer.default_local_dir".into(), path_text(&dir)),
    ];
    match &l.start {
        Start::Fresh { .. } => out.push(("trainer.resume_mode".into(), "disable".into())),
        Start::Resume { .. } => out.push(("trainer.resume_mode".into(), "auto".into())),
        Start::Jump { from, .. } => {
            out.push(("trainer.resume_mode".into(), "resume_path".into()));
            out.push(("trainer.resume_from_path".into(), path_text(from)));
        }
    }
    // verl's file logger writes where this variable says; the reward workers and the trainer
    // run in Ray actors, which get it through the runtime environment.
    out.push((
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH".into(),
        path_text(&l.metrics),
    ));
    for (key, value) in &section.verl {
        let bare = key.trim_start_matches('+');
        if OWNED.contains(&bare) {
            return Err(bad(format!(
                "engine.verl.\"{key}\": the verl engine sets {bare} itself (from the run's config and segment)"
            )));
        }
        let value = hydra_json(value);
        match out
            .iter_mut()
            .find(|(k, _)| k.trim_start_matches('+') == bare)
        {
            Some(slot) => slot.1 = value,
            None => out.push((key.clone(), value)),
        }
    }
    if !section.ray_address.is_empty() {
        out.push((
            "+ray_kwargs.ray_init.address".into(),
            hydra_value(&section.ray_address),
        ));
    }
    Ok(out.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Refuses what verl would silently train differently, naming the key.
fn check(cfg: &TrainConfig, scheduler: &SchedulerSection) -> Result<()> {
    let a = &cfg.algorithm;
    let refuse = |why: &str| Err(bad(format!("{why} (engine.kind = \"verl\")")));
    if scheduler.keep_moments {
        return refuse(
            "scheduler.keep_moments = true is not supported: verl's optimizer state is sharded per FSDP rank for the old rank's parameters, so a jumped segment starts with fresh AdamW moments; set scheduler.keep_moments = false",
        );
    }
    if a.adv_estimator == AdvEstimator::Dapo || a.dynamic() {
        return refuse("algorithm.adv_estimator = dapo / algorithm.dynamic_sampling need verl's DAPO recipe, which main_ppo does not run");
    }
    if a.overlong_buffer > 0 {
        return refuse("algorithm.overlong_buffer is not supported");
    }
    if cfg.optim.schedule == LrSchedule::Cosine {
        return refuse("optim.schedule = cosine is not supported: verl sizes its schedule by trainer.total_training_steps, which is the segment's stop step, not the run's length");
    }
    if !cfg.rollout.stop.is_empty() {
        return refuse("rollout.stop is not supported (responses end at EOS or max_new_tokens)");
    }
    if cfg.rollout.val_n > 0 {
        return refuse("rollout.val_n is not supported: validation is greedy, in-process");
    }
    if !cfg.reward.sources.is_empty() {
        return refuse("reward.sources is not supported yet: give one reward.fn for every row");
    }
    let t = &cfg.trainer;
    if t.save_every == 0 || !t.val_every.is_multiple_of(t.save_every) {
        return Err(bad(format!(
            "with engine.kind = \"verl\", trainer.val_every ({}) must be a multiple of trainer.save_every ({}): validation scores saved checkpoints",
            t.val_every, t.save_every
        )));
    }
    Ok(())
}

/// The jump a segment was started from (`verl/start.json`, if any), and the adapter its
/// training starts from: the jumped one, else the run's initial adapter.
fn segment_start(run: &Path) -> Result<(Option<Start>, PathBuf)> {
    let jump: Option<Start> = next_files::json::read_opt(&run.join(DIR).join("start.json"))?;
    let adapter = match &jump {
        Some(s) => s.adapter().to_path_buf(),
        None => checkpoint::initial_adapter(run),
    };
    Ok((jump, adapter))
}

/// The rank `r` of a PEFT adapter directory.
fn adapter_rank(adapter: &Path) -> Result<i64> {
    let path = adapter.join(next_files::peft::CONFIG);
    let v: Value = next_files::json::read(&path)?;
    v["r"]
        .as_i64()
        .filter(|&r| r > 0)
        .ok_or_else(|| bad(format!("{}: no positive integer `r`", path.display())))
}

/// Exports the LoRA adapter of the verl checkpoint `actor` (its `global_step_N/actor`) to `out`
/// as a PEFT adapter with `config` (the `adapter_config.json` of the adapter its segment started
/// from, which has the true alpha), running the shipped `export.py` with `python` (verl's, or
/// any with torch and safetensors); `log` gets its output.
pub fn export_adapter(
    python: &Path,
    actor: &Path,
    config: &Path,
    out: &Path,
    log: &Path,
) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("next-verl-export-")
        .tempdir()
        .map_err(crate::io(&std::env::temp_dir()))?;
    let script = scratch.path().join("export.py");
    next_files::atomic::write(&script, EXPORT.as_bytes())?;
    let spec_path = scratch.path().join("export.json");
    next_files::json::write(
        &spec_path,
        &json!({"actor": actor, "out": out, "config": config}),
    )?;
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(&spec_path);
    let what = format!("the adapter exporter with {}", python.display());
    let header = format!("export {}", actor.display());
    let status = crate::child::run(cmd, log, &header, &what, || {})?;
    if status.success() {
        return Ok(());
    }
    let why = if status.code() == Some(REFUSED) {
        "refused"
    } else {
        "failed"
    };
    Err(bad(format!(
        "exporting the adapter of {} {why} ({status}); the end of {}:\n{}",
        actor.display(),
        log.display(),
        crate::child::log_tail(log)
    )))
}

/// verl's trainer behind the [`Engine`] seam.
pub struct Verl<'a> {
    inner: InProcess<'a>,
    section: EngineSection,
    /// The `next` binary the reward function scores with (`next verify --serve`).
    next: PathBuf,
}

impl std::fmt::Debug for Verl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verl").field("next", &self.next).finish()
    }
}

impl<'a> Verl<'a> {
    /// The engine for `inner`'s config; refuses settings verl cannot reproduce, naming the key.
    pub fn new(
        inner: InProcess<'a>,
        section: EngineSection,
        scheduler: &SchedulerSection,
        next: PathBuf,
    ) -> Result<Self> {
        check(&inner.cfg, scheduler)?;
        Ok(Verl {
            inner,
            section,
            next,
        })
    }

    fn python(&self) -> PathBuf {
        let explicit = (!self.section.python.is_empty()).then(|| Path::new(&self.section.python));
        next_files::python::verl_interpreter(explicit)
    }

    /// Writes the rows in verl's schema (chat prompts; the ground truth as JSON text, which
    /// `reward.py` decodes) and the shipped scripts into `run/verl`; returns the row count.
    fn prepare(&self, run: &Path) -> Result<usize> {
        let dir = run.join(DIR);
        let (rows, _, _) = next_trainer::data::load_splits(&self.inner.cfg.data)?;
        let mut text = String::new();
        for (i, r) in rows.iter().enumerate() {
            let Prompt::Chat(messages) = &r.prompt else {
                return Err(bad(format!(
                    "training row {i} has a text prompt: verl applies the model's chat template to every prompt, so engine.kind = \"verl\" needs chat prompts (a list of messages)"
                )));
            };
            let mut extra = match &r.extra_info {
                Value::Object(m) => m.clone(),
                _ => serde_json::Map::new(),
            };
            extra.insert("index".into(), i.into());
            let row = json!({
                "data_source": r.data_source,
                "prompt": messages,
                "reward_model": {"style": "rule", "ground_truth": r.ground_truth.to_string()},
                "extra_info": extra,
            });
            text.push_str(&row.to_string());
            text.push('\n');
        }
        next_files::atomic::write(&dir.join("train.jsonl"), text.as_bytes())?;
        next_files::atomic::write(&dir.join("reward.py"), REWARD.as_bytes())?;
        crate::write_verify_client(&dir)?;
        let settings = json!({
            "next": self.next,
            "verify_args": crate::external::verify_args(&self.inner.cfg)?,
            "log": dir.join("verify.log"),
        });
        next_files::json::write(&dir.join("reward.json"), &settings)?;
        Ok(rows.len())
    }

    /// How the next launch of `run` starts: its own last verl checkpoint, else the jump it was
    /// started from, else the run's initial adapter (written here first).
    fn start(&mut self, run: &Path) -> Result<Start> {
        let dir = run.join(DIR);
        let (from_jump, adapter) = segment_start(run)?;
        if from_jump.is_none() && !adapter.is_dir() {
            next_trainer::train::save_initial_adapter(&self.inner.cfg, &self.inner.base, run)?;
        }
        Ok(if layout::latest(&dir)?.is_some() {
            Start::Resume { adapter }
        } else {
            from_jump.unwrap_or(Start::Fresh { adapter })
        })
    }

    /// Exports every complete verl checkpoint of `run` up to `until` that the scheduler's
    /// layout lacks, in step order.
    fn export(&self, run: &Path, until: usize) -> Result<()> {
        let dir = run.join(DIR);
        let config = segment_start(run)?.1.join(next_files::peft::CONFIG);
        let t = &self.inner.cfg.trainer;
        let rows = std::fs::read_to_string(dir.join("train.jsonl"))
            .map_err(crate::io(&dir))?
            .lines()
            .count()
            .max(1);
        for step in layout::steps(&dir)? {
            if step > until || checkpoint::state_exists(run, step) {
                continue;
            }
            let actor = complete(&dir, step).map_err(|e| bad(e.to_string()))?;
            let scratch = tempfile::Builder::new()
                .prefix("next-verl-export-")
                .tempdir()
                .map_err(crate::io(&std::env::temp_dir()))?;
            let out = scratch.path().join("adapter");
            export_adapter(
                &self.python(),
                &actor,
                &config,
                &out,
                &dir.join("launch.log"),
            )?;
            let seen = step * t.prompts_per_step;
            let state = TrainerState {
                step,
                seed: t.seed,
                data_epoch: seen / rows,
                data_index: seen % rows,
            };
            checkpoint::save_adapter_files(run, &out, &state)?;
        }
        Ok(())
    }

    /// Appends verl's step rows (every launch's file, later launches winning) to the run's
    /// `metrics.jsonl`, up to `until`.
    fn collect_metrics(&self, run: &Path, until: usize) -> Result<()> {
        let rows = layout::metrics_rows(&run.join(DIR), until)?;
        let values = rows.into_iter().map(|r| (r.step, r.data)).collect();
        metrics::merge(run, values)?;
        Ok(())
    }

    /// Runs `main_ppo` once, until `stop_at`.
    fn launch(&mut self, run: &Path, stop_at: usize) -> Result<()> {
        let rows = self.prepare(run)?;
        let dir = run.join(DIR);
        let start = self.start(run)?;
        let rank = adapter_rank(start.adapter())?;
        let launch = Launch {
            run: run.to_path_buf(),
            base: self.inner.base.clone(),
            stop_at,
            start,
            rank,
            rows,
            metrics: layout::next_metrics_file(&dir)?,
        };
        let args = overrides(&self.inner.cfg, &self.section, &launch)?;
        let python = self.python();
        let mut cmd = match self.section.launcher.split_first() {
            Some((launcher, rest)) => {
                let mut c = Command::new(launcher);
                c.args(rest).arg(&python);
                c
            }
            None => Command::new(&python),
        };
        cmd.args(["-m", "verl.trainer.main_ppo"])
            .args(&args)
            .env("VERL_FILE_LOGGER_PATH", &launch.metrics)
            .current_dir(&dir);
        let log = dir.join("launch.log");
        next_files::atomic::write(&dir.join("launch.args"), args.join("\n").as_bytes())?;
        let what = format!(
            "verl with {} (set engine.python, or make verl's environment with `cargo xtask setup --with verl`)",
            python.display()
        );
        let from = checkpoint::latest(run).ok().flatten().unwrap_or(0);
        let mut reported = from;
        let on_train = &mut self.inner.on_train;
        let file = launch.metrics.clone();
        let status = crate::child::run(
            cmd,
            &log,
            &format!("main_ppo to step {stop_at}"),
            &what,
            || {
                let rows = metrics::read_file(&file).unwrap_or_default();
                reported = crate::external::report_rows(on_train, run, rows, reported);
            },
        )?;
        if !status.success() {
            return Err(bad(format!(
                "verl's main_ppo failed ({status}) training {} to step {stop_at}; the end of {}:\n{}",
                run.display(),
                log.display(),
                crate::child::log_tail(&log)
            )));
        }
        Ok(())
    }

    /// Scores the validations `run` is due up to `until` that it has not recorded yet.
    fn validate(&mut self, run: &Path, until: usize) -> Result<()> {
        crate::external::validate_saved(&mut self.inner, run, until, "verl run")
    }
}

impl Engine for Verl<'_> {
    fn train(&mut self, run: &Path, step: usize) -> Result<()> {
        crate::external::begin_segment(&mut self.inner, run, step)?;
        let dir = run.join(DIR);
        if layout::latest(&dir)?.is_none_or(|s| s < step) {
            self.launch(run, step)?;
        }
        match layout::latest(&dir)? {
            Some(s) if s >= step => {}
            other => {
                return Err(bad(format!(
                    "verl exited without a checkpoint at step {step} in {} (its latest: {other:?}); see {}",
                    dir.display(),
                    dir.join("launch.log").display()
                )))
            }
        }
        self.export(run, step)?;
        self.collect_metrics(run, step)?;
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
        if keep_moments {
            return Err(bad(
                "the verl engine starts a jumped segment with fresh AdamW moments: set scheduler.keep_moments = false".into(),
            ));
        }
        let verl_from = complete(&from.join(DIR), step)
            .map_err(|e| bad(e.to_string()))?
            .parent()
            .expect("global_step_N/actor")
            .to_path_buf();
        // The jumped adapter is kept inside the segment, which verl reads it from at every
        // launch until the segment has checkpoints of its own.
        let kept = run.join(DIR).join("start_adapter");
        next_files::atomic::copy_files(adapter, &kept)?;
        let start = Start::Jump {
            from: verl_from,
            adapter: kept.clone(),
        };
        next_files::json::write(&run.join(DIR).join("start.json"), &start)?;
        let state = checkpoint::state(from, step)?;
        Ok(checkpoint::save_adapter_files(run, &kept, &state)?)
    }

    fn set_seed(&mut self, seed: u64) {
        self.inner.set_seed(seed);
    }

    fn set_lr_scale(&mut self, scale: f64) {
        self.inner.set_lr_scale(scale);
    }
}
