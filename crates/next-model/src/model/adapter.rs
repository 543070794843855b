//! The LoRA adapter of a model: added fresh (initialised as PEFT does), loaded from and saved
//! to PEFT's format, listed as trainable parameters, and merged into the base weights.

use std::collections::BTreeMap;
use std::path::Path;

use next_files::peft::{self, Factor};
use tch::{Kind, Tensor};

use super::Model;
use crate::error::{Error, Result};
use crate::io;
use crate::lora::{Lora, LoraConfig};
use crate::peft::AdapterConfigFile;

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
        let all: Vec<String> = self.linears().into_iter().map(|(n, _)| n).collect();
        if let Some(n) = cfg.targets.unmatched(&all) {
            return Err(Error::Usage(format!(
                "LoRA target module `{n}` does not exist in this model"
            )));
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
                out.push((peft::key(&name, Factor::A), l.a.shallow_clone()));
                out.push((peft::key(&name, Factor::B), l.b.shallow_clone()));
            }
        }
        out
    }

    /// Loads a PEFT adapter directory onto this model (which must not have one yet).
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        if self.lora_config.is_some() {
            return Err(Error::Usage("the model already has a LoRA adapter".into()));
        }
        let cfg_path = dir.join(peft::CONFIG);
        let file: AdapterConfigFile = next_files::json::read(&cfg_path)?;
        let cfg = file.to_lora(&cfg_path)?;
        let weights_path = dir.join(peft::WEIGHTS);
        let mut tensors = io::read_safetensors(&weights_path)?;
        let modules: Vec<(String, Vec<i64>)> = self
            .linears()
            .into_iter()
            .map(|(n, l)| (n, l.weight.size()))
            .collect();
        // Every tensor in the file must belong to a module of this model.
        for key in tensors.keys() {
            match peft::module_of(key).map(|(m, _)| m) {
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
        let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
        if let Some(n) = cfg.targets.unmatched(&names) {
            return Err(Error::invalid(
                &cfg_path,
                "target_modules",
                format!("module `{n}` does not exist in this model"),
            ));
        }
        let device = self.device();
        let mut found = 0;
        let mut factors = Vec::new();
        for (name, size) in &modules {
            let ka = peft::key(name, Factor::A);
            let kb = peft::key(name, Factor::B);
            let (a, b) = match (tensors.remove(&ka), tensors.remove(&kb)) {
                (None, None) => continue,
                (Some(_), None) => {
                    return Err(Error::MissingTensor {
                        path: weights_path.clone(),
                        key: kb,
                    });
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
                        format!(" (r = {} in {})", cfg.r, peft::CONFIG)
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
        io::write_safetensors(&dir.join(peft::WEIGHTS), &params)?;
        let file = AdapterConfigFile::from_lora(cfg, modules, base_model.map(str::to_owned));
        Ok(next_files::json::write(&dir.join(peft::CONFIG), &file)?)
    }

    /// Removes the adapter (the model is the base again).
    pub fn remove_adapter(&mut self) {
        for (_, lin) in self.linears_mut() {
            lin.lora = None;
        }
        self.lora_config = None;
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
