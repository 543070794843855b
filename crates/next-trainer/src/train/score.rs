//! Scoring adapters by greedy validation with the task's verifiers: the base model, the
//! validation prompts and the verifiers loaded once, then any number of adapters — and jump
//! candidates that differ only in λ decoded together, each row with its own coefficient.

use std::path::Path;

use next_model::{Jump, Model, Tokenizer};
use next_rollout::{Prompted, Sampler, SamplingConfig, Validation};
use next_verifiers::{Pool, Registry};

use super::sampling;
use crate::config::TrainConfig;
use crate::{data, Result};

/// Which problems a [`Scorer`] scores on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreSet {
    /// The validation split the reports use.
    Validation,
    /// The selection split λ is chosen on (`data.select`).
    Selection,
}

/// One split of a config and the base model, ready to score adapters.
pub struct Scorer {
    model: Model,
    tok: Tokenizer,
    val: Vec<Prompted>,
    registry: Registry,
    pool: Pool,
    greedy: SamplingConfig,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("problems", &self.val.len())
            .finish()
    }
}

impl Scorer {
    /// Loads the base in `base_dir` and `cfg`'s split `set`, judged by `registry`
    /// ([`super::verifiers`] for the config's own).
    pub fn new(
        cfg: &TrainConfig,
        base_dir: &Path,
        set: ScoreSet,
        registry: Registry,
    ) -> Result<Self> {
        cfg.model.apply_threads();
        let tok = Tokenizer::load(base_dir)?;
        let (val_rows, what) = match set {
            ScoreSet::Validation => (data::load_splits(&cfg.data)?.1, "validation"),
            ScoreSet::Selection => (data::load_select(&cfg.data)?, "selection"),
        };
        let val = data::tokenize(&val_rows, &tok, cfg.data.max_prompt_len, what)?;
        for r in &val_rows {
            registry.for_source(&r.data_source)?;
        }
        Ok(Scorer {
            model: Model::load(base_dir, cfg.model.load_options()?)?,
            tok,
            val,
            registry,
            pool: Pool::new(2)?,
            greedy: sampling(&cfg.rollout, 1, 0.0),
        })
    }

    fn attach(&mut self, adapter: Option<&Path>) -> Result<()> {
        self.model.remove_adapter();
        self.model.clear_jump();
        if let Some(a) = adapter {
            self.model.load_adapter(a)?;
        }
        Ok(())
    }

    fn sampler(&self) -> Sampler<'_> {
        Sampler {
            model: &self.model,
            tokenizer: &self.tok,
            registry: &self.registry,
            pool: &self.pool,
            stop: self.model.stop_tokens(&self.tok),
        }
    }

    /// Greedy validation of the base with `adapter` (None: the base alone).
    pub fn validate(&mut self, adapter: Option<&Path>) -> Result<Validation> {
        self.attach(adapter)?;
        Ok(tch::no_grad(|| {
            self.sampler().validate(&self.val, &self.greedy, 0)
        })?)
    }

    /// Greedy validation of `adapter` jumped by `jump`'s candidate λ for every λ of `lambdas`,
    /// decoded in one pass; equal to writing each candidate as an adapter and validating it
    /// alone.
    pub fn validate_jumps(
        &mut self,
        adapter: &Path,
        jump: Jump,
        lambdas: &[f64],
    ) -> Result<Vec<Validation>> {
        self.attach(Some(adapter))?;
        self.model.set_jump(jump)?;
        let out = tch::no_grad(|| {
            self.sampler()
                .validate_jumps(&self.val, &self.greedy, lambdas)
        });
        self.model.clear_jump();
        Ok(out?)
    }

    /// The greedy validation score (mean over data sources) of the base with `adapter` (None:
    /// the base alone), and the tokens generated.
    pub fn score(&mut self, adapter: Option<&Path>) -> Result<(f64, u64)> {
        let v = self.validate(adapter)?;
        Ok((v.score(), v.tokens()))
    }

    /// [`Scorer::validate_jumps`]'s scores and tokens.
    pub fn score_jumps(
        &mut self,
        adapter: &Path,
        jump: Jump,
        lambdas: &[f64],
    ) -> Result<Vec<(f64, u64)>> {
        let v = self.validate_jumps(adapter, jump, lambdas)?;
        Ok(v.iter().map(|v| (v.score(), v.tokens())).collect())
    }

    /// Problems in the validation set.
    pub fn problems(&self) -> usize {
        self.val.len()
    }
}
