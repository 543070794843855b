//! The `[scheduler]` table of `next run` and `next experiment`: how often to jump, with which
//! predictor, how far ahead, and how λ is chosen. Typed, so a bad value is refused when the
//! config is read, with the key named.

use next_predictor::factor::FactorKind;
use next_predictor::search::Search;
use next_predictor::Method;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How λ is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SearchKind {
    /// Every value of `grid`, and λ = 0.
    Grid,
    /// Golden-section search in [0, `lambda_max`] with `evals` evaluations, and λ = 0.
    Golden,
    /// No search: `lambda` as it is.
    None,
}

/// The `[scheduler]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Steps trained between jumps.
    pub segment_steps: usize,
    /// Jumps (predict-extend rounds); the last segment trains to `trainer.steps`.
    pub rounds: usize,
    /// How to jump: a predictor of the merged rank-1 trajectory or a factor-space method.
    /// `two-point-factor` by default: the study's best single jump at both conservative
    /// learning rates (README, "When does predict-extend pay off?").
    pub predictor: Method,
    /// Steps each jump predicts ahead (also the store's target gap); a multiple of
    /// `trainer.save_every`.
    pub horizon: u64,
    pub search: SearchKind,
    pub grid: Vec<f64>,
    pub lambda: f64,
    pub lambda_max: f64,
    pub evals: usize,
    /// Rank-1 terms per jump (the adapter grows by this much each round).
    pub rank: usize,
    /// Latest checkpoints the linear fits use (0: all).
    pub window: usize,
    /// Continue after a jump with the AdamW moments of the checkpoint jumped from (the
    /// factors the jump adds start at zero); false restarts them (an ablation: the restart
    /// alone costs more steps than a jump gains at conservative learning rates).
    pub keep_moments: bool,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            segment_steps: 100,
            rounds: 1,
            predictor: Method::Factor(FactorKind::TwoPointFactor),
            horizon: 50,
            search: SearchKind::Grid,
            grid: (1..=8).map(|i| i as f64 * 0.5).collect(),
            lambda: 1.0,
            lambda_max: 4.0,
            evals: 6,
            rank: 1,
            window: 0,
            keep_moments: true,
        }
    }
}

impl SchedulerSection {
    /// The λ search the config asks for (None: use `lambda` as is).
    pub fn search(&self) -> Result<Option<Search>> {
        Ok(match self.search {
            SearchKind::Grid if self.grid.is_empty() => {
                return Err(Error::Config("scheduler.grid is empty".into()))
            }
            SearchKind::Grid => Some(Search::Grid(self.grid.clone())),
            SearchKind::Golden => Some(Search::Golden {
                lo: 0.0,
                hi: self.lambda_max,
                evals: self.evals,
            }),
            SearchKind::None => None,
        })
    }

    /// The linear fits' window (None: every checkpoint).
    pub fn window(&self) -> Option<usize> {
        (self.window > 0).then_some(self.window)
    }

    /// Checks the settings that do not depend on the run's length: the horizon against the
    /// checkpoint interval, and the search.
    pub fn check(&self, save_every: usize) -> Result<()> {
        if self.horizon == 0 || !self.horizon.is_multiple_of(save_every.max(1) as u64) {
            return Err(Error::Config(format!(
                "scheduler.horizon ({}) must be a positive multiple of trainer.save_every ({save_every})",
                self.horizon
            )));
        }
        if self.rank == 0 {
            return Err(Error::Config("scheduler.rank must be at least 1".into()));
        }
        self.search().map(drop)
    }
}

/// Which trainer runs the RL steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// This project's libtorch trainer, in this process.
    #[default]
    Inproc,
    /// TRL's GRPOTrainer with PEFT LoRA, in a Python driver shipped inside `next`.
    Trl,
    /// verl's `main_ppo` (Ray, FSDP, vLLM) with LoRA, launched with generated Hydra overrides.
    Verl,
}

/// The `[engine]` section: which trainer, and its own settings. Scoring (validation and the λ
/// search) stays in-process whatever trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub kind: EngineKind,
    /// The Python with the engine's trainer. Empty: for TRL `$NEXT_PYTHON`, else the
    /// project's `.venv`; for verl `$NEXT_VERL_PYTHON`, else `.venv-verl` (`cargo xtask setup
    /// --with verl`); else `python3`.
    pub python: String,
    /// A launcher the trainer runs under: for TRL e.g. `["accelerate", "launch",
    /// "--num_processes", "8"]` (given the driver script and its arguments); for verl a prefix
    /// of its Python (e.g. `["srun", "--ntasks=1"]`). Empty: the Python alone.
    pub launcher: Vec<String>,
    /// `GRPOConfig` fields set as they are, over those the engine derives from the config (e.g.
    /// `use_vllm = true`, `bf16 = true`, `gradient_checkpointing = true`).
    pub trl: serde_json::Map<String, serde_json::Value>,
    /// Hydra overrides of verl's `main_ppo`, applied after those the engine derives from the
    /// config (e.g. `"actor_rollout_ref.rollout.name" = "vllm"`, `"trainer.n_gpus_per_node" =
    /// 8`, `"+actor_rollout_ref.model.use_shm" = true`); keys the engine owns (steps, paths,
    /// resume, LoRA rank, checkpoint contents, reward function) are refused.
    pub verl: serde_json::Map<String, serde_json::Value>,
    /// The address of a running Ray cluster for verl to join (empty: verl starts a local one).
    pub ray_address: String,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            kind: EngineKind::Inproc,
            python: String::new(),
            launcher: vec![],
            trl: serde_json::Map::new(),
            verl: serde_json::Map::new(),
            ray_address: String::new(),
        }
    }
}
