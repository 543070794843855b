//! `next-rollout`: sampling for RL — `n` responses per prompt in left-padded batches with the
//! KV cache (temperature, top-p, top-k, EOS, stop strings, max new tokens, explicit seeds),
//! each decoded and judged by the verifier pool; and validation (greedy mean@1, sampled mean@N).
//!
//! The model stays on the calling thread (`Tensor` is not `Sync`); only token-free strings and
//! JSON cross to the verifier workers.
//!
//! Architecture invariant: this crate knows nothing of advantages, losses or optimizers.
//! Given a seed, a rollout on CPU is the same tokens and verdicts every time; the `n` samples
//! of a prompt are contiguous; every sample comes back with a verdict (a verifier failure is an
//! `error` verdict, never a lost row).
//!
//! Entry points: [`Sampler::sample`] (a training rollout), [`Sampler::validate`] (greedy or
//! sampled validation), [`Sampler::validate_jumps`] (λ candidates of a jump decoded together).
//!
//! ```
//! use std::sync::Arc;
//! use next_model::{LoadOptions, Model, Tokenizer};
//! use next_rollout::{Prompted, Sampler, SamplingConfig};
//! use next_verifiers::{Context, Pool, Registry};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let base = next_model::testing::rust_model(3);
//! let tok = Tokenizer::load(base.path())?;
//! let model = Model::load(base.path(), LoadOptions::default())?;
//! let (registry, pool) = (Registry::default(), Pool::new(1)?);
//! let sampler = Sampler {
//!     model: &model,
//!     tokenizer: &tok,
//!     registry: &registry,
//!     pool: &pool,
//!     stop: model.stop_tokens(&tok),
//! };
//! let prompt = Prompted {
//!     ids: tok.encode("12+3=", false)?,
//!     ground_truth: serde_json::json!("15"),
//!     context: Arc::new(Context {
//!         prompt: "12+3=".into(),
//!         data_source: "arith".into(),
//!         extra_info: serde_json::Value::Null,
//!     }),
//! };
//! let cfg = SamplingConfig {
//!     n: 4,
//!     temperature: 1.0,
//!     top_p: 1.0,
//!     top_k: 0,
//!     max_new_tokens: 4,
//!     stop: vec![],
//!     max_batch: 8,
//! };
//! let rollout = sampler.sample(&[prompt], &cfg, 42)?;
//! assert_eq!(rollout.samples.len(), 4);
//! // An untrained model's answers are judged like any other (by the `exact` verifier).
//! assert!(rollout.samples.iter().all(|s| s.verdict.reward == 0.0 || s.verdict.correct));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use next_model::{generate_with, Model, SamplingParams, StopTokens, Tokenizer};
use next_verifiers::{Context, Job, Pool, Registry, Verdict};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] next_model::Error),
    #[error(transparent)]
    Verifier(#[from] next_verifiers::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to sample.
#[derive(Debug, Clone)]
pub struct SamplingConfig {
    /// Samples per prompt.
    pub n: usize,
    /// 0 decodes greedily.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// A response ends after the first of these strings (the rest is dropped).
    pub stop: Vec<String>,
    /// Most sequences decoded in one batch.
    pub max_batch: usize,
}

/// A tokenized prompt and what judges its responses.
#[derive(Debug, Clone)]
pub struct Prompted {
    pub ids: Vec<i64>,
    pub ground_truth: Value,
    /// The rendered prompt, its `data_source` (which picks the verifier) and `extra_info`:
    /// shared with every verifier job of its responses.
    pub context: Arc<Context>,
}

impl Prompted {
    pub fn data_source(&self) -> &str {
        &self.context.data_source
    }
}

/// One sampled response.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of its prompt; the `n` samples of a prompt are contiguous.
    pub prompt: usize,
    pub response_ids: Vec<i64>,
    /// Behaviour log-probabilities of `response_ids` under the sampling temperature.
    pub logprobs: Vec<f32>,
    /// Entropy of the sampling distribution at each response token (empty when greedy).
    pub entropy: Vec<f32>,
    pub text: String,
    /// Ended with EOS or a stop string (not cut by `max_new_tokens`).
    pub finished: bool,
    pub verdict: Verdict,
}

/// The sampler: a model, its tokenizer, and the verifiers.
pub struct Sampler<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub registry: &'a Registry,
    pub pool: &'a Pool,
    /// Where responses end, and what pads a batch ([`Model::stop_tokens`]).
    pub stop: StopTokens,
}

impl std::fmt::Debug for Sampler<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("stop", &self.stop).finish()
    }
}

/// The samples of one call, and where its time went.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub samples: Vec<Sample>,
    /// Seconds spent generating.
    pub gen_s: f64,
    /// Seconds spent verifying.
    pub verify_s: f64,
}

/// Validation results: mean reward per data source, and overall.
#[derive(Debug, Clone)]
pub struct Validation {
    pub mean_by_source: BTreeMap<String, f64>,
    pub mean: f64,
    pub samples: Vec<Sample>,
}

/// Cuts `ids` after the first token at which the decoded text contains a stop string.
fn cut_at_stop(tok: &Tokenizer, ids: &[i64], stop: &[String]) -> Result<Option<usize>> {
    if stop.is_empty() {
        return Ok(None);
    }
    let full = tok.decode(ids, true)?;
    if !stop.iter().any(|s| full.contains(s.as_str())) {
        return Ok(None);
    }
    for k in 1..=ids.len() {
        let text = tok.decode(&ids[..k], true)?;
        if stop.iter().any(|s| text.contains(s.as_str())) {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

impl Sampler<'_> {
    /// Samples `cfg.n` responses for every prompt (deterministic given `seed` on CPU) and
    /// judges them all.
    pub fn sample(&self, prompts: &[Prompted], cfg: &SamplingConfig, seed: u64) -> Result<Rollout> {
        self.sample_with(prompts, cfg, seed, None)
    }

    /// As [`Sampler::sample`], each prompt with its coefficient of the model's jump branches
    /// (`jump_scale[i]` for prompt i; see `next_model::Model::set_jump`).
    pub fn sample_with(
        &self,
        prompts: &[Prompted],
        cfg: &SamplingConfig,
        seed: u64,
        jump_scale: Option<&[f32]>,
    ) -> Result<Rollout> {
        let start = std::time::Instant::now();
        let seqs: Vec<(usize, &Vec<i64>)> = prompts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| std::iter::repeat_n((i, &p.ids), cfg.n))
            .collect();
        let mut samples = Vec::with_capacity(seqs.len());
        for (chunk_index, chunk) in seqs.chunks(cfg.max_batch.max(1)).enumerate() {
            let params = SamplingParams {
                max_new_tokens: cfg.max_new_tokens,
                temperature: cfg.temperature,
                top_p: cfg.top_p,
                top_k: cfg.top_k,
                seed: seed
                    .wrapping_add(chunk_index as u64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15),
                eos_token_ids: self.stop.eos.clone(),
                pad_token_id: self.stop.pad,
            };
            let batch: Vec<Vec<i64>> = chunk.iter().map(|(_, ids)| (*ids).clone()).collect();
            let scales: Option<Vec<f32>> =
                jump_scale.map(|s| chunk.iter().map(|&(p, _)| s[p]).collect());
            let g = generate_with(self.model, &batch, &params, scales.as_deref())?;
            for ((((&(prompt, _), mut ids), mut lps), mut ents), mut finished) in chunk
                .iter()
                .zip(g.tokens)
                .zip(g.logprobs)
                .zip(g.entropy)
                .zip(g.finished)
            {
                if let Some(k) = cut_at_stop(self.tokenizer, &ids, &cfg.stop)? {
                    ids.truncate(k);
                    lps.truncate(k);
                    ents.truncate(k);
                    finished = true;
                }
                let text = self.tokenizer.decode(&ids, true)?;
                samples.push(Sample {
                    prompt,
                    response_ids: ids,
                    logprobs: lps,
                    entropy: ents,
                    text,
                    finished,
                    verdict: Verdict::error("not verified"),
                });
            }
        }
        let gen_s = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut jobs = Vec::with_capacity(samples.len());
        for s in &samples {
            let p = &prompts[s.prompt];
            jobs.push(Job {
                verifier: self.registry.for_source(p.data_source())?,
                response: s.text.clone(),
                ground_truth: p.ground_truth.clone(),
                context: p.context.clone(),
            });
        }
        for (s, v) in samples.iter_mut().zip(self.pool.run(jobs, |_, _| {})) {
            s.verdict = v;
        }
        Ok(Rollout {
            samples,
            gen_s,
            verify_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Greedy mean@1 when `n` is 1 and `temperature` 0, sampled mean@n otherwise.
    pub fn validate(
        &self,
        prompts: &[Prompted],
        cfg: &SamplingConfig,
        seed: u64,
    ) -> Result<Validation> {
        let samples = self.sample(prompts, cfg, seed)?.samples;
        Ok(Validation::of(prompts, samples))
    }

    /// One validation per λ of `lambdas`, all decoded together: the prompts repeated once per
    /// λ, each copy with its own coefficient of the model's jump branches. Equal to validating
    /// the adapter plus λ times the jump, one λ at a time.
    pub fn validate_jumps(
        &self,
        prompts: &[Prompted],
        cfg: &SamplingConfig,
        lambdas: &[f64],
    ) -> Result<Vec<Validation>> {
        let all: Vec<Prompted> = lambdas
            .iter()
            .flat_map(|_| prompts.iter().cloned())
            .collect();
        let scales: Vec<f32> = lambdas
            .iter()
            .flat_map(|&l| std::iter::repeat_n(l as f32, prompts.len()))
            .collect();
        let mut samples = self.sample_with(&all, cfg, 0, Some(&scales))?.samples;
        let per = prompts.len() * cfg.n;
        let mut out = Vec::with_capacity(lambdas.len());
        for _ in lambdas {
            let rest = samples.split_off(per.min(samples.len()));
            let mut mine = std::mem::replace(&mut samples, rest);
            for s in &mut mine {
                s.prompt %= prompts.len();
            }
            out.push(Validation::of(prompts, mine));
        }
        Ok(out)
    }
}

impl Validation {
    /// The means of judged `samples` of `prompts`, per data source and overall.
    fn of(prompts: &[Prompted], samples: Vec<Sample>) -> Self {
        let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for s in &samples {
            let e = sums
                .entry(prompts[s.prompt].data_source().to_string())
                .or_default();
            e.0 += s.verdict.reward;
            e.1 += 1;
        }
        let total: f64 = samples.iter().map(|s| s.verdict.reward).sum();
        Validation {
            mean_by_source: sums
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
            mean: total / samples.len().max(1) as f64,
            samples,
        }
    }

    /// The greedy validation score the trainer reports: the mean over data sources of each
    /// source's mean reward.
    pub fn score(&self) -> f64 {
        let means: Vec<f64> = self.mean_by_source.values().copied().collect();
        means.iter().sum::<f64>() / means.len().max(1) as f64
    }

    /// Tokens generated.
    pub fn tokens(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| s.response_ids.len() as u64)
            .sum()
    }
}
