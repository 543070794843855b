//! What ends a response and pads a batch: `generation_config.json` and the one stop-token rule
//! that the model, generation, training and the demo share (a leaf: it knows no model).

use std::path::Path;

use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The parts of `generation_config.json` that decoding uses.
#[derive(Debug, Clone, Default)]
pub struct GenerationConfig {
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
}

impl GenerationConfig {
    /// Reads `generation_config.json` if the directory has one.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(None);
        }
        let v: Value = next_files::json::read(&path)?;
        let ids = |key: &str| -> Result<Vec<i64>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(|i| vec![i])
                    .ok_or_else(|| Error::invalid(&path, key, "expected an integer")),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_i64()
                            .ok_or_else(|| Error::invalid(&path, key, "expected integers"))
                    })
                    .collect(),
                Some(_) => Err(Error::invalid(&path, key, "expected an integer or a list")),
            }
        };
        Ok(Some(GenerationConfig {
            eos_token_ids: ids("eos_token_id")?,
            pad_token_id: ids("pad_token_id")?.first().copied(),
            bos_token_id: ids("bos_token_id")?.first().copied(),
        }))
    }
}

/// The tokens that end a response and the token that pads a batch, decided by one rule for
/// every caller (generation, training, validation, the demo): EOS from `generation_config.json`,
/// else `config.json`, else the tokenizer; pad likewise, else the first EOS, else 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopTokens {
    pub eos: Vec<i64>,
    pub pad: i64,
}

impl StopTokens {
    pub fn resolve(generation: &GenerationConfig, config: &Config, tok: &Tokenizer) -> Self {
        let eos = [&generation.eos_token_ids, &config.eos_token_ids]
            .into_iter()
            .find(|v| !v.is_empty())
            .cloned()
            .or_else(|| tok.eos_token_id.map(|e| vec![e]))
            .unwrap_or_default();
        let pad = generation
            .pad_token_id
            .or(config.pad_token_id)
            .or(tok.pad_token_id)
            .or(eos.first().copied())
            .unwrap_or(0);
        StopTokens { eos, pad }
    }
}
