//! Where a model's weights come from: the HF checkpoint files (single or sharded safetensors)
//! or a seeded random draw, resolved by checkpoint key with shapes and dtypes validated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::layers::{projection_shape, Linear, RmsNorm, PROJECTIONS};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::io::{self, Loaded};

/// Every parameter key of a config and its shape, in checkpoint order (the order of the
/// seeded draws of [`crate::Model::random`]).
pub fn parameter_shapes(c: &Config) -> Vec<(String, Vec<i64>)> {
    let (h, hd) = (c.hidden_size, c.head_dim);
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![c.vocab_size, h],
    )];
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (j, name) in PROJECTIONS.iter().enumerate() {
            let (o, n, bias) = projection_shape(c, j);
            out.push((format!("{p}.{name}.weight"), vec![o, n]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![o]));
            }
        }
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

/// Where the weights of a model come from; resolves keys and validates shapes and dtypes.
pub(crate) struct Source {
    pub tensors: BTreeMap<String, Loaded>,
    /// What to name in an error about a tensor that is not there.
    pub missing_in: PathBuf,
    pub kind: Kind,
    pub device: Device,
}

impl Source {
    /// The checkpoint files of an HF model directory.
    pub fn checkpoint(dir: &Path, kind: Kind, device: Device) -> Result<Self> {
        let (tensors, missing_in) = read_weights(dir)?;
        Ok(Source {
            tensors,
            missing_in,
            kind,
            device,
        })
    }

    /// A seeded draw: normal(0, `init_std`) weights, unit norms, zero biases.
    pub fn random(c: &Config, seed: u64, init_std: f64, kind: Kind, device: Device) -> Self {
        let mut gen = crate::rng::Normal::new(seed);
        let mut tensors = BTreeMap::new();
        for (key, shape) in parameter_shapes(c) {
            let t = if key.ends_with("norm.weight") {
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
        Source {
            tensors,
            missing_in: PathBuf::from("<random>"),
            kind,
            device,
        }
    }

    pub fn get(&self, key: &str, shape: &[i64]) -> Result<Tensor> {
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

    /// The projections of layer `prefix`, indexed as [`PROJECTIONS`].
    pub fn projections(&self, c: &Config, prefix: &str) -> Result<[Linear; 7]> {
        let mut out = Vec::with_capacity(PROJECTIONS.len());
        for (j, name) in PROJECTIONS.iter().enumerate() {
            let (o, n, bias) = projection_shape(c, j);
            let p = format!("{prefix}.{name}");
            out.push(Linear {
                weight: self.get(&format!("{p}.weight"), &[o, n])?,
                bias: if bias {
                    Some(self.get(&format!("{p}.bias"), &[o])?)
                } else {
                    None
                },
                lora: None,
                jump: None,
            });
        }
        Ok(out.try_into().expect("one linear per projection"))
    }

    pub fn norm(&self, key: &str, dim: i64, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.get(key, &[dim])?,
            eps,
        })
    }
}

/// Reads `model.safetensors`, or every shard named by `model.safetensors.index.json`.
fn read_weights(dir: &Path) -> Result<(BTreeMap<String, Loaded>, PathBuf)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.exists() {
        return Ok((io::read_safetensors(&single)?, single));
    }
    if !index.exists() {
        return Err(Error::missing(
            single,
            "weights (model.safetensors or model.safetensors.index.json)",
        ));
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let idx: Index = next_files::json::read(&index)?;
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
