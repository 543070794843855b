//! The decoder: embeddings, `DecoderLayer`s (attention with RoPE/GQA, SwiGLU MLP), final norm
//! and LM head, with optional LoRA on every linear layer and a preallocated KV cache.
//!
//! Parameter names are the HF checkpoint keys (`model.layers.0.self_attn.q_proj.weight`), so
//! loading, saving and PEFT adapter keys map one-to-one onto the structs below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::config::{kind_name, Config};
use crate::error::{Error, Result};
use crate::io::{self, Loaded};
use crate::lora::Lora;

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

/// A linear layer `y = x W^T + b`, optionally with a LoRA branch.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

/// Switches that change the forward pass without changing the weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    pub adapter: bool,
    pub train: bool,
}

impl Linear {
    fn forward(&self, x: &Tensor, mode: Mode) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match &self.lora {
            Some(lora) if mode.adapter => y + lora.delta(x, mode.train),
            _ => y,
        }
    }
}

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Normalises in f32 and casts back before the weight, as transformers does.
    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let var = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let h = h * (var + self.eps).rsqrt();
        &self.weight * h.to_kind(kind)
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
}

/// Cosine and sine tables for the positions of one forward call, shaped `[B, 1, T, head_dim]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn apply(&self, x: &Tensor) -> Tensor {
        x * &self.cos + rotate_half(x) * &self.sin
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut Tensor, &mut Tensor, i64)>,
        mode: Mode,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input is [B, T, H]");
        let heads = |y: Tensor, n: i64, norm: &Option<RmsNorm>| {
            let y = y.view([b, t, n, self.head_dim]);
            let y = match norm {
                Some(norm) => norm.forward(&y),
                None => y,
            };
            y.transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(x, mode), self.n_heads, &self.q_norm);
        let k = heads(self.k_proj.forward(x, mode), self.n_kv_heads, &self.k_norm);
        let v = heads(self.v_proj.forward(x, mode), self.n_kv_heads, &None);
        let q = rope.apply(&q);
        let k = rope.apply(&k);
        let (k, v) = match cache {
            Some((kc, vc, past)) => {
                kc.narrow(2, past, t).copy_(&k);
                vc.narrow(2, past, t).copy_(&v);
                (kc.narrow(2, 0, past + t), vc.narrow(2, 0, past + t))
            }
            None => (k, v),
        };
        let groups = self.n_heads / self.n_kv_heads;
        let (k, v) = if groups > 1 {
            let expand = |y: Tensor| {
                let s = y.size();
                y.unsqueeze(2)
                    .expand([s[0], s[1], groups, s[2], s[3]], false)
                    .reshape([s[0], s[1] * groups, s[2], s[3]])
            };
            (expand(k), expand(v))
        } else {
            (k, v)
        };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none(),
            None,
            false,
        );
        let y = y
            .transpose(1, 2)
            .reshape([b, t, self.n_heads * self.head_dim]);
        self.o_proj.forward(&y, mode)
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, mode: Mode) -> Tensor {
        let g = self.gate_proj.forward(x, mode).silu();
        self.down_proj
            .forward(&(g * self.up_proj.forward(x, mode)), mode)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
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
}

/// Where the weights of a model come from; resolves keys and validates shapes and dtypes.
struct Source {
    tensors: BTreeMap<String, Loaded>,
    /// What to name in an error about a tensor that is not there.
    missing_in: PathBuf,
    kind: Kind,
    device: Device,
}

impl Source {
    fn get(&self, key: &str, shape: &[i64]) -> Result<Tensor> {
        let loaded = self.tensors.get(key).ok_or_else(|| Error::MissingTensor {
            path: self.missing_in.clone(),
            key: key.to_owned(),
        })?;
        let t = &loaded.tensor;
        if !io::is_float(t.kind()) {
            return Err(Error::TensorDtype {
                path: loaded.file.clone(),
                key: key.to_owned(),
                dtype: format!("{:?}", t.kind()),
            });
        }
        if t.size() != shape {
            return Err(Error::TensorShape {
                path: loaded.file.clone(),
                key: key.to_owned(),
                expected: shape.to_vec(),
                got: t.size(),
            });
        }
        Ok(t.to_kind(self.kind).to_device(self.device))
    }

    fn linear(&self, prefix: &str, out: i64, inp: i64, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"), &[out, inp])?,
            bias: if bias {
                Some(self.get(&format!("{prefix}.bias"), &[out])?)
            } else {
                None
            },
            lora: None,
        })
    }

    fn norm(&self, key: &str, dim: i64, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.get(key, &[dim])?,
            eps,
        })
    }
}

/// A decoder-only causal language model (Llama, Qwen2 or Qwen3 layout).
#[derive(Debug)]
pub struct Model {
    pub config: Config,
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
    pub(crate) lora_config: Option<crate::lora::LoraConfig>,
}

/// The `[B, T]` int64 token ids and `[B, T]` attention mask (1 = token, 0 = padding) of a
/// left-padded batch.
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
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
        })
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
    /// Loads `config.json` and the safetensors weights (single file or sharded with an index)
    /// of an HF model directory.
    pub fn load(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let (tensors, missing_in) = read_weights(dir)?;
        let kind = opts.dtype.or(config.dtype).unwrap_or(Kind::Float);
        let src = Source {
            tensors,
            missing_in,
            kind,
            device: opts.device,
        };
        Self::build(config, &src)
    }

    /// A randomly initialised model (normal(0, `init_std`) weights, unit norms, zero biases),
    /// deterministic given `seed` on CPU.
    pub fn random(config: Config, seed: u64, init_std: f64, opts: LoadOptions) -> Result<Self> {
        let kind = opts.dtype.or(config.dtype).unwrap_or(Kind::Float);
        let mut gen = crate::rng::Normal::new(seed);
        let mut tensors = BTreeMap::new();
        for (key, shape) in parameter_shapes(&config) {
            let is_norm = key.ends_with("norm.weight");
            let t = if is_norm {
                Tensor::ones(&shape, (Kind::Float, Device::Cpu))
            } else if key.ends_with(".bias") {
                Tensor::zeros(&shape, (Kind::Float, Device::Cpu))
            } else {
                gen.tensor(&shape, init_std)
            };
            tensors.insert(
                key,
                Loaded {
                    tensor: t,
                    file: PathBuf::from("<random>"),
                },
            );
        }
        let src = Source {
            tensors,
            missing_in: PathBuf::from("<random>"),
            kind,
            device: opts.device,
        };
        let mut config = config;
        config.dtype = Some(kind);
        Self::build(config, &src)
    }

    fn build(config: Config, src: &Source) -> Result<Self> {
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = |name: &str| -> Result<Option<RmsNorm>> {
                if c.qk_norm {
                    Ok(Some(src.norm(
                        &format!("{p}.self_attn.{name}.weight"),
                        hd,
                        c.rms_norm_eps,
                    )?))
                } else {
                    Ok(None)
                }
            };
            let self_attn = Attention {
                q_proj: src.linear(
                    &format!("{p}.self_attn.q_proj"),
                    c.num_attention_heads * hd,
                    h,
                    c.qkv_bias,
                )?,
                k_proj: src.linear(
                    &format!("{p}.self_attn.k_proj"),
                    c.num_key_value_heads * hd,
                    h,
                    c.qkv_bias,
                )?,
                v_proj: src.linear(
                    &format!("{p}.self_attn.v_proj"),
                    c.num_key_value_heads * hd,
                    h,
                    c.qkv_bias,
                )?,
                o_proj: src.linear(
                    &format!("{p}.self_attn.o_proj"),
                    h,
                    c.num_attention_heads * hd,
                    c.o_bias,
                )?,
                q_norm: qk_norm("q_norm")?,
                k_norm: qk_norm("k_norm")?,
                n_heads: c.num_attention_heads,
                n_kv_heads: c.num_key_value_heads,
                head_dim: hd,
            };
            let f = c.intermediate_size;
            let mlp = Mlp {
                gate_proj: src.linear(&format!("{p}.mlp.gate_proj"), f, h, c.mlp_bias)?,
                up_proj: src.linear(&format!("{p}.mlp.up_proj"), f, h, c.mlp_bias)?,
                down_proj: src.linear(&format!("{p}.mlp.down_proj"), h, f, c.mlp_bias)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: src.norm(
                    &format!("{p}.input_layernorm.weight"),
                    h,
                    c.rms_norm_eps,
                )?,
                post_attention_layernorm: src.norm(
                    &format!("{p}.post_attention_layernorm.weight"),
                    h,
                    c.rms_norm_eps,
                )?,
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
            norm: src.norm("model.norm.weight", h, c.rms_norm_eps)?,
            embed_tokens,
            layers,
            lm_head,
            inv_freq,
            kind: src.kind,
            device: src.device,
            adapter_enabled: true,
            train: false,
            lora_config: None,
            config,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Enables or disables the LoRA branches (disabled = the base model, RL's reference policy).
    pub fn set_adapter_enabled(&mut self, enabled: bool) {
        self.adapter_enabled = enabled;
    }

    /// Training mode turns LoRA dropout on.
    pub fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    fn mode(&self) -> Mode {
        Mode {
            adapter: self.adapter_enabled,
            train: self.train,
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

        let mode = self.mode();
        let mut x = Tensor::embedding(&self.embed_tokens, &ids, -1, false, false);
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_mut().map(|c| {
                let (k, v) = &mut c.layers[i];
                (k, v, past)
            });
            let a = layer.self_attn.forward(
                &layer.input_layernorm.forward(&x),
                &rope,
                attn_mask.as_ref(),
                kv,
                mode,
            );
            // Out of place: autograd keeps `x` for the norms' backward, so `+=` would corrupt it.
            x = &x + &a;
            let m = layer
                .mlp
                .forward(&layer.post_attention_layernorm.forward(&x), mode);
            x = &x + &m;
        }
        if let Some(c) = cache {
            c.len = total;
        }
        Ok(self.norm.forward(&x))
    }

    /// Log-probabilities `[B, T-1]` of each next token under `softmax(logits / temperature)`:
    /// entry `(b, i)` scores `input_ids[b, i + 1]` given the tokens up to `i`.
    pub fn token_logprobs(&self, batch: &Batch, temperature: f64) -> Result<Tensor> {
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
        Ok(lp.gather(-1, &next, false).squeeze_dim(-1))
    }

    /// Every linear layer LoRA can adapt, with its module path (`model.layers.0.mlp.up_proj`).
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let a = &l.self_attn;
            let m = &l.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// Mutable access to the linear layers, in the order of [`Model::linears`].
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            let m = &mut l.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    /// The base weights under their HF checkpoint keys (without a tied `lm_head`).
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.shallow_clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                l.input_layernorm.weight.shallow_clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_attention_layernorm.weight.shallow_clone(),
            ));
            for (key, norm) in [
                ("q_norm", &l.self_attn.q_norm),
                ("k_norm", &l.self_attn.k_norm),
            ] {
                if let Some(n) = norm {
                    out.push((
                        format!("{p}.self_attn.{key}.weight"),
                        n.weight.shallow_clone(),
                    ));
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
        io::write_json(&dir.join("config.json"), &raw)
    }
}

/// Every parameter key of a config and its shape, in checkpoint order.
pub fn parameter_shapes(c: &Config) -> Vec<(String, Vec<i64>)> {
    let (h, hd, f) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![c.vocab_size, h],
    )];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut lin = |name: &str, o: i64, n: i64, bias: bool| {
            out.push((format!("{p}.{name}.weight"), vec![o, n]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![o]));
            }
        };
        lin("self_attn.q_proj", q, h, c.qkv_bias);
        lin("self_attn.k_proj", kv, h, c.qkv_bias);
        lin("self_attn.v_proj", kv, h, c.qkv_bias);
        lin("self_attn.o_proj", h, q, c.o_bias);
        lin("mlp.gate_proj", f, h, c.mlp_bias);
        lin("mlp.up_proj", f, h, c.mlp_bias);
        lin("mlp.down_proj", h, f, c.mlp_bias);
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        if c.qk_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), vec![hd]));
            out.push((format!("{p}.self_attn.k_norm.weight"), vec![hd]));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
    }
    out
}

/// Reads `model.safetensors`, or every shard named by `model.safetensors.index.json`.
fn read_weights(dir: &Path) -> Result<(BTreeMap<String, Loaded>, PathBuf)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.exists() {
        return Ok((io::read_safetensors(&single)?, single));
    }
    if !index.exists() {
        return Err(Error::MissingFile {
            path: single,
            what: "weights (model.safetensors or model.safetensors.index.json)",
        });
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let idx: Index = io::read_json(&index)?;
    let mut shards: Vec<&String> = idx.weight_map.values().collect();
    shards.sort();
    shards.dedup();
    let mut all = BTreeMap::new();
    for shard in shards {
        if shard.contains('/') || shard.contains("..") {
            return Err(Error::invalid(
                &index,
                "weight_map",
                format!("shard name `{shard}` is not a file name"),
            ));
        }
        all.extend(io::read_safetensors(&dir.join(shard))?);
    }
    for (key, shard) in &idx.weight_map {
        match all.get(key) {
            Some(l)
                if l.file
                    .file_name()
                    .map(|n| n.to_string_lossy() == shard.as_str())
                    == Some(true) => {}
            _ => {
                return Err(Error::MissingTensor {
                    path: dir.join(shard),
                    key: key.clone(),
                })
            }
        }
    }
    Ok((all, index))
}
