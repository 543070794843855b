//! PEFT's `adapter_config.json`, read and written as PEFT does: the keys this crate depends on
//! validated (with the key named when refused), unknown keys kept on a round trip. The file and
//! tensor names are `next_files::peft`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::lora::{LoraConfig, TargetModules};

/// `adapter_config.json` as PEFT writes it; unknown keys are kept on a round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfigFile {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: i64,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: Value,
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl AdapterConfigFile {
    /// Validates the keys this crate depends on and returns the LoRA configuration.
    pub fn to_lora(&self, path: &Path) -> Result<LoraConfig> {
        if self.peft_type != "LORA" {
            return Err(Error::invalid(
                path,
                "peft_type",
                format!("`{}` is not LORA", self.peft_type),
            ));
        }
        if self.use_dora {
            return Err(Error::invalid(
                path,
                "use_dora",
                "DoRA adapters are not supported",
            ));
        }
        if self.fan_in_fan_out {
            return Err(Error::invalid(
                path,
                "fan_in_fan_out",
                "only false is supported",
            ));
        }
        if let Some(b) = &self.bias {
            if b != "none" {
                return Err(Error::invalid(
                    path,
                    "bias",
                    format!("`{b}` is not supported (only \"none\")"),
                ));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let Some(Value::Object(m)) = self.other.get(key) {
                if !m.is_empty() {
                    return Err(Error::invalid(
                        path,
                        key,
                        "per-module ranks or alphas are not supported",
                    ));
                }
            }
        }
        for key in ["layers_to_transform", "modules_to_save"] {
            if !matches!(self.other.get(key), None | Some(Value::Null)) {
                return Err(Error::invalid(path, key, "is not supported (must be null)"));
            }
        }
        let targets = match &self.target_modules {
            Value::String(s) if s == TargetModules::ALL_LINEAR => TargetModules::AllLinear,
            Value::String(s) => {
                return Err(Error::invalid(
                    path,
                    "target_modules",
                    format!("regular expression `{s}` is not supported; list the module names"),
                ))
            }
            Value::Array(a) => TargetModules::List(
                a.iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            Error::invalid(path, "target_modules", "expected strings")
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => {
                return Err(Error::invalid(
                    path,
                    "target_modules",
                    "expected a list of module names or \"all-linear\"",
                ))
            }
        };
        let cfg = LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            targets,
            use_rslora: self.use_rslora,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub(crate) fn from_lora(cfg: &LoraConfig, modules: Vec<String>, base: Option<String>) -> Self {
        let other = [
            ("alpha_pattern", Value::Object(Default::default())),
            ("rank_pattern", Value::Object(Default::default())),
            ("inference_mode", Value::Bool(true)),
            ("init_lora_weights", Value::Bool(true)),
            ("layers_to_transform", Value::Null),
            ("layers_pattern", Value::Null),
            ("modules_to_save", Value::Null),
            ("revision", Value::Null),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        AdapterConfigFile {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: cfg.r,
            lora_alpha: cfg.alpha,
            lora_dropout: cfg.dropout,
            target_modules: Value::from(modules),
            bias: Some("none".into()),
            use_rslora: cfg.use_rslora,
            use_dora: false,
            fan_in_fan_out: false,
            base_model_name_or_path: base,
            other,
        }
    }
}
