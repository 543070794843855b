//! `Config`: the HF `config.json` of a Llama / Qwen2 / Qwen3 causal LM, validated.
//!
//! The raw JSON object is kept next to the parsed fields so that saving writes back every key
//! the file had, including the ones this crate does not interpret.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use tch::Kind;

use crate::error::{Error, Result};

/// The model families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub const SUPPORTED: &'static str = "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Arch::Llama),
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    pub fn class_name(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// The fields of `config.json` as written by transformers (4.x and 5.x spellings).
#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<i64>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<Value>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    use_sliding_window: Option<bool>,
}

/// A validated model configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3's RMSNorm on each query and key head.
    pub qk_norm: bool,
    pub max_position_embeddings: i64,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// The dtype the checkpoint declares (`torch_dtype` / `dtype`).
    pub dtype: Option<Kind>,
    /// The file's JSON object, written back on save.
    pub raw: Map<String, Value>,
}

/// Parses a dtype name as written in HF configs.
pub fn parse_kind(name: &str) -> Option<Kind> {
    match name.trim_start_matches("torch.") {
        "float32" | "float" | "f32" => Some(Kind::Float),
        "bfloat16" | "bf16" => Some(Kind::BFloat16),
        "float16" | "half" | "f16" => Some(Kind::Half),
        _ => None,
    }
}

/// The HF name of a floating-point dtype.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

/// Token ids in HF configs are an int, a list of ints, or null.
fn token_ids(path: &Path, key: &str, v: &Option<Value>) -> Result<Vec<i64>> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|i| vec![i])
            .ok_or_else(|| Error::invalid(path, key, "expected an integer token id")),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_i64().ok_or_else(|| {
                    Error::invalid(path, key, "expected a list of integer token ids")
                })
            })
            .collect(),
        Some(_) => Err(Error::invalid(
            path,
            key,
            "expected a token id or a list of them",
        )),
    }
}

fn positive(path: &Path, key: &str, v: i64) -> Result<i64> {
    if v > 0 {
        Ok(v)
    } else {
        Err(Error::invalid(
            path,
            key,
            format!("must be positive, got {v}"),
        ))
    }
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value: Value = next_files::json::read(path)?;
        Self::from_value(path, value)
    }

    /// Validates a parsed `config.json`; `path` is only used in error messages.
    pub fn from_value(path: &Path, value: Value) -> Result<Self> {
        let Value::Object(raw) = value else {
            return Err(Error::invalid(path, "<root>", "expected a JSON object"));
        };
        let rc: RawConfig = next_files::json::from_value(path, Value::Object(raw.clone()))?;
        let archs = rc.architectures.clone().unwrap_or_default();
        let name = archs
            .first()
            .ok_or_else(|| Error::invalid(path, "architectures", "missing or empty"))?;
        let arch = Arch::from_name(name).ok_or_else(|| Error::UnsupportedArchitecture {
            path: path.to_owned(),
            arch: name.clone(),
            supported: Arch::SUPPORTED,
        })?;
        if let Some(act) = &rc.hidden_act {
            if act != "silu" {
                return Err(Error::invalid(
                    path,
                    "hidden_act",
                    format!("`{act}` is not supported (only silu)"),
                ));
            }
        }
        if rc.use_sliding_window == Some(true) {
            return Err(Error::invalid(
                path,
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        let rope_theta = Self::rope(path, &rc)?;
        let heads = positive(path, "num_attention_heads", rc.num_attention_heads)?;
        let hidden = positive(path, "hidden_size", rc.hidden_size)?;
        let kv_heads = positive(
            path,
            "num_key_value_heads",
            rc.num_key_value_heads.unwrap_or(heads),
        )?;
        if heads % kv_heads != 0 {
            return Err(Error::invalid(
                path,
                "num_key_value_heads",
                format!("{kv_heads} does not divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = match rc.head_dim {
            Some(d) => positive(path, "head_dim", d)?,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(Error::invalid(
                    path,
                    "hidden_size",
                    format!("{hidden} is not divisible by num_attention_heads {heads}"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(Error::invalid(
                path,
                "head_dim",
                "must be even for rotary embeddings",
            ));
        }
        let dtype = match rc.dtype.as_deref().or(rc.torch_dtype.as_deref()) {
            None => None,
            Some(n) => Some(parse_kind(n).ok_or_else(|| {
                Error::invalid(path, "torch_dtype", format!("unsupported dtype `{n}`"))
            })?),
        };
        let one = |key: &str, v: &Option<Value>| -> Result<Option<i64>> {
            Ok(token_ids(path, key, v)?.first().copied())
        };
        let attention_bias = rc.attention_bias.unwrap_or(false);
        Ok(Config {
            arch,
            vocab_size: positive(path, "vocab_size", rc.vocab_size)?,
            hidden_size: hidden,
            intermediate_size: positive(path, "intermediate_size", rc.intermediate_size)?,
            num_hidden_layers: positive(path, "num_hidden_layers", rc.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: rc.rms_norm_eps,
            rope_theta,
            tie_word_embeddings: rc.tie_word_embeddings.unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || attention_bias,
            o_bias: arch != Arch::Qwen2 && attention_bias,
            mlp_bias: rc.mlp_bias.unwrap_or(false),
            qk_norm: arch == Arch::Qwen3,
            max_position_embeddings: rc.max_position_embeddings.unwrap_or(4096),
            bos_token_id: one("bos_token_id", &rc.bos_token_id)?,
            eos_token_ids: token_ids(path, "eos_token_id", &rc.eos_token_id)?,
            pad_token_id: one("pad_token_id", &rc.pad_token_id)?,
            dtype,
            raw,
        })
    }

    /// RoPE base frequency; only the default (unscaled) rotary embedding is implemented.
    fn rope(path: &Path, rc: &RawConfig) -> Result<f64> {
        let mut theta = rc.rope_theta;
        for (key, v) in [
            ("rope_scaling", &rc.rope_scaling),
            ("rope_parameters", &rc.rope_parameters),
        ] {
            let Some(Value::Object(m)) = v else { continue };
            let kind = m
                .get("rope_type")
                .or_else(|| m.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            if kind != "default" {
                return Err(Error::invalid(
                    path,
                    key,
                    format!("rope type `{kind}` is not supported"),
                ));
            }
            if let Some(t) = m.get("rope_theta").and_then(Value::as_f64) {
                theta = Some(t);
            }
        }
        Ok(theta.unwrap_or(10_000.0))
    }

    /// Number of query heads per key/value head (grouped-query attention).
    pub fn kv_groups(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }
}
