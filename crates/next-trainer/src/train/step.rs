//! One RL step, in three parts: the rollout (sample, verify, shape rewards, advantages), the
//! update (the clipped policy loss over micro-batches, gradient clipping, AdamW), and the
//! step's metrics under verl's names.

use std::time::Instant;

use next_model::{Batch, Tensor};
use next_rollout::{Prompted, Sample};
use serde_json::{Map, Value};

use super::{sampling, step_seed, Trainer};
use crate::advantage::{advantages, zero_variance_groups};
use crate::config::LossAgg;
use crate::loss::{policy_loss, LossInputs, LossSettings};
use crate::optim::{clip_grad_norm, learning_rate};
use crate::{Error, Result};

/// What the rollout part of a step produced.
struct Rollout {
    prompts: Vec<Prompted>,
    samples: Vec<Sample>,
    /// Verifier scores, and the rewards after shaping (the overlong penalty).
    scores: Vec<f64>,
    rewards: Vec<f64>,
    advantages: Vec<f64>,
    /// Fraction of groups whose rewards are all equal.
    zero_frac: f64,
    /// Rows that take part in the update (dynamic sampling drops flat groups).
    keep: Vec<usize>,
    gen_s: f64,
    verify_s: f64,
}

/// What the update part of a step measured.
#[derive(Debug, Default)]
struct Update {
    pg_loss: f64,
    clipfrac: f64,
    ppo_kl: f64,
    kl: f64,
    entropy: f64,
    grad_norm: f64,
    lr: f64,
    seconds: f64,
}

impl Trainer<'_> {
    /// One RL step; returns its metrics.
    pub(super) fn step(&mut self, step: usize, prompt_idx: &[usize]) -> Result<Map<String, Value>> {
        let t_step = Instant::now();
        let rollout = self.rollout(step, prompt_idx)?;
        let update = self.update(step, &rollout)?;
        Ok(metrics(&rollout, &update, t_step.elapsed().as_secs_f64()))
    }

    fn rollout(&mut self, step: usize, prompt_idx: &[usize]) -> Result<Rollout> {
        let cfg = self.cfg;
        let (r, alg) = (&cfg.rollout, &cfg.algorithm);
        tch::manual_seed(step_seed(cfg.trainer.seed, step, 1) as i64);
        let prompts: Vec<Prompted> = prompt_idx.iter().map(|&i| self.train[i].clone()).collect();
        let scfg = sampling(r, r.n, r.temperature);
        let out = tch::no_grad(|| {
            self.sampler()
                .sample(&prompts, &scfg, step_seed(cfg.trainer.seed, step, 2))
        })?;
        let samples = out.samples;
        let scores: Vec<f64> = samples.iter().map(|s| s.verdict.reward).collect();
        let mut rewards = scores.clone();
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
        let keep: Vec<usize> = (0..samples.len())
            .filter(|&i| !(alg.dynamic() && flat[i / r.n]))
            .collect();
        Ok(Rollout {
            prompts,
            samples,
            scores,
            rewards,
            advantages: adv,
            zero_frac,
            keep,
            gen_s: out.gen_s,
            verify_s: out.verify_s,
        })
    }

    /// The sequences of `rows` as a batch, the mask of their response tokens, their
    /// advantages, and the response lengths.
    fn batch(&self, ro: &Rollout, rows: &[usize]) -> Result<(Batch, Tensor, Tensor, Vec<usize>)> {
        let seqs: Vec<Vec<i64>> = rows
            .iter()
            .map(|&i| {
                let s = &ro.samples[i];
                [
                    ro.prompts[s.prompt].ids.as_slice(),
                    s.response_ids.as_slice(),
                ]
                .concat()
            })
            .collect();
        let lens: Vec<usize> = rows
            .iter()
            .map(|&i| ro.samples[i].response_ids.len())
            .collect();
        let device = self.model.device();
        let batch = Batch::left_padded(&seqs, self.stop.pad, device)?;
        let mask = batch.suffix_mask(&lens);
        let a = Tensor::from_slice(
            &rows
                .iter()
                .map(|&i| ro.advantages[i] as f32)
                .collect::<Vec<_>>(),
        )
        .to_device(device);
        Ok((batch, mask, a, lens))
    }

    fn update(&mut self, step: usize, ro: &Rollout) -> Result<Update> {
        let cfg = self.cfg;
        let (r, alg) = (&cfg.rollout, &cfg.algorithm);
        let t_update = Instant::now();
        let mut u = Update {
            lr: learning_rate(&cfg.optim, step, cfg.trainer.steps),
            ..Update::default()
        };
        if ro.keep.is_empty() {
            u.seconds = t_update.elapsed().as_secs_f64();
            return Ok(u);
        }
        let keep = &ro.keep;
        let temperature = r.temperature.max(1e-6);
        let total_tokens: usize = keep.iter().map(|&i| ro.samples[i].response_ids.len()).sum();
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
        let chunks: Vec<&[usize]> = keep.chunks(cfg.trainer.micro_batch.max(1)).collect();
        let old: Option<Vec<Tensor>> = if alg.ppo_epochs > 1 {
            Some(
                chunks
                    .iter()
                    .map(|c| {
                        let (b, ..) = self.batch(ro, c)?;
                        Ok(tch::no_grad(|| self.model.token_logprobs(&b, temperature))?)
                    })
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        let epochs = alg.ppo_epochs.max(1);
        for epoch in 0..epochs {
            for (ci, rows) in chunks.iter().enumerate() {
                let (batch, mask, a, lens) = self.batch(ro, rows)?;
                let last = epoch + 1 == epochs;
                let (logp, entropy) =
                    self.model
                        .token_logprobs_with_entropy(&batch, temperature, last)?;
                let old_logp = match &old {
                    Some(o) => o[ci].shallow_clone(),
                    None => logp.detach(),
                };
                let ref_logp = if alg.kl_coef != 0.0 {
                    self.model.set_adapter_enabled(false);
                    let lp = tch::no_grad(|| self.model.token_logprobs(&batch, temperature));
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
                    LossAgg::TokenMean => {
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
                if last {
                    u.pg_loss += out.pg_loss * share;
                    u.clipfrac += out.pg_clipfrac * share;
                    u.ppo_kl += out.ppo_kl * share;
                    u.kl += out.kl * share;
                    let ent = entropy.expect("entropy asked for on the last pass");
                    let ent = tch::no_grad(|| (ent * &mask).sum(next_model::Kind::Float))
                        .double_value(&[]);
                    u.entropy += ent / total_tokens.max(1) as f64;
                }
            }
            u.grad_norm = clip_grad_norm(&self.params, cfg.optim.grad_clip);
            if !u.grad_norm.is_finite() {
                return Err(Error::Numerics(format!(
                    "gradient norm became {} at step {}",
                    u.grad_norm,
                    step + 1
                )));
            }
            self.opt.step(&self.params, u.lr);
        }
        u.seconds = t_update.elapsed().as_secs_f64();
        Ok(u)
    }
}

/// The step's metrics under verl's names.
fn metrics(ro: &Rollout, u: &Update, step_s: f64) -> Map<String, Value> {
    let samples = &ro.samples;
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
    let (smean, smax, smin) = stat(&ro.scores);
    let (lmean, lmax, _) = stat(&lens);
    let clipped = samples.iter().filter(|s| !s.finished).count() as f64 / n;
    let tokens: usize = samples
        .iter()
        .map(|s| s.response_ids.len() + ro.prompts[s.prompt].ids.len())
        .sum();
    let mut m = Map::new();
    for (k, v) in [
        ("critic/score/mean", smean),
        ("critic/score/max", smax),
        ("critic/score/min", smin),
        ("critic/rewards/mean", ro.rewards.iter().sum::<f64>() / n),
        (
            "critic/advantages/mean",
            ro.advantages.iter().sum::<f64>() / n,
        ),
        ("response_length/mean", lmean),
        ("response_length/max", lmax),
        ("response_length/clip_ratio", clipped),
        ("actor/pg_loss", u.pg_loss),
        ("actor/kl_loss", u.kl),
        ("actor/entropy", u.entropy),
        ("actor/grad_norm", u.grad_norm),
        ("actor/pg_clipfrac", u.clipfrac),
        ("actor/ppo_kl", u.ppo_kl),
        ("actor/lr", u.lr),
        ("batch/zero_variance_group_frac", ro.zero_frac),
        ("timing_s/gen", ro.gen_s),
        ("timing_s/verify", ro.verify_s),
        ("timing_s/update", u.seconds),
        ("timing_s/step", step_s),
        ("perf/throughput", tokens as f64 / step_s),
    ] {
        m.insert(k.into(), v.into());
    }
    m
}
