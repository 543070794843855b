//! The decoder: embeddings, `DecoderLayer`s (attention with RoPE/GQA, SwiGLU MLP), final norm
//! and LM head, with optional LoRA on every linear layer and a preallocated KV cache.
//!
//! Parameter names are the HF checkpoint keys (`model.layers.0.self_attn.q_proj.weight`), so
//! loading, saving and PEFT adapter keys map one-to-one onto the layers. `layers.rs` is the
//! architecture, `weights.rs` where weights come from, `adapter.rs` the LoRA adapter of a model,
//! `jump.rs` the candidates of a jump that decode together.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::config::{kind_name, Config};
use crate::error::{Error, Result};
use crate::io;
use crate::stop::{GenerationConfig, StopTokens};
use crate::tokenizer::Tokenizer;

mod adapter;
mod jump;
mod layers;
mod weights;

pub use jump::{FactorLine, FactorTerms, Jump, JumpTerms, RankOneTerms};
use layers::{DecoderLayer, Mode, RmsNorm, Rope, PROJECTIONS};
pub use layers::{FactorBranch, JumpBranch, Linear};
pub use weights::parameter_shapes;
use weights::Source;

/// How to place a model when loading it.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Compute dtype; `None` keeps the dtype the checkpoint declares (f32 if it declares none).
    pub dtype: Option<Kind>,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: None,
            device: Device::Cpu,
        }
    }
}

/// A decoder-only causal language model (Llama, Qwen2 or Qwen3 layout).
#[derive(Debug)]
pub struct Model {
    pub config: Config,
    /// `generation_config.json` of the directory the model came from (empty if none).
    pub generation: GenerationConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embeddings.
    lm_head: Option<Tensor>,
    inv_freq: Tensor,
    kind: Kind,
    device: Device,
    adapter_enabled: bool,
    train: bool,
    lora_config: Option<crate::lora::LoraConfig>,
}

/// Preallocated keys and values for incremental decoding of one batch.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    /// `[B, capacity]`: which cached positions hold real (non-padding) tokens.
    key_valid: Tensor,
    /// `[B]`: number of real tokens seen so far per row (the next position id).
    seen: Tensor,
    len: i64,
    capacity: i64,
}

impl KvCache {
    /// Number of positions (including padding) already in the cache.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the rows `rows` (indices into the current rows, in the order given), so
    /// that decoding stops paying for rows that have finished.
    pub fn retain(&mut self, rows: &Tensor) {
        for (k, v) in &mut self.layers {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
        self.key_valid = self.key_valid.index_select(0, rows);
        self.seen = self.seen.index_select(0, rows);
    }
}

/// The `[B, T]` int64 token ids and `[B, T]` attention mask (1 = token, 0 = padding) of a
/// left-padded batch, and optionally each row's coefficient of the model's jump branches.
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    /// `[B]` f32: row b runs with λ_b times the jump set by [`Model::set_jump`] (None: without).
    pub jump_scale: Option<Tensor>,
}

impl Batch {
    /// Left-pads token sequences into one batch on `device`.
    pub fn left_padded(seqs: &[Vec<i64>], pad_id: i64, device: Device) -> Result<Self> {
        let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if seqs.is_empty() || width == 0 {
            return Err(Error::Usage(
                "cannot build a batch from empty token sequences".into(),
            ));
        }
        let mut ids = Vec::with_capacity(seqs.len() * width);
        let mut mask = Vec::with_capacity(seqs.len() * width);
        for s in seqs {
            let pad = width - s.len();
            ids.extend(std::iter::repeat_n(pad_id, pad).chain(s.iter().copied()));
            mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, s.len())));
        }
        let shape = [seqs.len() as i64, width as i64];
        Ok(Batch {
            input_ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            attention_mask: Tensor::from_slice(&mask).view(shape).to_device(device),
            jump_scale: None,
        })
    }

    /// Gives each row its coefficient of the jump branches (one per row).
    pub fn with_jump_scale(mut self, scale: &[f32]) -> Result<Self> {
        let b = self.input_ids.size()[0];
        if scale.len() as i64 != b {
            return Err(Error::Usage(format!(
                "{} jump coefficients for a batch of {b} rows",
                scale.len()
            )));
        }
        self.jump_scale = Some(Tensor::from_slice(scale).to_device(self.input_ids.device()));
        Ok(self)
    }

    /// Flat indices (into `[B * (T-1)]` next-token positions) of the last `lens[b]` predicted
    /// tokens of each row, in row order: the response tokens a loss is taken over.
    fn suffix_positions(&self, lens: &[usize]) -> Result<Tensor> {
        let (b, w) = (self.input_ids.size()[0], self.input_ids.size()[1]);
        if lens.len() as i64 != b || lens.iter().any(|&l| l as i64 > w - 1) {
            return Err(Error::Usage(format!(
                "response lengths {lens:?} do not fit a batch of {b} rows of width {w}"
            )));
        }
        let mut idx = Vec::with_capacity(lens.iter().sum());
        for (row, &l) in lens.iter().enumerate() {
            let start = row as i64 * (w - 1) + (w - 1 - l as i64);
            idx.extend(start..start + l as i64);
        }
        Ok(Tensor::from_slice(&idx).to_device(self.input_ids.device()))
    }

    /// A float mask `[B, T-1]` over next-token positions (as [`Model::token_logprobs`] returns
    /// them) that is 1 on the last `lens[b]` predicted tokens of each row: the response or
    /// answer that follows the prompt, which is what a loss is taken over.
    pub fn suffix_mask(&self, lens: &[usize]) -> Tensor {
        let device = self.input_ids.device();
        let w = self.input_ids.size()[1];
        let pos = Tensor::arange(w - 1, (Kind::Int64, device)).view([1, -1]);
        let first = Tensor::from_slice(&lens.iter().map(|&l| l as i64).collect::<Vec<_>>())
            .to_device(device)
            .view([-1, 1])
            .neg()
            + (w - 1);
        pos.ge_tensor(&first).to_kind(Kind::Float)
    }
}

fn check_ids(config: &Config, ids: &Tensor) -> Result<()> {
    if ids.numel() == 0 {
        return Ok(());
    }
    let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
    if lo < 0 || hi >= config.vocab_size {
        return Err(Error::Usage(format!(
            "token id out of range [0, {}): found ids between {lo} and {hi}",
            config.vocab_size
        )));
    }
    Ok(())
}

impl Model {
    /// Loads `config.json`, `generation_config.json` (if any) and the safetensors weights
    /// (single file or sharded with an index) of an HF model directory.
    pub fn load(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let kind = opts.dtype.or(config.dtype).unwrap_or(Kind::Float);
        let src = Source::checkpoint(dir, kind, opts.device)?;
        let mut model = Self::build(config, &src)?;
        model.generation = GenerationConfig::load(dir)?.unwrap_or_default();
        Ok(model)
    }

    /// A randomly initialised model (normal(0, `init_std`) weights, unit norms, zero biases),
    /// deterministic given `seed` on CPU.
    pub fn random(config: Config, seed: u64, init_std: f64, opts: LoadOptions) -> Result<Self> {
        let kind = opts.dtype.or(config.dtype).unwrap_or(Kind::Float);
        let src = Source::random(&config, seed, init_std, kind, opts.device);
        let mut config = config;
        config.dtype = Some(kind);
        Self::build(config, &src)
    }

    fn build(config: Config, src: &Source) -> Result<Self> {
        let c = &config;
        let (h, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
        let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = |name: &str| -> Result<Option<RmsNorm>> {
                c.qk_norm
                    .then(|| src.norm(&format!("{p}.self_attn.{name}.weight"), hd, eps))
                    .transpose()
            };
            layers.push(DecoderLayer {
                proj: src.projections(c, &p)?,
                q_norm: qk_norm("q_norm")?,
                k_norm: qk_norm("k_norm")?,
                input_layernorm: src.norm(&format!("{p}.input_layernorm.weight"), h, eps)?,
                post_attention_layernorm: src.norm(
                    &format!("{p}.post_attention_layernorm.weight"),
                    h,
                    eps,
                )?,
                n_heads: c.num_attention_heads,
                n_kv_heads: c.num_key_value_heads,
                head_dim: hd,
            });
        }
        let embed_tokens = src.get("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(src.get("lm_head.weight", &[c.vocab_size, h])?)
        };
        let exponent = Tensor::arange_start_step(0, hd, 2, (Kind::Int64, src.device))
            .to_kind(Kind::Float)
            / hd as f64;
        let inv_freq = Tensor::pow_scalar(c.rope_theta, &exponent).reciprocal();
        Ok(Model {
            norm: src.norm("model.norm.weight", h, eps)?,
            embed_tokens,
            layers,
            lm_head,
            inv_freq,
            kind: src.kind,
            device: src.device,
            adapter_enabled: true,
            train: false,
            lora_config: None,
            generation: GenerationConfig::default(),
            config,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The tokens that end a response and the one that pads a batch, for this model with
    /// `tok` (see [`StopTokens`]).
    pub fn stop_tokens(&self, tok: &Tokenizer) -> StopTokens {
        StopTokens::resolve(&self.generation, &self.config, tok)
    }

    /// Enables or disables the LoRA branches (disabled = the base model, RL's reference policy).
    pub fn set_adapter_enabled(&mut self, enabled: bool) {
        self.adapter_enabled = enabled;
    }

    /// Training mode turns LoRA dropout on.
    pub fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    fn mode<'a>(&self, batch: &'a Batch) -> Mode<'a> {
        Mode {
            adapter: self.adapter_enabled,
            train: self.train,
            jump_scale: batch.jump_scale.as_ref(),
        }
    }

    /// A KV cache for `batch` rows and up to `capacity` positions.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        let c = &self.config;
        let shape = [batch, c.num_key_value_heads, capacity, c.head_dim];
        let opts = (self.kind, self.device);
        KvCache {
            layers: (0..c.num_hidden_layers)
                .map(|_| (Tensor::zeros(shape, opts), Tensor::zeros(shape, opts)))
                .collect(),
            key_valid: Tensor::zeros([batch, capacity], (Kind::Bool, self.device)),
            seen: Tensor::zeros([batch], (Kind::Int64, self.device)),
            len: 0,
            capacity,
        }
    }

    /// Logits `[B, T, vocab]` for a left-padded batch; with a cache, the tokens are appended to
    /// it and attend to everything cached before them.
    pub fn forward(&self, batch: &Batch, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.hidden_states(batch, cache)?;
        Ok(self.logits(&h))
    }

    /// Projects hidden states to vocabulary logits.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.linear(
            self.lm_head.as_ref().unwrap_or(&self.embed_tokens),
            None::<&Tensor>,
        )
    }

    /// Final-norm hidden states `[B, T, hidden]`.
    pub fn hidden_states(&self, batch: &Batch, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let ids = &batch.input_ids;
        let mask = batch
            .attention_mask
            .to_device(self.device)
            .to_kind(Kind::Int64);
        let (b, t) = ids
            .size2()
            .map_err(|_| Error::Usage(format!("input_ids must be [B, T], got {:?}", ids.size())))?;
        if mask.size() != [b, t] {
            return Err(Error::Usage(format!(
                "attention_mask has shape {:?}, input_ids {:?}",
                mask.size(),
                ids.size()
            )));
        }
        let past = cache.as_ref().map_or(0, |c| c.len);
        // Decoding steps feed sampled ids, which are in range; check everything else.
        if past == 0 || t > 1 {
            check_ids(&self.config, ids)?;
        }
        let ids = ids.to_device(self.device);
        if let Some(c) = cache.as_ref() {
            if c.layers.len() != self.layers.len()
                || c.key_valid.size()[0] != b
                || past + t > c.capacity
            {
                return Err(Error::Usage(format!(
                    "KV cache for {} rows and {} positions cannot take {b} rows at positions {past}..{}",
                    c.key_valid.size()[0],
                    c.capacity,
                    past + t
                )));
            }
        }
        // Position ids count real tokens only, as `generate` does for left-padded batches;
        // padding gets position 1 (transformers' convention; its outputs are never attended).
        let seen = cache
            .as_ref()
            .map(|c| c.seen.shallow_clone())
            .unwrap_or_else(|| Tensor::zeros([b], (Kind::Int64, self.device)));
        let counts = mask.cumsum(1, Kind::Int64);
        let positions =
            (counts.shallow_clone() - 1 + seen.unsqueeze(1)).masked_fill(&mask.eq(0), 1);
        let total = past + t;
        let key_valid = match cache.as_mut() {
            Some(c) => {
                c.key_valid.narrow(1, past, t).copy_(&mask.ne(0));
                c.seen = &seen + counts.select(1, t - 1);
                c.key_valid.narrow(1, 0, total)
            }
            None => mask.ne(0),
        };
        let attn_mask = if cache.is_none() && mask.min().int64_value(&[]) == 1 {
            // No padding and no cache: plain causal attention (the fused kernel).
            None
        } else if t == 1 {
            // One new token (decoding): it sees every real cached token and itself.
            let own = Tensor::ones([b, 1], (Kind::Bool, self.device));
            Some(Tensor::cat(&[key_valid.narrow(1, 0, past), own], 1).view([b, 1, 1, total]))
        } else {
            // Query i (absolute position past + i) sees key j <= past + i that is a real token,
            // and always itself, so that padding rows never attend to nothing (NaN).
            let q_idx = Tensor::arange_start(past, total, (Kind::Int64, self.device)).view([t, 1]);
            let k_idx = Tensor::arange(total, (Kind::Int64, self.device)).view([1, total]);
            let causal = k_idx.le_tensor(&q_idx);
            let diag = k_idx.eq_tensor(&q_idx);
            Some(
                causal
                    .unsqueeze(0)
                    .logical_and(&key_valid.unsqueeze(1))
                    .logical_or(&diag.unsqueeze(0))
                    .unsqueeze(1),
            )
        };

        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        let rope = Rope {
            cos: emb.cos().to_kind(self.kind).unsqueeze(1),
            sin: emb.sin().to_kind(self.kind).unsqueeze(1),
        };

        let mode = self.mode(batch);
        let mut x = Tensor::embedding(&self.embed_tokens, &ids, -1, false, false);
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_mut().map(|c| {
                let (k, v) = &mut c.layers[i];
                (k, v, past)
            });
            x = layer.forward(&x, &rope, attn_mask.as_ref(), kv, mode);
        }
        if let Some(c) = cache {
            c.len = total;
        }
        Ok(self.norm.forward(&x))
    }

    /// Log-probabilities `[B, T-1]` of each next token under `softmax(logits / temperature)`:
    /// entry `(b, i)` scores `input_ids[b, i + 1]` given the tokens up to `i`.
    pub fn token_logprobs(&self, batch: &Batch, temperature: f64) -> Result<Tensor> {
        Ok(self
            .token_logprobs_with_entropy(batch, temperature, false)?
            .0)
    }

    /// As [`Model::token_logprobs`], and with `entropy` also the entropy `[B, T-1]` of each
    /// next-token distribution (computed without gradient, for metrics).
    pub fn token_logprobs_with_entropy(
        &self,
        batch: &Batch,
        temperature: f64,
        entropy: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if temperature <= 0.0 {
            return Err(Error::Usage(format!(
                "temperature must be positive, got {temperature}"
            )));
        }
        let logits = self.forward(batch, None)?;
        let t = logits.size()[1];
        let logits = logits.narrow(1, 0, t - 1).to_kind(Kind::Float);
        let logits = if temperature == 1.0 {
            logits
        } else {
            logits / temperature
        };
        let lp = logits.log_softmax(-1, Kind::Float);
        let next = batch
            .input_ids
            .to_device(self.device)
            .narrow(1, 1, t - 1)
            .unsqueeze(-1);
        let ent = entropy
            .then(|| tch::no_grad(|| -(lp.exp() * &lp).sum_dim_intlist(-1, false, Kind::Float)));
        Ok((lp.gather(-1, &next, false).squeeze_dim(-1), ent))
    }

    /// The final hidden states `[N, hidden]` at the positions that predict the last `lens[b]`
    /// tokens of each row (row order), and those tokens `[N]`: a response's positions only, so
    /// that the vocabulary projection can be taken in chunks ([`Model::token_head`]).
    pub fn response_hidden(&self, batch: &Batch, lens: &[usize]) -> Result<(Tensor, Tensor)> {
        let idx = batch.suffix_positions(lens)?;
        let h = self.hidden_states(batch, None)?;
        let (b, t, d) = h.size3().map_err(|e| Error::Usage(e.to_string()))?;
        let h = h
            .narrow(1, 0, t - 1)
            .reshape([b * (t - 1), d])
            .index_select(0, &idx);
        let targets = batch
            .input_ids
            .to_device(self.device)
            .narrow(1, 1, t - 1)
            .reshape([-1])
            .index_select(0, &idx);
        Ok((h, targets))
    }

    /// Log-probabilities `[N]` of `targets` under `softmax(logits / temperature)` for hidden
    /// states `[N, hidden]`, computed `chunk` rows at a time so that no more than
    /// `[chunk, vocab]` logits exist at once; with `entropy`, also each row's entropy (no
    /// gradient). Equal to [`Model::token_logprobs`] at those positions.
    pub fn token_head(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        temperature: f64,
        chunk: i64,
        entropy: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if temperature <= 0.0 || chunk <= 0 {
            return Err(Error::Usage(format!(
                "temperature and chunk must be positive, got {temperature} and {chunk}"
            )));
        }
        let n = hidden.size()[0];
        let (mut lps, mut ents) = (vec![], vec![]);
        let mut start = 0;
        while start < n {
            let c = chunk.min(n - start);
            let logits = self
                .logits(&hidden.narrow(0, start, c))
                .to_kind(Kind::Float);
            let logits = if temperature == 1.0 {
                logits
            } else {
                logits / temperature
            };
            let lp = logits.log_softmax(-1, Kind::Float);
            if entropy {
                ents.push(tch::no_grad(|| {
                    -(lp.exp() * &lp).sum_dim_intlist(-1, false, Kind::Float)
                }));
            }
            let tgt = targets.narrow(0, start, c).unsqueeze(-1);
            lps.push(lp.gather(-1, &tgt, false).squeeze_dim(-1));
            start += c;
        }
        let cat = |v: Vec<Tensor>| {
            if v.is_empty() {
                Tensor::zeros([0], (Kind::Float, self.device))
            } else {
                Tensor::cat(&v, 0)
            }
        };
        Ok((cat(lps), entropy.then(|| cat(ents))))
    }

    /// Every linear layer LoRA can adapt, with its module path (`model.layers.0.mlp.up_proj`).
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (name, lin) in PROJECTIONS.iter().zip(&l.proj) {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// Mutable access to the linear layers, in the order of [`Model::linears`].
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (name, lin) in PROJECTIONS.iter().zip(&mut l.proj) {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// The base weights under their HF checkpoint keys (without a tied `lm_head`). The order
    /// (norms of every layer, then every linear) is the parameter order of pretraining, whose
    /// gradient-norm sum depends on it: changing it would change the pretrained bases.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.shallow_clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let norms = [
                ("input_layernorm", Some(&l.input_layernorm)),
                (
                    "post_attention_layernorm",
                    Some(&l.post_attention_layernorm),
                ),
                ("self_attn.q_norm", l.q_norm.as_ref()),
                ("self_attn.k_norm", l.k_norm.as_ref()),
            ];
            for (key, norm) in norms {
                if let Some(n) = norm {
                    out.push((format!("{p}.{key}.weight"), n.weight.shallow_clone()));
                }
            }
        }
        for (name, lin) in self.linears() {
            out.push((format!("{name}.weight"), lin.weight.shallow_clone()));
            if let Some(b) = &lin.bias {
                out.push((format!("{name}.bias"), b.shallow_clone()));
            }
        }
        out.push((
            "model.norm.weight".to_string(),
            self.norm.weight.shallow_clone(),
        ));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), head.shallow_clone()));
        }
        out
    }

    /// Writes `config.json` and `model.safetensors` (base weights only; merge an adapter first
    /// to include it) into an HF model directory that `transformers` loads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut raw = self.config.raw.clone();
        let name = serde_json::Value::from(kind_name(self.kind));
        if raw.contains_key("torch_dtype") {
            raw.insert("torch_dtype".into(), name.clone());
        }
        raw.insert("dtype".into(), name);
        io::write_safetensors(&dir.join("model.safetensors"), &self.named_weights())?;
        Ok(next_files::json::write(&dir.join("config.json"), &raw)?)
    }
}
