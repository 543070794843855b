//! Batched autoregressive decoding with the KV cache: greedy or seeded sampling with
//! temperature, top-k and top-p, stopping at EOS; returns tokens and their log-probabilities.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::{Batch, Model};
use crate::rng::Normal;

// `generate` was their home; `next_model::generate::{GenerationConfig, StopTokens}` still work.
pub use crate::stop::{GenerationConfig, StopTokens};

/// How to decode.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// 1.0 disables nucleus filtering.
    pub top_p: f64,
    /// 0 disables top-k filtering.
    pub top_k: usize,
    pub seed: u64,
    /// Decoding of a row stops after any of these.
    pub eos_token_ids: Vec<i64>,
    /// Fills finished rows and left padding.
    pub pad_token_id: i64,
}

/// Decoded continuations, one per prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated ids only, up to and including the EOS token when one was produced.
    pub tokens: Vec<Vec<i64>>,
    /// Log-probability of each generated token under `softmax(logits / temperature)`
    /// (under the raw logits when greedy).
    pub logprobs: Vec<Vec<f32>>,
    /// Whether each row ended with EOS (rather than reaching `max_new_tokens`).
    pub finished: Vec<bool>,
    /// Entropy of `softmax(logits / temperature)` at each generated token (empty when greedy):
    /// the policy's entropy on its own samples, at no extra forward pass.
    pub entropy: Vec<Vec<f32>>,
}

impl SamplingParams {
    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Usage(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Usage(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Chooses the next token of every row: returns `(tokens [B], logprobs [B], entropy [B])`
/// (no entropy when greedy). Sampling draws row b's token with the uniform `u[b]`.
fn choose(logits: &Tensor, p: &SamplingParams, u: &[f32]) -> (Tensor, Tensor, Option<Tensor>) {
    let logits = logits.to_kind(Kind::Float);
    if p.temperature == 0.0 {
        let next = logits.argmax(-1, false);
        let lp = logits
            .log_softmax(-1, Kind::Float)
            .gather(-1, &next.unsqueeze(-1), false)
            .squeeze_dim(-1);
        return (next, lp, None);
    }
    let scaled = logits / p.temperature;
    let logp = scaled.log_softmax(-1, Kind::Float);
    let entropy = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
    let mut filtered = scaled.shallow_clone();
    let vocab = filtered.size()[1];
    if p.top_k > 0 && (p.top_k as i64) < vocab {
        let (vals, _) = filtered.topk(p.top_k as i64, -1, true, true);
        let kth = vals.narrow(1, p.top_k as i64 - 1, 1);
        filtered = filtered.masked_fill(&filtered.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    if p.top_p < 1.0 {
        let (sorted, idx) = filtered.sort(-1, true);
        let probs = sorted.softmax(-1, Kind::Float);
        // Drop a token when the tokens ranked above it already reach top_p (keep at least one).
        let before = probs.cumsum(-1, Kind::Float) - &probs;
        let drop_sorted = before.gt(p.top_p);
        let drop = drop_sorted.scatter(-1, &idx, &drop_sorted);
        filtered = filtered.masked_fill(&drop, f64::NEG_INFINITY);
    }
    let probs = filtered.softmax(-1, Kind::Float);
    let cdf = probs.cumsum(-1, Kind::Float);
    let b = cdf.size()[0];
    let u = Tensor::from_slice(u).to_device(cdf.device()).view([b, 1]);
    // Inverse-CDF sampling with host-drawn uniforms: deterministic given the seed.
    let total = cdf.narrow(1, vocab - 1, 1);
    let next = cdf
        .lt_tensor(&(u * total))
        .sum_dim_intlist(-1, false, Kind::Int64)
        .clamp_max(vocab - 1);
    let lp = logp.gather(-1, &next.unsqueeze(-1), false).squeeze_dim(-1);
    (next, lp, Some(entropy))
}

/// Decodes continuations of `prompts` (token ids) as one left-padded batch.
pub fn generate(model: &Model, prompts: &[Vec<i64>], p: &SamplingParams) -> Result<Generation> {
    generate_with(model, prompts, p, None)
}

/// As [`generate`], with each prompt's coefficient of the model's jump branches
/// ([`Model::set_jump`]): candidates that differ only in λ decode together.
pub fn generate_with(
    model: &Model,
    prompts: &[Vec<i64>],
    p: &SamplingParams,
    jump_scale: Option<&[f32]>,
) -> Result<Generation> {
    p.validate()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::Usage(format!(
            "prompt {i} is empty: at least one token is needed"
        )));
    }
    let mut batch = Batch::left_padded(prompts, p.pad_token_id, model.device())?;
    if let Some(scale) = jump_scale {
        batch = batch.with_jump_scale(scale)?;
    }
    let b = prompts.len();
    let width = batch.input_ids.size()[1];
    let mut rng = Normal::new(p.seed);
    let mut tokens = vec![Vec::new(); b];
    let mut logprobs = vec![Vec::new(); b];
    let mut entropy = vec![Vec::new(); b];
    let mut finished = vec![false; b];
    tch::no_grad(|| -> Result<()> {
        let mut cache = model.new_cache(b as i64, width + p.max_new_tokens as i64);
        // Only the last prompt position's logits are needed: project it alone, not the whole
        // prompt ([B, T, vocab] would be the largest tensor of the step on a real vocabulary).
        let last = model
            .hidden_states(&batch, Some(&mut cache))?
            .narrow(1, width - 1, 1);
        let mut logits = model.logits(&last).select(1, 0);
        // Row j of the decoding batch continues prompt `rows[j]`; finished rows are dropped
        // from it (cache included) once they are a quarter of it, so that a few long answers
        // do not keep every finished row computing. Rows never interact, so what each row
        // decodes is unchanged.
        let mut rows: Vec<usize> = (0..b).collect();
        let mut scale = batch.jump_scale.as_ref().map(Tensor::shallow_clone);
        for step in 0..p.max_new_tokens {
            // One uniform per prompt and step whichever rows are left, as without dropping.
            let u: Vec<f32> = if p.temperature == 0.0 {
                vec![]
            } else {
                let all = rng.unit(b);
                rows.iter().map(|&i| all[i]).collect()
            };
            let (next, lp, ent) = choose(&logits, p, &u);
            let next_v = Vec::<i64>::try_from(&next.to_device(tch::Device::Cpu))?;
            let lp_v = Vec::<f32>::try_from(&lp.to_device(tch::Device::Cpu))?;
            let ent_v = match &ent {
                Some(e) => Vec::<f32>::try_from(&e.to_device(tch::Device::Cpu))?,
                None => vec![],
            };
            let mut feed = Vec::with_capacity(rows.len());
            for (j, &i) in rows.iter().enumerate() {
                if finished[i] {
                    feed.push(p.pad_token_id);
                    continue;
                }
                tokens[i].push(next_v[j]);
                logprobs[i].push(lp_v[j]);
                if let Some(e) = ent_v.get(j) {
                    entropy[i].push(*e);
                }
                if p.eos_token_ids.contains(&next_v[j]) {
                    finished[i] = true;
                }
                feed.push(next_v[j]);
            }
            let live: Vec<i64> = (0..rows.len())
                .filter(|&j| !finished[rows[j]])
                .map(|j| j as i64)
                .collect();
            if live.is_empty() || step + 1 == p.max_new_tokens {
                break;
            }
            if 4 * (rows.len() - live.len()) >= rows.len() {
                let keep = Tensor::from_slice(&live).to_device(model.device());
                cache.retain(&keep);
                scale = scale.map(|s| s.index_select(0, &keep));
                feed = live.iter().map(|&j| feed[j as usize]).collect();
                rows = live.iter().map(|&j| rows[j as usize]).collect();
            }
            let n = rows.len() as i64;
            let step_batch = Batch {
                input_ids: Tensor::from_slice(&feed)
                    .view([n, 1])
                    .to_device(model.device()),
                attention_mask: Tensor::ones([n, 1], (Kind::Int64, model.device())),
                jump_scale: scale.as_ref().map(Tensor::shallow_clone),
            };
            logits = model.forward(&step_batch, Some(&mut cache))?.select(1, 0);
        }
        Ok(())
    })?;
    Ok(Generation {
        tokens,
        logprobs,
        finished,
        entropy,
    })
}
