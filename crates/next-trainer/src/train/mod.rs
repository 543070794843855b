//! The RL loop: sample `n` responses per prompt, verify, compute advantages, update the LoRA
//! factors with the clipped policy loss, validate, checkpoint; resume exactly after a crash.
//! `step.rs` is one RL step (rollout, update, metrics).
//!
//! Every random choice is derived from `(seed, step)`, so a run killed and resumed from a
//! checkpoint repeats the uninterrupted run's computation (on CPU, bit for bit).

use std::path::{Path, PathBuf};
use std::time::Instant;

use next_model::{LoraConfig, Model, StopTokens, Tensor, Tokenizer};
use next_rollout::{Prompted, Sampler, SamplingConfig};
use next_verifiers::{Pool, Registry};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::checkpoint::{self, TrainerState};
use crate::config::{RolloutSection, TrainConfig};
use crate::data;
use crate::metrics::{self, greedy_val_mean, METRICS};
use crate::optim::AdamW;
use crate::{Error, Result};

mod dump;
mod score;
mod step;

/// The jumps a [`Scorer`] decodes together (the model's types, for callers that do not link it).
pub use next_model::{FactorLine, Jump};
pub use score::{ScoreSet, Scorer};

/// What the loop reports to its caller (progress bars, console lines).
#[derive(Debug, Clone)]
pub enum Event {
    /// Training starts (or resumes) at `step` of `steps`.
    Start {
        step: usize,
        steps: usize,
        resumed: bool,
    },
    /// One RL step finished; `metrics` are the values written to `metrics.jsonl`.
    Step {
        step: usize,
        metrics: Map<String, Value>,
    },
    /// A validation starts: greedy decoding of `problems` held-out prompts (minutes on a CPU
    /// with a real model, so front ends say so).
    Validating {
        step: usize,
        problems: usize,
    },
    /// A validation finished.
    Validation {
        step: usize,
        metrics: Map<String, Value>,
    },
    Checkpoint {
        step: usize,
        dir: PathBuf,
    },
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub steps: usize,
    pub first_val: Option<f64>,
    pub last_val: Option<f64>,
    pub seconds: f64,
}

/// The rollout section as sampler settings, with `n` samples at `temperature` (0: greedy).
fn sampling(r: &RolloutSection, n: usize, temperature: f64) -> SamplingConfig {
    SamplingConfig {
        n,
        temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        max_new_tokens: r.max_new_tokens,
        stop: r.stop.clone(),
        max_batch: r.max_batch,
    }
}

/// Mixes the run seed and a step into a per-step seed.
fn step_seed(seed: u64, step: usize, salt: u64) -> u64 {
    let mut z = seed
        ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The training state the loop carries.
struct Trainer<'a> {
    cfg: &'a TrainConfig,
    model: Model,
    tok: Tokenizer,
    registry: Registry,
    pool: Pool,
    train: Vec<Prompted>,
    val: Vec<Prompted>,
    stop: StopTokens,
    params: Vec<Tensor>,
    opt: AdamW,
    /// Where each rollout's and validation's responses are written (`trainer.rollout_data_dir`,
    /// `trainer.validation_data_dir`; None: not written).
    rollout_dump: Option<PathBuf>,
    val_dump: Option<PathBuf>,
}

impl Trainer<'_> {
    fn sampler(&self) -> Sampler<'_> {
        Sampler {
            model: &self.model,
            tokenizer: &self.tok,
            registry: &self.registry,
            pool: &self.pool,
            stop: self.stop.clone(),
        }
    }

    fn validate(&mut self, step: usize) -> Result<Map<String, Value>> {
        let r = &self.cfg.rollout;
        let mut m = Map::new();
        let greedy = sampling(r, 1, 0.0);
        let v = tch::no_grad(|| self.sampler().validate(&self.val, &greedy, 0))?;
        for (src, mean) in &v.mean_by_source {
            m.insert(metrics::val_key(src, 1), (*mean).into());
        }
        let mut sampled_v = None;
        if r.val_n > 0 {
            let sampled = sampling(r, r.val_n, r.temperature);
            let s = tch::no_grad(|| {
                self.sampler().validate(
                    &self.val,
                    &sampled,
                    step_seed(self.cfg.trainer.seed, step, 7),
                )
            })?;
            for (src, mean) in &s.mean_by_source {
                m.insert(metrics::val_key(src, r.val_n), (*mean).into());
            }
            sampled_v = Some(s);
        }
        if let Some(dir) = &self.val_dump {
            let mut groups = vec![("greedy", v.samples.as_slice())];
            if let Some(s) = &sampled_v {
                groups.push(("sampled", s.samples.as_slice()));
            }
            dump::write(dir, step, &self.val, &groups)?;
        }
        Ok(m)
    }
}

/// The prompts of step `step` (0-based): a fresh seeded shuffle of the training set per epoch.
fn prompts_for(
    step: usize,
    per_step: usize,
    n_rows: usize,
    seed: u64,
) -> (Vec<usize>, usize, usize) {
    let start = step * per_step;
    let mut out = Vec::with_capacity(per_step);
    let mut epoch_cache: Option<(usize, Vec<usize>)> = None;
    for k in start..start + per_step {
        let (epoch, idx) = (k / n_rows, k % n_rows);
        if epoch_cache.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut order: Vec<usize> = (0..n_rows).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(step_seed(seed, epoch, 3)));
            epoch_cache = Some((epoch, order));
        }
        out.push(epoch_cache.as_ref().map(|(_, o)| o[idx]).unwrap_or(idx));
    }
    let next = start + per_step;
    (out, next / n_rows, next % n_rows)
}

/// The greedy validation mean (per data source, averaged, as in the training metrics) of the
/// base model in `base_dir` with each of `adapters` (None: the base alone) on `cfg`'s
/// validation set, scored by the task's verifiers; with the tokens generated for each.
pub fn evaluate(
    cfg: &TrainConfig,
    base_dir: &Path,
    adapters: &[Option<&Path>],
) -> Result<Vec<(f64, u64)>> {
    let mut scorer = Scorer::new(cfg, base_dir, ScoreSet::Validation, verifiers(cfg)?)?;
    adapters.iter().map(|a| scorer.score(*a)).collect()
}

/// Loads the base, attaches the run's adapter (its last checkpoint's, or a fresh one), and
/// restores the optimizer; returns the trainer, the step it starts at, and whether it resumes.
/// Adds the run's fresh LoRA adapter (seeded by `trainer.seed`) to `model` and keeps it as
/// θ_0 in `run`'s `initial_adapter`, for methods that extrapolate from the start of the
/// trajectory (written once).
fn add_initial_adapter(
    cfg: &TrainConfig,
    model: &mut Model,
    run: &Path,
    base_dir: &Path,
) -> Result<()> {
    let l = &cfg.lora;
    let lora = LoraConfig {
        r: l.r,
        alpha: l.alpha,
        dropout: l.dropout,
        targets: l.targets(),
        use_rslora: l.use_rslora,
    };
    model.add_lora(&lora, cfg.trainer.seed)?;
    let initial = checkpoint::initial_adapter(run);
    if !initial.exists() {
        let staging = next_files::atomic::Staging::new(&initial)?;
        model.save_adapter(staging.path(), Some(&base_dir.display().to_string()))?;
        staging.publish(next_files::atomic::Existing::Replace)?;
    }
    Ok(())
}

/// Writes the initial adapter a run of `cfg` on `base_dir` starts from into `run` (as
/// [`train`] does before its first step), for engines whose trainer starts from a given
/// adapter.
pub fn save_initial_adapter(cfg: &TrainConfig, base_dir: &Path, run: &Path) -> Result<()> {
    let mut model = Model::load(base_dir, cfg.model.load_options()?)?;
    add_initial_adapter(cfg, &mut model, run, base_dir)
}

fn setup<'a>(
    cfg: &'a TrainConfig,
    run: &Path,
    base_dir: &Path,
    registry: &Registry,
) -> Result<(Trainer<'a>, usize, bool)> {
    let t = &cfg.trainer;
    if t.steps == 0
        || t.prompts_per_step == 0
        || cfg.rollout.n == 0
        || cfg.rollout.max_new_tokens == 0
        || cfg.rollout.max_batch == 0
    {
        return Err(Error::Config("trainer.steps, trainer.prompts_per_step, rollout.n, rollout.max_new_tokens and rollout.max_batch must be positive".into()));
    }
    let tok = Tokenizer::load(base_dir)?;
    let mut model = Model::load(base_dir, cfg.model.load_options()?)?;
    checkpoint::clean_partial(run)?;
    let resume = checkpoint::latest(run)?;
    match resume {
        Some(step) => model.load_adapter(&checkpoint::adapter_dir(run, step))?,
        None => add_initial_adapter(cfg, &mut model, run, base_dir)?,
    }
    model.set_train(true);
    let stop = model.stop_tokens(&tok);
    let (train_rows, val_rows, skipped) = data::load_splits(&cfg.data)?;
    if skipped > 0 {
        tracing::warn!("skipped {skipped} malformed dataset rows");
    }
    let train = data::tokenize(&train_rows, &tok, cfg.data.max_prompt_len, "training")?;
    let val = data::tokenize(&val_rows, &tok, cfg.data.max_prompt_len, "validation")?;
    let registry = registry.clone();
    for r in train_rows.iter().chain(&val_rows) {
        registry.for_source(&r.data_source)?;
    }
    let params: Vec<Tensor> = model
        .lora_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let opt = AdamW::new(&params, &cfg.optim);
    let mut tr = Trainer {
        cfg,
        model,
        tok,
        registry,
        pool: Pool::new(2)?,
        train,
        val,
        stop,
        params,
        opt,
        rollout_dump: dump::dir(&cfg.trainer.rollout_data_dir, run),
        val_dump: dump::dir(&cfg.trainer.validation_data_dir, run),
    };
    let metrics_path = run.join(METRICS);
    let mut first_step = 0;
    if let Some(step) = resume {
        let state = checkpoint::load_state(run, step, &tr.model, &mut tr.opt)?;
        if state.seed != t.seed {
            return Err(Error::Checkpoint(format!(
                "{} was trained with seed {}, the config says {}",
                checkpoint::step_dir(run, step).display(),
                state.seed,
                t.seed
            )));
        }
        first_step = state.step;
        metrics::truncate(&metrics_path, first_step)?;
    } else {
        metrics::truncate(&metrics_path, 0)?;
        let _ = std::fs::remove_file(&metrics_path);
    }
    Ok((tr, first_step, resume.is_some()))
}

/// The verifiers `cfg` asks for: ours, with its `[reward]` section applied (Python reward
/// functions load here).
pub fn verifiers(cfg: &TrainConfig) -> Result<Registry> {
    cfg.reward.apply(Registry::default())
}

/// Trains `cfg` in `run` with the base model in `base_dir`, resuming from the last checkpoint
/// when there is one.
pub fn train(
    cfg: &TrainConfig,
    run: &Path,
    base_dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    train_with(cfg, run, base_dir, &verifiers(cfg)?, on_event)
}

/// [`train`] with the caller's verifiers (ours plus any registered from another crate, with
/// `cfg.reward` applied by [`crate::config::RewardSection::apply`]).
pub fn train_with(
    cfg: &TrainConfig,
    run: &Path,
    base_dir: &Path,
    registry: &Registry,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let start = Instant::now();
    std::fs::create_dir_all(run).map_err(|e| next_files::Error::io(run, e))?;
    cfg.model.apply_threads();
    let (mut tr, first_step, resumed) = setup(cfg, run, base_dir, registry)?;
    let t = &cfg.trainer;
    let metrics_path = run.join(METRICS);
    on_event(Event::Start {
        step: first_step,
        steps: t.steps,
        resumed,
    });
    let base_name = base_dir.display().to_string();
    let mut first_val = None;
    let mut last_val = None;
    if first_step == 0 {
        on_event(Event::Validating {
            step: 0,
            problems: tr.val.len(),
        });
        let m = tr.validate(0)?;
        first_val = greedy_val_mean(&m);
        last_val = first_val;
        metrics::append(&metrics_path, 0, &m)?;
        on_event(Event::Validation {
            step: 0,
            metrics: m,
        });
    }
    let end = if t.stop_at > 0 {
        t.stop_at.min(t.steps)
    } else {
        t.steps
    };
    for step in first_step..end {
        let (idx, data_epoch, data_index) =
            prompts_for(step, t.prompts_per_step, tr.train.len(), t.seed);
        let mut m = tr
            .step(step, &idx)
            .map_err(|e| match (e, checkpoint::latest(run)) {
                (Error::Numerics(msg), Ok(last)) => Error::Numerics(format!(
                    "{msg}; the last good checkpoint is {}",
                    last.map_or("none".to_string(), |s| checkpoint::step_dir(run, s)
                        .display()
                        .to_string())
                )),
                (e, _) => e,
            })?;
        let done = step + 1;
        if done % t.val_every.max(1) == 0 || done == end {
            on_event(Event::Validating {
                step: done,
                problems: tr.val.len(),
            });
            let v = tr.validate(done)?;
            last_val = greedy_val_mean(&v).or(last_val);
            on_event(Event::Validation {
                step: done,
                metrics: v.clone(),
            });
            m.extend(v);
        }
        metrics::append(&metrics_path, done, &m)?;
        on_event(Event::Step {
            step: done,
            metrics: m,
        });
        if done % t.save_every.max(1) == 0 || done == end {
            let state = TrainerState {
                step: done,
                seed: t.seed,
                data_epoch,
                data_index,
            };
            checkpoint::save(run, &tr.model, &tr.opt, &state, &base_name)?;
            on_event(Event::Checkpoint {
                step: done,
                dir: checkpoint::step_dir(run, done),
            });
        }
    }
    Ok(Summary {
        steps: t.steps,
        first_val,
        last_val,
        seconds: start.elapsed().as_secs_f64(),
    })
}
