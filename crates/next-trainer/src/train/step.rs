//! One RL step, in three parts: the rollout (sample, verify, shape rewards, advantages), the
//! update (the clipped policy loss over micro-batches, gradient clipping, AdamW), and the
//! step's metrics under verl's names.

use std::time::Instant;

use next_model::{Batch, Kind, Tensor};
use next_rollout::{Prompted, Sample};
use next_verifiers::VerdictKind;
use serde_json::{Map, Value};

use super::{sampling, step_seed, Trainer};
use crate::advantage::{advantages, zero_variance_groups};
use crate::loss::{policy_loss, token_weights, LossInputs, LossSettings};
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
    /// Fraction of the kept sequences left out of forward and backward (zero advantage).
    skipped: f64,
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
        // Broken weights show here first: with most sequences skipped by the update, the loss
        // alone would not see them.
        if let Some(lp) = samples
            .iter()
            .flat_map(|s| s.logprobs.iter())
            .find(|lp| !lp.is_finite())
        {
            return Err(Error::Numerics(format!(
                "the policy sampled with log-probability {lp} at step {}",
                step + 1
            )));
        }
        let errors: Vec<(usize, &Sample)> = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.verdict.kind == VerdictKind::Error)
            .collect();
        if let Some(&(i, s)) = errors.first() {
            let count = errors.len();
            tracing::warn!(
                "step {}: {count} of {} rewards could not be computed (scored 0); the first, response {} of training row {}: {}",
                step + 1,
                samples.len(),
                i,
                prompt_idx[s.prompt] + 1,
                s.verdict.detail
            );
        }
        if let Some(dir) = &self.rollout_dump {
            super::dump::write(dir, step + 1, &prompts, &[("rollout", &samples)])?;
        }
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

    /// The sequences of `rows` as a batch, and their response lengths.
    fn batch(&self, ro: &Rollout, rows: &[usize]) -> Result<(Batch, Vec<usize>)> {
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
        let batch = Batch::left_padded(&seqs, self.stop.pad, self.model.device())?;
        Ok((batch, lens))
    }

    /// Log-probabilities `[N]` of the response tokens of `batch` (no gradient), the vocabulary
    /// projection taken `head_chunk` tokens at a time.
    fn logprobs(&self, batch: &Batch, lens: &[usize], temperature: f64) -> Result<Tensor> {
        tch::no_grad(|| {
            let (h, targets) = self.model.response_hidden(batch, lens)?;
            let chunk = self.head_chunk();
            Ok(self
                .model
                .token_head(&h, &targets, temperature, chunk, false)?
                .0)
        })
    }

    /// Tokens per chunk of the vocabulary projection: `trainer.head_chunk`, or enough for
    /// about 16M logits at a time.
    fn head_chunk(&self) -> i64 {
        match self.cfg.trainer.head_chunk {
            0 => ((1i64 << 24) / self.model.config.vocab_size).max(1),
            n => n as i64,
        }
    }

    fn update(&mut self, step: usize, ro: &Rollout) -> Result<Update> {
        let cfg = self.cfg;
        let (r, alg) = (&cfg.rollout, &cfg.algorithm);
        let t_update = Instant::now();
        let keep = &ro.keep;
        let lens_of = |rows: &[usize]| -> Vec<usize> {
            rows.iter()
                .map(|&i| ro.samples[i].response_ids.len())
                .collect()
        };
        let total_tokens: usize = lens_of(keep).iter().sum();
        // The policy's entropy on its own samples, from the rollout (no pass of its own).
        let entropy: f64 = keep
            .iter()
            .flat_map(|&i| ro.samples[i].entropy.iter())
            .map(|&e| e as f64)
            .sum::<f64>()
            / total_tokens.max(1) as f64;
        let mut u = Update {
            lr: learning_rate(&cfg.optim, step, cfg.trainer.steps),
            entropy,
            ..Update::default()
        };
        if keep.is_empty() {
            u.seconds = t_update.elapsed().as_secs_f64();
            return Ok(u);
        }
        let temperature = r.temperature.max(1e-6);
        // Every token's weight in the aggregated loss, normalised over all kept rows.
        let weights: std::collections::HashMap<usize, Vec<f64>> = keep
            .iter()
            .copied()
            .zip(token_weights(
                alg.loss_agg(),
                &lens_of(keep),
                r.max_new_tokens,
            ))
            .collect();
        // With no KL and one pass, a sequence whose advantage is zero adds exactly nothing to
        // the gradient: leave it out of forward and backward (the weights above still count it).
        let skip = cfg.trainer.skip_zero_advantage && alg.kl_coef == 0.0 && alg.ppo_epochs <= 1;
        let active: Vec<usize> = keep
            .iter()
            .copied()
            .filter(|&i| !skip || ro.advantages[i] != 0.0)
            .collect();
        u.skipped = 1.0 - active.len() as f64 / keep.len() as f64;
        let settings = LossSettings {
            clip_low: alg.clip_ratio_low,
            clip_high: alg.clip_high(),
            kl_coef: alg.kl_coef,
            kl_type: alg.kl_type,
        };
        let chunks: Vec<&[usize]> = active.chunks(cfg.trainer.micro_batch.max(1)).collect();
        // Old log-probs: with one pass over the batch they equal the current ones (detached);
        // with several passes they are fixed before the first update.
        let old: Option<Vec<Tensor>> = if alg.ppo_epochs > 1 {
            Some(
                chunks
                    .iter()
                    .map(|c| {
                        let (b, lens) = self.batch(ro, c)?;
                        self.logprobs(&b, &lens, temperature)
                    })
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        let epochs = alg.ppo_epochs.max(1);
        let head_chunk = self.head_chunk();
        for epoch in 0..epochs {
            let last = epoch + 1 == epochs;
            for (ci, rows) in chunks.iter().enumerate() {
                let (batch, lens) = self.batch(ro, rows)?;
                let per_token = |f: &dyn Fn(usize) -> Vec<f64>| -> Tensor {
                    let v: Vec<f32> = rows.iter().flat_map(|&i| f(i)).map(|x| x as f32).collect();
                    Tensor::from_slice(&v).to_device(self.model.device())
                };
                let adv = per_token(&|i| vec![ro.advantages[i]; ro.samples[i].response_ids.len()]);
                let w = per_token(&|i| weights[&i].clone());
                let ref_logp = if alg.kl_coef != 0.0 {
                    self.model.set_adapter_enabled(false);
                    let lp = self.logprobs(&batch, &lens, temperature);
                    self.model.set_adapter_enabled(true);
                    Some(lp?)
                } else {
                    None
                };
                // The network up to the final norm, with gradient; the vocabulary projection
                // and the loss a chunk of tokens at a time, each chunk's backward stopping at
                // the hidden states, whose gradient then goes through the network once.
                let (h, targets) = self.model.response_hidden(&batch, &lens)?;
                let hd = h.detach().set_requires_grad(true);
                let n = hd.size()[0];
                let mut start = 0;
                while start < n {
                    let c = head_chunk.min(n - start);
                    let part = |t: &Tensor| t.narrow(0, start, c);
                    let (logp, _) = self.model.token_head(
                        &part(&hd),
                        &part(&targets),
                        temperature,
                        c,
                        false,
                    )?;
                    let old_logp = match &old {
                        Some(o) => part(&o[ci]),
                        None => logp.detach(),
                    };
                    let ref_part = ref_logp.as_ref().map(part);
                    let out = policy_loss(
                        &LossInputs {
                            logp: &logp,
                            old_logp: &old_logp,
                            ref_logp: ref_part.as_ref(),
                            advantages: &part(&adv),
                            weights: &part(&w),
                            token_mean: 1.0 / total_tokens.max(1) as f64,
                        },
                        &settings,
                    );
                    let lv = out.loss.double_value(&[]);
                    if !lv.is_finite() {
                        return Err(Error::Numerics(format!(
                            "loss became {lv} at step {}",
                            step + 1
                        )));
                    }
                    out.loss.backward();
                    if last {
                        u.pg_loss += out.pg_loss;
                        u.clipfrac += out.pg_clipfrac;
                        u.ppo_kl += out.ppo_kl;
                        u.kl += out.kl;
                    }
                    start += c;
                }
                if n > 0 {
                    (&h * hd.grad()).sum(Kind::Float).backward();
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

/// The process's peak resident memory so far, in GB (`VmHWM`; NaN where /proc is missing).
fn max_rss_gb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1e6)
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
        ("batch/skipped_seq_frac", u.skipped),
        ("timing_s/gen", ro.gen_s),
        ("timing_s/verify", ro.verify_s),
        ("timing_s/update", u.seconds),
        ("timing_s/step", step_s),
        ("perf/throughput", tokens as f64 / step_s),
        ("perf/max_rss_gb", max_rss_gb()),
    ] {
        m.insert(k.into(), v.into());
    }
    // Numbers a reward function reported beside its score (verl's `reward_extra_info`), each
    // averaged over the responses that reported it.
    let mut extra: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for s in samples {
        for (k, v) in &s.verdict.extra {
            let e = extra.entry(k).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    for (k, (sum, count)) in extra {
        m.insert(
            format!("reward_extra/{k}/mean"),
            (sum / count as f64).into(),
        );
    }
    let errors = samples
        .iter()
        .filter(|s| s.verdict.kind == VerdictKind::Error)
        .count();
    m.insert("reward/error_frac".into(), (errors as f64 / n).into());
    m
}
