//! A PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`), as this
//! project, verl and TRL write it: scaling from the config, factor pairs by module, read lazily.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use next_files::peft::{self, Factor};

use serde::Deserialize;

use crate::factored::Factors;
use crate::tensors::Mapped;
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
struct RawConfig {
    r: Option<usize>,
    lora_alpha: Option<f64>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: serde_json::Map<String, serde_json::Value>,
    peft_type: Option<String>,
}

/// One module's factor names and shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleShape {
    /// `lora_B` is out x r, `lora_A` is r x in.
    pub out: usize,
    pub inp: usize,
    pub r: usize,
    a_key: String,
    b_key: String,
}

/// An opened adapter: its scaling and the factor pairs it holds, keyed by PEFT key stem
/// (`base_model.model.model.layers.0.self_attn.q_proj`).
#[derive(Debug)]
pub struct Adapter {
    pub dir: PathBuf,
    pub r: usize,
    pub alpha: f64,
    pub rslora: bool,
    /// alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub scaling: f64,
    pub modules: BTreeMap<String, ModuleShape>,
    file: Mapped,
}

impl Adapter {
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(peft::CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let raw: RawConfig = serde_json::from_str(&text)
            .map_err(|e| Error::format(&cfg_path, format!("not an adapter config: {e}")))?;
        if let Some(t) = raw.peft_type.as_deref() {
            if t != "LORA" {
                return Err(Error::format(
                    &cfg_path,
                    format!("peft_type is {t:?}; only LORA adapters have factors to read"),
                ));
            }
        }
        let r = raw
            .r
            .filter(|r| *r > 0)
            .ok_or_else(|| Error::format(&cfg_path, "key `r` is missing or 0"))?;
        let alpha = raw
            .lora_alpha
            .ok_or_else(|| Error::format(&cfg_path, "key `lora_alpha` is missing"))?;
        if alpha == 0.0 || !alpha.is_finite() {
            return Err(Error::format(
                &cfg_path,
                format!(
                    "key `lora_alpha` is {alpha}: the scaling alpha/r would make every update zero (verl's model merger writes 0 when the checkpoint's lora_train_meta.json is missing or alpha is below 1: write the training run's lora_alpha here)"
                ),
            ));
        }
        if !raw.rank_pattern.is_empty() || !raw.alpha_pattern.is_empty() {
            return Err(Error::format(
                &cfg_path,
                "per-module `rank_pattern`/`alpha_pattern` are not supported; every module must share r and lora_alpha",
            ));
        }
        let scaling = if raw.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        let st_path = dir.join(peft::WEIGHTS);
        let file = Mapped::open(&st_path)?;
        let mut pairs: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for name in file.names() {
            let Some((stem, which)) = peft::split_key(&name) else {
                tracing::debug!(tensor = %name, "not a LoRA factor; skipped");
                continue;
            };
            let e = pairs.entry(stem.to_owned()).or_default();
            if which == Factor::A {
                e.0 = Some(name);
            } else {
                e.1 = Some(name);
            }
        }
        let mut modules = BTreeMap::new();
        for (stem, (a, b)) in pairs {
            let (Some(a_key), Some(b_key)) = (a, b) else {
                return Err(Error::format(
                    &st_path,
                    format!("module `{stem}` has only one of lora_A / lora_B"),
                ));
            };
            let (sa, sb) = (
                &file.info(&a_key).expect("listed").shape,
                &file.info(&b_key).expect("listed").shape,
            );
            let (&[ra, inp], &[out, rb]) = (&sa[..], &sb[..]) else {
                return Err(Error::format(
                    &st_path,
                    format!("module `{stem}`: lora_A {sa:?} and lora_B {sb:?} must be 2-D"),
                ));
            };
            if ra != r || rb != r {
                return Err(Error::format(
                    &st_path,
                    format!(
                        "module `{stem}`: lora_A is {sa:?}, lora_B is {sb:?}, but {} says r = {r}",
                        peft::CONFIG
                    ),
                ));
            }
            modules.insert(
                stem,
                ModuleShape {
                    out,
                    inp,
                    r,
                    a_key,
                    b_key,
                },
            );
        }
        if modules.is_empty() {
            return Err(Error::format(&st_path, "holds no lora_A/lora_B pairs"));
        }
        Ok(Self {
            dir: dir.to_owned(),
            r,
            alpha,
            rslora: raw.use_rslora,
            scaling,
            modules,
            file,
        })
    }

    /// The factors of one module, in f64.
    pub fn factors(&self, stem: &str) -> Result<Factors> {
        let m = self.modules.get(stem).ok_or_else(|| {
            Error::format(
                &self.file.path,
                format!("no LoRA factors for module `{stem}`"),
            )
        })?;
        Ok(Factors {
            scale: self.scaling,
            at: self.file.matrix_transposed(&m.a_key)?,
            bt: self.file.matrix_transposed(&m.b_key)?,
        })
    }

    pub fn file(&self) -> &Path {
        &self.file.path
    }
}

/// Writes a PEFT LoRA adapter: `config` as `adapter_config.json` and, per module stem, B
/// (out x r) and A (r x in) as f32 `lora_B` / `lora_A` tensors in `adapter_model.safetensors`.
/// Each file is written atomically; callers that need the directory to appear whole build it
/// in a `next_files::atomic::Staging`.
pub fn write(
    dir: &Path,
    config: &serde_json::Value,
    factors: &[(String, &nalgebra::DMatrix<f64>, &nalgebra::DMatrix<f64>)],
) -> Result<()> {
    let row_major = |m: &nalgebra::DMatrix<f64>| -> Vec<u8> {
        let mut out = Vec::with_capacity(m.len() * 4);
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                out.extend_from_slice(&(m[(i, j)] as f32).to_le_bytes());
            }
        }
        out
    };
    let mut data = vec![];
    for (stem, b, a) in factors {
        data.push((
            peft::stem_key(stem, Factor::A),
            vec![a.nrows(), a.ncols()],
            row_major(a),
        ));
        data.push((
            peft::stem_key(stem, Factor::B),
            vec![b.nrows(), b.ncols()],
            row_major(b),
        ));
    }
    write_f32(&dir.join(peft::WEIGHTS), &data)?;
    Ok(next_files::json::write(&dir.join(peft::CONFIG), config)?)
}

/// Writes f32 tensors `(name, shape, little-endian bytes)` as a safetensors file, atomically.
pub fn write_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::format(path, format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::serialize(views, None).map_err(|e| Error::format(path, e.to_string()))?;
    Ok(next_files::atomic::write(path, &bytes)?)
}
