//! `next-rollout`: sampling for RL — `n` responses per prompt in left-padded batches with the
//! KV cache (temperature, top-p, top-k, EOS, stop strings, max new tokens, explicit seeds),
//! each decoded and judged by the verifier pool; and validation (greedy mean@1, sampled mean@N).
//!
//! The model stays on the calling thread (`Tensor` is not `Sync`); only token-free strings and
//! JSON cross to the verifier workers.
//!
//! Architecture invariant: this crate knows nothing of advantages, losses or optimizers.

use std::collections::BTreeMap;

use next_model::{generate, Model, SamplingParams, StopTokens, Tokenizer};
use next_verifiers::{Job, Pool, Registry, Verdict};
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
    pub data_source: String,
    pub ground_truth: Value,
}

/// One sampled response.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of its prompt; the `n` samples of a prompt are contiguous.
    pub prompt: usize,
    pub response_ids: Vec<i64>,
    /// Behaviour log-probabilities of `response_ids` under the sampling temperature.
    pub logprobs: Vec<f32>,
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
            let g = generate(self.model, &batch, &params)?;
            for (((&(prompt, _), mut ids), mut lps), mut finished) in
                chunk.iter().zip(g.tokens).zip(g.logprobs).zip(g.finished)
            {
                if let Some(k) = cut_at_stop(self.tokenizer, &ids, &cfg.stop)? {
                    ids.truncate(k);
                    lps.truncate(k);
                    finished = true;
                }
                let text = self.tokenizer.decode(&ids, true)?;
                samples.push(Sample {
                    prompt,
                    response_ids: ids,
                    logprobs: lps,
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
                verifier: self.registry.for_source(&p.data_source)?,
                response: s.text.clone(),
                ground_truth: p.ground_truth.clone(),
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
        let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for s in &samples {
            let e = sums
                .entry(prompts[s.prompt].data_source.clone())
                .or_default();
            e.0 += s.verdict.reward;
            e.1 += 1;
        }
        let total: f64 = samples.iter().map(|s| s.verdict.reward).sum();
        Ok(Validation {
            mean_by_source: sums
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
            mean: total / samples.len().max(1) as f64,
            samples,
        })
    }
}
