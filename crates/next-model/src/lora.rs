//! LoRA: the low-rank branch of a linear layer, and adapters in PEFT's exact on-disk format.
//!
//! PEFT layout: `adapter_config.json` plus `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `.lora_B.weight` (`[out, r]`);
//! `y = W x + s · B (A dropout(x))` with `s = lora_alpha / r` (`/ sqrt(r)` with rsLoRA).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::io;
use crate::model::Model;

/// Prefix PEFT puts before module paths in adapter files.
pub const PEFT_PREFIX: &str = "base_model.model.";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The low-rank factors of one adapted linear layer (kept in f32 whatever the base dtype).
#[derive(Debug)]
pub struct Lora {
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
    pub scaling: f64,
    pub dropout: f64,
}

impl Lora {
    /// `s · B (A dropout(x))`, computed in f32 and returned in `x`'s dtype (as PEFT does).
    pub(crate) fn delta(&self, x: &Tensor, train: bool) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let h = if train && self.dropout > 0.0 {
            h.dropout(self.dropout, true)
        } else {
            h
        };
        (h.linear(&self.a, None::<&Tensor>)
            .linear(&self.b, None::<&Tensor>)
            * self.scaling)
            .to_kind(kind)
    }

    /// The dense update `s · B A` (`[out, in]`, f32).
    pub fn merged_delta(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scaling
    }
}

/// Which linear layers get a LoRA branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// Every linear layer but the LM head (PEFT's `"all-linear"`).
    AllLinear,
    /// Module names matched as PEFT does: equal to the full path or to its last components.
    List(Vec<String>),
}

impl TargetModules {
    fn matches(&self, module: &str) -> bool {
        match self {
            TargetModules::AllLinear => true,
            TargetModules::List(names) => names
                .iter()
                .any(|n| module == n || module.ends_with(&format!(".{n}"))),
        }
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: TargetModules,
    pub use_rslora: bool,
}

impl LoraConfig {
    /// The factor `s` multiplying `B A`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if self.r <= 0 {
            return Err(Error::invalid(
                path,
                "r",
                format!("must be positive, got {}", self.r),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::invalid(
                path,
                "lora_alpha",
                format!(
                    "must be positive, got {} (verl's merger writes 0: set the real alpha)",
                    self.alpha
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                path,
                "lora_dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }
}

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
            Value::String(s) if s == "all-linear" => TargetModules::AllLinear,
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

    fn from_lora(cfg: &LoraConfig, modules: Vec<String>, base: Option<String>) -> Self {
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

fn short_name(module: &str) -> &str {
    module.rsplit('.').next().unwrap_or(module)
}

impl Model {
    /// Adds fresh LoRA branches (A kaiming-uniform with a = sqrt(5), B zero, as PEFT
    /// initialises them) to every targeted linear layer; deterministic given `seed`.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        cfg.validate(Path::new("<lora config>"))?;
        if self.lora_config.is_some() {
            return Err(Error::Usage("the model already has a LoRA adapter".into()));
        }
        if let TargetModules::List(names) = &cfg.targets {
            let all: Vec<String> = self.linears().into_iter().map(|(n, _)| n).collect();
            for n in names {
                if !all.iter().any(|m| m == n || m.ends_with(&format!(".{n}"))) {
                    return Err(Error::Usage(format!(
                        "LoRA target module `{n}` does not exist in this model"
                    )));
                }
            }
        }
        let mut gen = crate::rng::Normal::new(seed);
        let device = self.device();
        for (name, lin) in self.linears_mut() {
            if !cfg.targets.matches(&name) {
                continue;
            }
            let size = lin.weight.size();
            let (out, inp) = (size[0], size[1]);
            // kaiming_uniform(a = sqrt(5)) gives bound = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(fan_in).
            let a = gen.uniform(&[cfg.r, inp], 1.0 / (inp as f64).sqrt());
            lin.lora = Some(Lora {
                a: a.to_device(device).set_requires_grad(true),
                b: Tensor::zeros([out, cfg.r], (Kind::Float, device)).set_requires_grad(true),
                scaling: cfg.scaling(),
                dropout: cfg.dropout,
            });
        }
        self.lora_config = Some(cfg.clone());
        Ok(())
    }

    /// The LoRA configuration, if an adapter is attached.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora_config.as_ref()
    }

    /// The trainable LoRA factors under their PEFT keys, A before B for each module.
    pub fn lora_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, lin) in self.linears() {
            if let Some(l) = &lin.lora {
                out.push((
                    format!("{PEFT_PREFIX}{name}.lora_A.weight"),
                    l.a.shallow_clone(),
                ));
                out.push((
                    format!("{PEFT_PREFIX}{name}.lora_B.weight"),
                    l.b.shallow_clone(),
                ));
            }
        }
        out
    }

    /// Loads a PEFT adapter directory onto this model (which must not have one yet).
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        if self.lora_config.is_some() {
            return Err(Error::Usage("the model already has a LoRA adapter".into()));
        }
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let file: AdapterConfigFile = io::read_json(&cfg_path)?;
        let cfg = file.to_lora(&cfg_path)?;
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        let mut tensors = io::read_safetensors(&weights_path)?;
        let modules: Vec<(String, Vec<i64>)> = self
            .linears()
            .into_iter()
            .map(|(n, l)| (n, l.weight.size()))
            .collect();
        // Every tensor in the file must belong to a module of this model.
        for key in tensors.keys() {
            let module = key.strip_prefix(PEFT_PREFIX).and_then(|k| {
                k.strip_suffix(".lora_A.weight")
                    .or_else(|| k.strip_suffix(".lora_B.weight"))
            });
            match module {
                Some(m) if modules.iter().any(|(n, _)| n == m) => {}
                Some(m) => {
                    return Err(Error::invalid(
                        &weights_path,
                        key.clone(),
                        format!("targets module `{m}`, which does not exist in this model"),
                    ))
                }
                None => {
                    return Err(Error::invalid(
                        &weights_path,
                        key.clone(),
                        "is not a LoRA A/B weight of a linear layer",
                    ))
                }
            }
        }
        if let TargetModules::List(names) = &cfg.targets {
            for n in names {
                if !modules
                    .iter()
                    .any(|(m, _)| m == n || m.ends_with(&format!(".{n}")))
                {
                    return Err(Error::invalid(
                        &cfg_path,
                        "target_modules",
                        format!("module `{n}` does not exist in this model"),
                    ));
                }
            }
        }
        let device = self.device();
        let mut found = 0;
        let mut factors = Vec::new();
        for (name, size) in &modules {
            let ka = format!("{PEFT_PREFIX}{name}.lora_A.weight");
            let kb = format!("{PEFT_PREFIX}{name}.lora_B.weight");
            let (a, b) = match (tensors.remove(&ka), tensors.remove(&kb)) {
                (None, None) => continue,
                (Some(_), None) => {
                    return Err(Error::MissingTensor {
                        path: weights_path.clone(),
                        key: kb,
                    })
                }
                (None, Some(_)) => {
                    return Err(Error::MissingTensor {
                        path: weights_path.clone(),
                        key: ka,
                    })
                }
                (Some(a), Some(b)) => (a.tensor, b.tensor),
            };
            for (key, t, expected) in [
                (&ka, &a, vec![cfg.r, size[1]]),
                (&kb, &b, vec![size[0], cfg.r]),
            ] {
                if !io::is_float(t.kind()) {
                    return Err(Error::TensorDtype {
                        path: weights_path.clone(),
                        key: key.clone(),
                        dtype: format!("{:?}", t.kind()),
                    });
                }
                if t.size() != expected {
                    let rank_hint = if t.dim() == 2 {
                        format!(" (r = {} in {ADAPTER_CONFIG})", cfg.r)
                    } else {
                        String::new()
                    };
                    return Err(Error::invalid(
                        &weights_path,
                        key.clone(),
                        format!("has shape {:?}, expected {expected:?}{rank_hint}", t.size()),
                    ));
                }
                let finite = t.to_kind(Kind::Float).isfinite().all().int64_value(&[]) != 0;
                if !finite {
                    return Err(Error::invalid(
                        &weights_path,
                        key.clone(),
                        "contains NaN or infinite values",
                    ));
                }
            }
            found += 1;
            factors.push((name.clone(), a, b));
        }
        if found == 0 {
            return Err(Error::invalid(
                &weights_path,
                "<all>",
                "contains no LoRA weights",
            ));
        }
        let lookup: BTreeMap<String, (Tensor, Tensor)> =
            factors.into_iter().map(|(n, a, b)| (n, (a, b))).collect();
        for (name, lin) in self.linears_mut() {
            if let Some((a, b)) = lookup.get(&name) {
                lin.lora = Some(Lora {
                    a: a.to_kind(Kind::Float)
                        .to_device(device)
                        .set_requires_grad(true),
                    b: b.to_kind(Kind::Float)
                        .to_device(device)
                        .set_requires_grad(true),
                    scaling: cfg.scaling(),
                    dropout: cfg.dropout,
                });
            }
        }
        self.lora_config = Some(cfg);
        Ok(())
    }

    /// Writes the adapter in PEFT's format: `adapter_config.json` and `adapter_model.safetensors`.
    pub fn save_adapter(&self, dir: &Path, base_model: Option<&str>) -> Result<()> {
        let cfg = self
            .lora_config
            .as_ref()
            .ok_or_else(|| Error::Usage("the model has no LoRA adapter to save".into()))?;
        let mut modules: Vec<String> = self
            .linears()
            .into_iter()
            .filter(|(_, l)| l.lora.is_some())
            .map(|(n, _)| short_name(&n).to_string())
            .collect();
        modules.sort();
        modules.dedup();
        let params: Vec<(String, Tensor)> = self
            .lora_parameters()
            .into_iter()
            .map(|(k, t)| (k, t.detach()))
            .collect();
        io::write_safetensors(&dir.join(ADAPTER_WEIGHTS), &params)?;
        let file = AdapterConfigFile::from_lora(cfg, modules, base_model.map(str::to_owned));
        io::write_json(&dir.join(ADAPTER_CONFIG), &file)
    }

    /// Folds every LoRA branch into its base weight (`W += s · B A`) and removes the adapter.
    pub fn merge_adapter(&mut self) -> Result<()> {
        if self.lora_config.take().is_none() {
            return Err(Error::Usage(
                "the model has no LoRA adapter to merge".into(),
            ));
        }
        tch::no_grad(|| {
            for (_, lin) in self.linears_mut() {
                if let Some(l) = lin.lora.take() {
                    let kind = lin.weight.kind();
                    lin.weight = (lin.weight.to_kind(Kind::Float) + l.merged_delta()).to_kind(kind);
                }
            }
        });
        Ok(())
    }
}
