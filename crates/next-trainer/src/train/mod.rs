//! The RL loop: sample `n` responses per prompt, verify, compute advantages, update the LoRA
//! factors with the clipped policy loss, validate, checkpoint; resume exactly after a crash.
//!
//! Every random choice is derived from `(seed, step)`, so a run killed and resumed from a
//! checkpoint repeats the uninterrupted run's computation (on CPU, bit for bit).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use next_model::{Batch, Kind, LoadOptions, LoraConfig, Model, TargetModules, Tensor, Tokenizer};
use next_rollout::{Prompted, Sampler, SamplingConfig};
use next_verifiers::{Pool, Registry};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::advantage::{advantages, zero_variance_groups};
use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::data::{self, Row};
use crate::loss::{policy_loss, LossInputs, LossSettings};
use crate::optim::{clip_grad_norm, learning_rate, AdamW};
use crate::tasks::{self, Split, Task};
use crate::{Error, Result};

pub const METRICS: &str = "metrics.jsonl";

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
fn sampling(r: &crate::config::RolloutSection, n: usize, temperature: f64) -> SamplingConfig {
    SamplingConfig {
        n,
        temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        max_new_tokens: r.max_new_tokens,
        stop: r.stop.clone(),
        max_batch: 1024,
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

fn load_rows(cfg: &TrainConfig) -> Result<(Vec<Row>, Vec<Row>, usize)> {
    let d = &cfg.data;
    let seed = d.seed;
    let mut skipped = 0;
    let train = if d.train.is_empty() {
        tasks::generate(Task::parse(&d.task)?, Split::Train, d.train_size, seed)?
    } else {
        let (rows, s) = data::load_jsonl(Path::new(&d.train), d.skip_bad_rows)?;
        skipped += s;
        rows
    };
    let mut val = if d.val.is_empty() {
        tasks::generate(Task::parse(&d.task)?, Split::Val, d.val_size, seed)?
    } else {
        let (rows, s) = data::load_jsonl(Path::new(&d.val), d.skip_bad_rows)?;
        skipped += s;
        rows
    };
    val.truncate(d.val_size.max(1));
    Ok((train, val, skipped))
}

fn tokenize(rows: &[Row], tok: &Tokenizer, max_len: usize, what: &str) -> Result<Vec<Prompted>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let ids = tok.encode(&r.render(tok)?, false)?;
            if ids.is_empty() || ids.len() > max_len {
                return Err(Error::Data(format!(
                    "{what} row {}: prompt has {} tokens (allowed 1..={max_len})",
                    i + 1,
                    ids.len()
                )));
            }
            Ok(Prompted {
                ids,
                data_source: r.data_source.clone(),
                ground_truth: r.ground_truth.clone(),
            })
        })
        .collect()
}

/// Removes metrics rows after `step` (they belong to steps a resumed run will redo).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    next_model::io::write_atomic(path, out.as_bytes())?;
    Ok(())
}

fn append_metrics(path: &Path, step: usize, data: &Map<String, Value>) -> Result<()> {
    let line = json!({"step": step, "data": data}).to_string();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
    writeln!(f, "{line}")
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })
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
    eos: Vec<i64>,
    pad: i64,
    params: Vec<Tensor>,
    opt: AdamW,
}

impl Trainer<'_> {
    fn sampler(&self) -> Sampler<'_> {
        Sampler {
            model: &self.model,
            tokenizer: &self.tok,
            registry: &self.registry,
            pool: &self.pool,
            eos_token_ids: self.eos.clone(),
            pad_token_id: self.pad,
        }
    }

    fn validate(&mut self, step: usize) -> Result<Map<String, Value>> {
        let r = &self.cfg.rollout;
        let mut m = Map::new();
        let greedy = sampling(r, 1, 0.0);
        let v = tch::no_grad(|| self.sampler().validate(&self.val, &greedy, 0))?;
        for (src, mean) in &v.mean_by_source {
            m.insert(format!("val-core/{src}/reward/mean@1"), (*mean).into());
        }
        if r.val_n > 0 {
            let sampled = sampling(r, r.val_n, r.temperature);
            let v = tch::no_grad(|| {
                self.sampler().validate(
                    &self.val,
                    &sampled,
                    step_seed(self.cfg.trainer.seed, step, 7),
                )
            })?;
            for (src, mean) in &v.mean_by_source {
                m.insert(
                    format!("val-core/{src}/reward/mean@{}", r.val_n),
                    (*mean).into(),
                );
            }
        }
        Ok(m)
    }

    /// One RL step; returns its metrics.
    fn step(&mut self, step: usize, prompt_idx: &[usize]) -> Result<Map<String, Value>> {
        let cfg = self.cfg;
        let (r, alg) = (&cfg.rollout, &cfg.algorithm);
        let t_step = Instant::now();
        tch::manual_seed(step_seed(cfg.trainer.seed, step, 1) as i64);
        let prompts: Vec<Prompted> = prompt_idx.iter().map(|&i| self.train[i].clone()).collect();
        let scfg = sampling(r, r.n, r.temperature);
        let rollout = tch::no_grad(|| {
            self.sampler()
                .sample(&prompts, &scfg, step_seed(cfg.trainer.seed, step, 2))
        })?;
        let samples = rollout.samples;
        let mut rewards: Vec<f64> = samples.iter().map(|s| s.verdict.reward).collect();
        let scores = rewards.clone();
        if alg.overlong_buffer > 0 {
            let start = r.max_new_tokens.saturating_sub(alg.overlong_buffer);
            for (rw, s) in rewards.iter_mut().zip(&samples) {
                let over = s.response_ids.len().saturating_sub(start) as f64;
                *rw -= (over / alg.overlong_buffer as f64).min(1.0) * alg.overlong_penalty;
            }
        }
        let adv = advantages(alg.adv_estimator, &rewards, r.n);
        let flat = zero_variance_groups(&rewards, r.n);
        let zero_frac = flat.iter().filter(|&&z| z).count() as f64 / flat.len().max(1) as f64;
        // Rows that take part in the update (dynamic sampling drops flat groups).
        let keep: Vec<usize> = (0..samples.len())
            .filter(|&i| !(alg.dynamic() && flat[i / r.n]))
            .collect();

        let t_update = Instant::now();
        let mut m = Map::new();
        let (mut pg_loss, mut clipfrac, mut ppo_kl, mut kl, mut entropy, mut grad_norm) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let lr = learning_rate(&cfg.optim, step, cfg.trainer.steps);
        if !keep.is_empty() {
            let total_tokens: usize = keep.iter().map(|&i| samples[i].response_ids.len()).sum();
            let mb = cfg.trainer.micro_batch.max(1);
            let settings = LossSettings {
                clip_low: alg.clip_ratio_low,
                clip_high: alg.clip_high(),
                agg: alg.loss_agg(),
                max_len: r.max_new_tokens,
                kl_coef: alg.kl_coef,
                kl_type: alg.kl_type,
            };
            // Old log-probs: with one pass over the batch they equal the current ones (detached);
            // with several passes they are fixed before the first update.
            let chunks: Vec<&[usize]> = keep.chunks(mb).collect();
            let (device, pad) = (self.model.device(), self.pad);
            let build = |rows: &[usize]| -> Result<(Batch, Tensor, Tensor, Vec<usize>)> {
                let seqs: Vec<Vec<i64>> = rows
                    .iter()
                    .map(|&i| {
                        [
                            prompts[samples[i].prompt].ids.as_slice(),
                            samples[i].response_ids.as_slice(),
                        ]
                        .concat()
                    })
                    .collect();
                let lens: Vec<usize> = rows
                    .iter()
                    .map(|&i| samples[i].response_ids.len())
                    .collect();
                let batch = Batch::left_padded(&seqs, pad, device)?;
                let w = batch.input_ids.size()[1];
                let pos = Tensor::arange(w - 1, (Kind::Int64, device)).view([1, -1]);
                let first = Tensor::from_slice(&lens.iter().map(|&l| l as i64).collect::<Vec<_>>())
                    .to_device(device)
                    .view([-1, 1])
                    .neg()
                    + (w - 1);
                let mask = pos.ge_tensor(&first).to_kind(Kind::Float);
                let a =
                    Tensor::from_slice(&rows.iter().map(|&i| adv[i] as f32).collect::<Vec<_>>())
                        .to_device(device);
                Ok((batch, mask, a, lens))
            };
            let old: Option<Vec<Tensor>> = if alg.ppo_epochs > 1 {
                Some(
                    chunks
                        .iter()
                        .map(|c| {
                            build(c).and_then(|(b, _, _, _)| {
                                Ok(tch::no_grad(|| {
                                    self.model.token_logprobs(&b, r.temperature.max(1e-6))
                                })?)
                            })
                        })
                        .collect::<Result<_>>()?,
                )
            } else {
                None
            };
            for epoch in 0..alg.ppo_epochs.max(1) {
                for (ci, rows) in chunks.iter().enumerate() {
                    let (batch, mask, a, lens) = build(rows)?;
                    let logits = self.model.forward(&batch, None)?;
                    let t = logits.size()[1];
                    let logits =
                        logits.narrow(1, 0, t - 1).to_kind(Kind::Float) / r.temperature.max(1e-6);
                    let logp_all = logits.log_softmax(-1, Kind::Float);
                    let next = batch.input_ids.narrow(1, 1, t - 1).unsqueeze(-1);
                    let logp = logp_all.gather(-1, &next, false).squeeze_dim(-1);
                    let old_logp = match &old {
                        Some(o) => o[ci].shallow_clone(),
                        None => logp.detach(),
                    };
                    let ref_logp = if alg.kl_coef != 0.0 {
                        self.model.set_adapter_enabled(false);
                        let lp = tch::no_grad(|| {
                            self.model.token_logprobs(&batch, r.temperature.max(1e-6))
                        });
                        self.model.set_adapter_enabled(true);
                        Some(lp?)
                    } else {
                        None
                    };
                    let out = policy_loss(
                        &LossInputs {
                            logp: &logp,
                            old_logp: &old_logp,
                            ref_logp: ref_logp.as_ref(),
                            advantages: &a,
                            mask: &mask,
                        },
                        &settings,
                    );
                    // Each micro-batch's share of the whole batch's reduction.
                    let share = match settings.agg {
                        crate::config::LossAgg::TokenMean => {
                            lens.iter().sum::<usize>() as f64 / total_tokens.max(1) as f64
                        }
                        _ => rows.len() as f64 / keep.len() as f64,
                    };
                    let loss = &out.loss * share;
                    let lv = loss.double_value(&[]);
                    if !lv.is_finite() {
                        return Err(Error::Numerics(format!(
                            "loss became {lv} at step {}",
                            step + 1
                        )));
                    }
                    loss.backward();
                    if epoch + 1 == alg.ppo_epochs.max(1) {
                        pg_loss += out.pg_loss * share;
                        clipfrac += out.pg_clipfrac * share;
                        ppo_kl += out.ppo_kl * share;
                        kl += out.kl * share;
                        let ent = tch::no_grad(|| {
                            let p = logp_all.exp();
                            let e = -(p * &logp_all).sum_dim_intlist(-1, false, Kind::Float);
                            (e * &mask).sum(Kind::Float).double_value(&[])
                        });
                        entropy += ent / total_tokens.max(1) as f64;
                    }
                }
                grad_norm = clip_grad_norm(&self.params, cfg.optim.grad_clip);
                if !grad_norm.is_finite() {
                    return Err(Error::Numerics(format!(
                        "gradient norm became {grad_norm} at step {}",
                        step + 1
                    )));
                }
                self.opt.step(&self.params, lr);
            }
        }
        let update_s = t_update.elapsed().as_secs_f64();
        let lens: Vec<f64> = samples
            .iter()
            .map(|s| s.response_ids.len() as f64)
            .collect();
        let n = samples.len().max(1) as f64;
        let stat = |v: &[f64]| {
            (
                v.iter().sum::<f64>() / v.len().max(1) as f64,
                v.iter().cloned().fold(f64::MIN, f64::max),
                v.iter().cloned().fold(f64::MAX, f64::min),
            )
        };
        let (smean, smax, smin) = stat(&scores);
        let (lmean, lmax, _) = stat(&lens);
        let clipped = samples.iter().filter(|s| !s.finished).count() as f64 / n;
        let tokens: usize = samples
            .iter()
            .map(|s| s.response_ids.len() + prompts[s.prompt].ids.len())
            .sum();
        let step_s = t_step.elapsed().as_secs_f64();
        for (k, v) in [
            ("critic/score/mean", smean),
            ("critic/score/max", smax),
            ("critic/score/min", smin),
            ("critic/rewards/mean", rewards.iter().sum::<f64>() / n),
            ("critic/advantages/mean", adv.iter().sum::<f64>() / n),
            ("response_length/mean", lmean),
            ("response_length/max", lmax),
            ("response_length/clip_ratio", clipped),
            ("actor/pg_loss", pg_loss),
            ("actor/kl_loss", kl),
            ("actor/entropy", entropy),
            ("actor/grad_norm", grad_norm),
            ("actor/pg_clipfrac", clipfrac),
            ("actor/ppo_kl", ppo_kl),
            ("actor/lr", lr),
            ("batch/zero_variance_group_frac", zero_frac),
            ("timing_s/gen", rollout.gen_s),
            ("timing_s/verify", rollout.verify_s),
            ("timing_s/update", update_s),
            ("timing_s/step", step_s),
            ("perf/throughput", tokens as f64 / step_s),
        ] {
            m.insert(k.into(), v.into());
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

/// The EOS ids (the model's generation config, else the tokenizer's) and the pad id.
fn stop_tokens(model: &Model, tok: &Tokenizer) -> (Vec<i64>, i64) {
    let eos: Vec<i64> = if model.config.eos_token_ids.is_empty() {
        tok.eos_token_id.into_iter().collect()
    } else {
        model.config.eos_token_ids.clone()
    };
    let pad = model
        .config
        .pad_token_id
        .or(tok.pad_token_id)
        .or(eos.first().copied())
        .unwrap_or(0);
    (eos, pad)
}

/// The greedy validation mean (per data source, averaged, as in the training metrics) of the
/// base model in `base_dir` with each of `adapters` (None: the base alone) on `cfg`'s
/// validation set, scored by the task's verifiers; with the tokens generated for each.
pub fn evaluate(
    cfg: &TrainConfig,
    base_dir: &Path,
    adapters: &[Option<&Path>],
) -> Result<Vec<(f64, u64)>> {
    if cfg.model.threads > 0 {
        tch::set_num_threads(cfg.model.threads);
    }
    let opts = LoadOptions {
        dtype: Some(next_model::parse_dtype(&cfg.model.dtype)?),
        device: next_model::parse_device(&cfg.model.device)?,
    };
    let tok = Tokenizer::load(base_dir)?;
    let (_, val_rows, _) = load_rows(cfg)?;
    let val = tokenize(&val_rows, &tok, cfg.data.max_prompt_len, "validation")?;
    let registry = Registry::default();
    let pool = Pool::new(2)?;
    let greedy = sampling(&cfg.rollout, 1, 0.0);
    let mut out = Vec::with_capacity(adapters.len());
    for adapter in adapters {
        let mut model = Model::load(base_dir, opts)?;
        if let Some(a) = adapter {
            model.load_adapter(a)?;
        }
        let (eos, pad) = stop_tokens(&model, &tok);
        let sampler = Sampler {
            model: &model,
            tokenizer: &tok,
            registry: &registry,
            pool: &pool,
            eos_token_ids: eos,
            pad_token_id: pad,
        };
        let v = tch::no_grad(|| sampler.validate(&val, &greedy, 0))?;
        let means: Vec<f64> = v.mean_by_source.values().copied().collect();
        let tokens: usize = v.samples.iter().map(|s| s.response_ids.len()).sum();
        out.push((
            means.iter().sum::<f64>() / means.len().max(1) as f64,
            tokens as u64,
        ));
    }
    Ok(out)
}

/// Trains `cfg` in `run` with the base model in `base_dir`, resuming from the last checkpoint
/// when there is one.
pub fn train(
    cfg: &TrainConfig,
    run: &Path,
    base_dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let start = Instant::now();
    std::fs::create_dir_all(run).map_err(|e| Error::Io {
        path: run.to_owned(),
        source: e,
    })?;
    if cfg.model.threads > 0 {
        tch::set_num_threads(cfg.model.threads);
    }
    let t = &cfg.trainer;
    if t.steps == 0
        || t.prompts_per_step == 0
        || cfg.rollout.n == 0
        || cfg.rollout.max_new_tokens == 0
    {
        return Err(Error::Config("trainer.steps, trainer.prompts_per_step, rollout.n and rollout.max_new_tokens must be positive".into()));
    }
    let opts = LoadOptions {
        dtype: Some(next_model::parse_dtype(&cfg.model.dtype)?),
        device: next_model::parse_device(&cfg.model.device)?,
    };
    let tok = Tokenizer::load(base_dir)?;
    let mut model = Model::load(base_dir, opts)?;
    checkpoint::clean_partial(run)?;
    let resume = checkpoint::latest(run)?;
    match resume {
        Some(step) => model.load_adapter(&checkpoint::adapter_dir(run, step))?,
        None => {
            let targets = if cfg.lora.target_modules.iter().any(|m| m == "all-linear") {
                TargetModules::AllLinear
            } else {
                TargetModules::List(cfg.lora.target_modules.clone())
            };
            let lora = LoraConfig {
                r: cfg.lora.r,
                alpha: cfg.lora.alpha,
                dropout: cfg.lora.dropout,
                targets,
                use_rslora: cfg.lora.use_rslora,
            };
            model.add_lora(&lora, t.seed)?;
        }
    }
    model.set_train(true);
    let (eos, pad) = stop_tokens(&model, &tok);
    let (train_rows, val_rows, skipped) = load_rows(cfg)?;
    if skipped > 0 {
        tracing::warn!("skipped {skipped} malformed dataset rows");
    }
    let train = tokenize(&train_rows, &tok, cfg.data.max_prompt_len, "training")?;
    let val = tokenize(&val_rows, &tok, cfg.data.max_prompt_len, "validation")?;
    let registry = Registry::default();
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
        eos,
        pad,
        params,
        opt,
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
        truncate_metrics(&metrics_path, first_step)?;
    } else {
        truncate_metrics(&metrics_path, 0)?;
        let _ = std::fs::remove_file(&metrics_path);
    }
    on_event(Event::Start {
        step: first_step,
        steps: t.steps,
        resumed: resume.is_some(),
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
        append_metrics(&metrics_path, 0, &m)?;
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
        append_metrics(&metrics_path, done, &m)?;
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

/// The greedy validation accuracy in a metrics row: the mean of its
/// `val-core/<source>/reward/mean@1` values over sources (`None` when it has none).
pub fn greedy_val_mean(m: &Map<String, Value>) -> Option<f64> {
    let v: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("val-core/") && k.ends_with("/mean@1"))
        .filter_map(|(_, v)| v.as_f64())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}
