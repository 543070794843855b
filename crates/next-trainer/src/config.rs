//! The training configuration: typed, with defaults for every key and unknown keys refused.
//! `next-cli` reads the TOML file and the `--set` overrides; this crate only sees the result.

use std::collections::BTreeMap;
use std::path::Path;

use next_model::{DeviceName, Dtype, LoadOptions};
use next_verifiers::python::{self, Style};
use next_verifiers::{Registry, Target};
use serde::{Deserialize, Serialize};

use crate::tasks::Task;

/// Everything `next train` needs. Each field is a table of the TOML file (`[model]`, ...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub lora: LoraSection,
    pub data: DataSection,
    pub rollout: RolloutSection,
    pub algorithm: AlgorithmSection,
    pub optim: OptimSection,
    pub trainer: TrainerSection,
    pub pretrain: PretrainSection,
    pub reward: RewardSection,
}

impl TrainConfig {
    /// Makes every path in the config absolute (relative ones are taken from `cwd`), so that a
    /// run's resolved config means the same files wherever it is read from.
    pub fn absolutize(&mut self, cwd: &Path) {
        for p in [
            &mut self.model.path,
            &mut self.data.train,
            &mut self.data.val,
            &mut self.data.select,
            &mut self.pretrain.out,
            &mut self.reward.python,
        ] {
            if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                *p = cwd.join(p.as_str()).display().to_string();
            }
        }
        self.reward.absolutize(cwd);
    }
}

/// Python reward functions (verl's `compute_score` or TRL's batch form) and other verifiers
/// chosen per `data_source`. The reward file is trusted code: it runs unsandboxed, with your
/// rights, as in verl and TRL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSection {
    /// Judges every row not named in `sources`: `FILE:NAME` of a Python function, or a
    /// verifier's name. Empty: each row's `data_source` picks one of ours.
    #[serde(rename = "fn")]
    pub function: String,
    /// `data_source` → `FILE:NAME` or a verifier's name, for those rows only.
    pub sources: BTreeMap<String, String>,
    /// The functions' calling convention: auto (from the signature), verl or trl.
    pub style: Style,
    /// The interpreter. Empty: `$NEXT_PYTHON`, else the project's `.venv`, else `python3`.
    pub python: String,
    /// Worker processes per function.
    pub workers: usize,
    /// Seconds a call may take per row (a TRL batch call gets this per completion); a call
    /// past it is an `error` verdict.
    pub timeout_s: f64,
}

impl Default for RewardSection {
    fn default() -> Self {
        RewardSection {
            function: String::new(),
            sources: BTreeMap::new(),
            style: Style::Auto,
            python: String::new(),
            workers: 2,
            timeout_s: 10.0,
        }
    }
}

impl RewardSection {
    /// Makes the files of `FILE:NAME` entries absolute (relative ones are taken from `cwd`).
    fn absolutize(&mut self, cwd: &Path) {
        for t in std::iter::once(&mut self.function).chain(self.sources.values_mut()) {
            if let Ok(Target::Python(f)) = t.parse::<Target>() {
                if f.file.is_relative() {
                    *t = f.absolute(cwd).to_string();
                }
            }
        }
    }

    /// `base` (ours, plus any verifier a caller registered) with this section's choices
    /// applied; Python functions are loaded here, so a bad file or name fails at start-up.
    pub fn apply(&self, mut base: Registry) -> crate::Result<Registry> {
        let key =
            |k: &str, e: next_verifiers::Error| crate::Error::Config(format!("[reward] {k}: {e}"));
        let all = match self.function.as_str() {
            "" => None,
            f => Some(f.parse::<Target>().map_err(|e| key("fn", e))?),
        };
        let sources = self
            .sources
            .iter()
            .map(|(s, t)| {
                Ok((
                    s.clone(),
                    t.parse().map_err(|e| key(&format!("sources.{s}"), e))?,
                ))
            })
            .collect::<crate::Result<BTreeMap<String, Target>>>()?;
        if self.workers == 0 || self.timeout_s.is_nan() || self.timeout_s <= 0.0 {
            return Err(crate::Error::Config(
                "[reward] workers and timeout_s must be positive".into(),
            ));
        }
        let opts = python::Options {
            python: next_files::python::interpreter(
                (!self.python.is_empty()).then(|| Path::new(&self.python)),
            ),
            style: self.style,
            workers: self.workers,
            timeout_s: self.timeout_s,
        };
        base.configure(all.as_ref(), &sources, &opts)
            .map_err(|e| crate::Error::Config(format!("[reward] {e}")))?;
        Ok(base)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// HF model directory. Empty: the embedded base, pretrained by `next pretrain` (cached).
    pub path: String,
    /// f32, bf16 or f16.
    pub dtype: Dtype,
    /// cpu, cuda or cuda:N.
    pub device: DeviceName,
    /// Intra-op threads of libtorch (0: libtorch's default).
    pub threads: i32,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: String::new(),
            dtype: Dtype::F32,
            device: DeviceName::Cpu,
            threads: 0,
        }
    }
}

impl ModelSection {
    /// How to load the model: the configured dtype on the configured device (refused when the
    /// machine lacks it).
    pub fn load_options(&self) -> next_model::Result<LoadOptions> {
        Ok(LoadOptions {
            dtype: Some(self.dtype.kind()),
            device: self.device.device()?,
        })
    }

    /// Sets libtorch's intra-op threads when the config names a count.
    pub fn apply_threads(&self) {
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    /// "all-linear" or a list of module names.
    pub target_modules: Vec<String>,
    pub use_rslora: bool,
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: vec!["all-linear".into()],
            use_rslora: false,
        }
    }
}

impl LoraSection {
    /// The layers the adapter targets.
    pub fn targets(&self) -> next_model::TargetModules {
        next_model::TargetModules::from_names(&self.target_modules)
    }

    /// PEFT's `target_modules` for this section: `"all-linear"`, or the list of names.
    pub fn peft_target_modules(&self) -> serde_json::Value {
        match self.targets() {
            next_model::TargetModules::AllLinear => next_model::TargetModules::ALL_LINEAR.into(),
            next_model::TargetModules::List(v) => v.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Training rows: JSONL, or Parquet (`.parquet`, verl's and TRL's datasets as they are).
    /// Empty: generated from `task`.
    pub train: String,
    /// Validation rows (JSONL or Parquet). Empty: generated from `task`.
    pub val: String,
    /// The embedded task when no files are given: add2, add3, add4, countdown3, countdown4.
    pub task: Task,
    /// Rows generated for the training split.
    pub train_size: usize,
    /// Rows generated (or read, at most) for validation.
    pub val_size: usize,
    /// Skip and count malformed rows instead of stopping.
    pub skip_bad_rows: bool,
    /// Longest prompt, in tokens; longer prompts are an error.
    pub max_prompt_len: usize,
    /// Seed of the generated problems (kept apart from `trainer.seed`, so that runs with
    /// different RL seeds are validated on the same problems).
    pub seed: u64,
    /// The selection split (JSONL) that predict-extend scores λ candidates on, kept apart from
    /// the validation split the reports use. Empty: the embedded task's test split, or, with
    /// your own files and none given, the validation file (then the reported accuracy right
    /// after a jump is biased upwards).
    pub select: String,
    /// Problems of the selection split used. 128 by default: `cargo xtask bench jump` found λ
    /// chosen on 128 problems within 0.1 point of validation accuracy of λ chosen on 256, for
    /// half the search's cost.
    pub select_size: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            train: String::new(),
            val: String::new(),
            task: Task::Add { digits: 3 },
            train_size: 20_000,
            val_size: 1_000,
            skip_bad_rows: false,
            max_prompt_len: 512,
            seed: 0,
            select: String::new(),
            select_size: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// Samples per prompt (the GRPO group size).
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Responses are cut after the first of these strings.
    pub stop: Vec<String>,
    /// Samples per prompt for the sampled validation metric (mean@N); 0 disables it.
    pub val_n: usize,
    /// Sequences decoded together at most (rollouts, validation, the λ search): a larger
    /// batch needs more memory. Each batch draws its samples from its own seed, so where a
    /// step samples more sequences than this, changing it changes what is sampled.
    pub max_batch: usize,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            n: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 8,
            stop: vec![],
            val_n: 0,
            max_batch: 512,
        }
    }
}

/// Advantage estimators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvEstimator {
    Grpo,
    DrGrpo,
    Dapo,
    Rloo,
    ReinforcePlusPlusBaseline,
}

/// How per-token losses are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAgg {
    TokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenMean,
    /// Token sum divided by `max_new_tokens` (Dr.GRPO's length-free reduction).
    SeqMeanTokenSumNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlType {
    K1,
    K3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmSection {
    pub adv_estimator: AdvEstimator,
    /// Loss reduction; when unset, the estimator's own default (DAPO: token-mean, Dr.GRPO:
    /// seq-mean-token-sum-norm, others token-mean).
    pub loss_agg_mode: Option<LossAgg>,
    pub clip_ratio_low: f64,
    /// When unset: 0.28 for DAPO (clip-higher), else `clip_ratio_low`.
    pub clip_ratio_high: Option<f64>,
    /// KL penalty to the reference policy (the base model, adapter disabled); 0 disables it.
    pub kl_coef: f64,
    pub kl_type: KlType,
    /// Drop groups whose rewards are all equal (DAPO's dynamic sampling; on for DAPO).
    pub dynamic_sampling: Option<bool>,
    /// DAPO's overlong penalty: responses within this many tokens of `max_new_tokens` lose
    /// reward linearly (0 disables it).
    pub overlong_buffer: usize,
    pub overlong_penalty: f64,
    /// Passes over each batch (more than 1 makes the ratio clipping matter).
    pub ppo_epochs: usize,
}

impl Default for AlgorithmSection {
    fn default() -> Self {
        AlgorithmSection {
            adv_estimator: AdvEstimator::Grpo,
            loss_agg_mode: None,
            clip_ratio_low: 0.2,
            clip_ratio_high: None,
            kl_coef: 0.0,
            kl_type: KlType::K3,
            dynamic_sampling: None,
            overlong_buffer: 0,
            overlong_penalty: 1.0,
            ppo_epochs: 1,
        }
    }
}

impl AlgorithmSection {
    pub fn loss_agg(&self) -> LossAgg {
        self.loss_agg_mode.unwrap_or(match self.adv_estimator {
            AdvEstimator::DrGrpo => LossAgg::SeqMeanTokenSumNorm,
            _ => LossAgg::TokenMean,
        })
    }

    pub fn clip_high(&self) -> f64 {
        self.clip_ratio_high
            .unwrap_or(if self.adv_estimator == AdvEstimator::Dapo {
                0.28
            } else {
                self.clip_ratio_low
            })
    }

    pub fn dynamic(&self) -> bool {
        self.dynamic_sampling
            .unwrap_or(self.adv_estimator == AdvEstimator::Dapo)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub schedule: LrSchedule,
    pub warmup_steps: usize,
    /// Cosine decays to `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip (0 disables it).
    pub grad_clip: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.1,
            grad_clip: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerSection {
    /// RL steps (one optimizer step each).
    pub steps: usize,
    /// Prompts per step; each gets `rollout.n` samples.
    pub prompts_per_step: usize,
    /// Sequences per forward/backward pass (gradient accumulation bounds memory).
    pub micro_batch: usize,
    pub seed: u64,
    /// Checkpoint every this many steps (all kept: the trajectory store reads them).
    pub save_every: usize,
    /// Validate every this many steps (and at step 0 and at the end).
    pub val_every: usize,
    /// Print a line every this many steps.
    pub log_every: usize,
    /// Stop after this step (0: at `steps`); the learning-rate schedule still spans `steps`.
    /// The predict-extend scheduler trains a run in segments this way.
    pub stop_at: usize,
    /// Leave sequences whose advantage is zero out of the update's forward and backward (they
    /// add nothing to the gradient; exact, and off by itself with a KL term or several
    /// passes).
    pub skip_zero_advantage: bool,
    /// Response tokens per chunk of the vocabulary projection in the update (0: about 16M
    /// logits at a time), which bounds its memory.
    pub head_chunk: usize,
    /// Write every rollout's responses (prompt, response, ground truth, score, verdict) to
    /// `<dir>/<step>.jsonl`, as verl's option of this name does; a relative path is taken under
    /// the run directory. Empty: not written.
    pub rollout_data_dir: String,
    /// The same for every validation's responses (`<dir>/<step>.jsonl`, step 0 is the base).
    pub validation_data_dir: String,
}

impl Default for TrainerSection {
    fn default() -> Self {
        TrainerSection {
            steps: 250,
            prompts_per_step: 16,
            micro_batch: 128,
            seed: 0,
            save_every: 10,
            val_every: 10,
            log_every: 10,
            stop_at: 0,
            skip_zero_advantage: true,
            head_chunk: 0,
            rollout_data_dir: String::new(),
            validation_data_dir: String::new(),
        }
    }
}

/// The embedded base model and its pretraining (used when `model.path` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainSection {
    /// Where the base is cached (reused when its config matches).
    pub out: String,
    pub task: Task,
    pub hidden_size: i64,
    pub layers: i64,
    pub heads: i64,
    pub intermediate_size: i64,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// Probability of dropping each carry in the training answers: correct addition becomes
    /// the minority mode, which RL then sharpens.
    pub drop_carry: f64,
    pub train_size: usize,
    pub seed: u64,
    pub threads: i32,
}

impl Default for PretrainSection {
    fn default() -> Self {
        PretrainSection {
            out: "runs/base-add3".into(),
            task: Task::Add { digits: 3 },
            hidden_size: 128,
            layers: 3,
            heads: 4,
            intermediate_size: 352,
            steps: 2250,
            batch: 128,
            lr: 3e-3,
            warmup_steps: 100,
            drop_carry: 0.6,
            train_size: 100_000,
            seed: 0,
            threads: 0,
        }
    }
}
