//! Extension: the current adapter plus λ times a prediction, written exactly as a PEFT LoRA
//! adapter of rank r + k. With B' = [B, λσ_j u_j / s] and A' = [A; v_jᵀ] and lora_alpha chosen
//! so that the scaling s stays the same, s B' A' = s B A + λ Σ σ_j u_j v_jᵀ, and any trainer that
//! loads PEFT adapters (this one, verl, TRL) can resume from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};

use next_trajectory::adapter::Adapter;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::{Error, Prediction, Result};

/// What [`write_extended`] wrote.
#[derive(Debug, Clone)]
pub struct Extended {
    pub dir: PathBuf,
    /// The new rank r + k.
    pub r: usize,
    pub lora_alpha: f64,
    pub modules: usize,
}

/// Writes `adapter` + λ · `predictions` (each truncated to its first `k` terms, padded with
/// zero columns) as a PEFT adapter in `out`, plus `prediction.safetensors` with the predicted
/// triplets (`<module>.sigma`, `.u`, `.v`). `out` must not exist; it appears complete or not at
/// all.
pub fn write_extended(
    adapter_dir: &Path,
    predictions: &[Prediction],
    lambda: f64,
    k: usize,
    out: &Path,
) -> Result<Extended> {
    if !lambda.is_finite() {
        return Err(Error::Invalid(format!(
            "λ = {lambda} is not a finite number"
        )));
    }
    if k == 0 {
        return Err(Error::Invalid(
            "the extension rank k must be at least 1".into(),
        ));
    }
    if out.exists() {
        return Err(Error::Invalid(format!(
            "{} already exists; choose a new --out",
            out.display()
        )));
    }
    let adapter = Adapter::open(adapter_dir)?;
    let by_module: BTreeMap<&str, &Prediction> =
        predictions.iter().map(|p| (p.module.as_str(), p)).collect();
    if let Some(p) = predictions
        .iter()
        .find(|p| !adapter.modules.contains_key(&p.module))
    {
        return Err(Error::Invalid(format!(
            "the prediction is for module `{}`, which {} does not adapt",
            p.module,
            adapter.file().display()
        )));
    }
    let s = adapter.scaling;
    let r2 = adapter.r + k;
    let alpha2 = if adapter.rslora {
        s * (r2 as f64).sqrt()
    } else {
        s * r2 as f64
    };
    let mut factors: Vec<(String, DMatrix<f64>, DMatrix<f64>)> = vec![];
    let mut predicted: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    let le = |v: &mut Vec<u8>, x: f64| v.extend_from_slice(&(x as f32).to_le_bytes());
    for (stem, shape) in &adapter.modules {
        let f = adapter.factors(stem)?;
        let (out_dim, in_dim, r) = (shape.out, shape.inp, shape.r);
        let terms: &[(f64, DVector<f64>, DVector<f64>)] = by_module
            .get(stem.as_str())
            .map_or(&[], |p| &p.terms[..p.terms.len().min(k)]);
        for (sigma, u, v) in terms {
            if u.len() != out_dim || v.len() != in_dim {
                return Err(Error::Invalid(format!(
                    "module `{stem}`: the prediction is {}x{}, the adapter's matrix {out_dim}x{in_dim}",
                    u.len(),
                    v.len()
                )));
            }
            if !sigma.is_finite() || u.iter().chain(v.iter()).any(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!(
                    "module `{stem}`: the prediction has a NaN or infinite value"
                )));
            }
        }
        // B' = [B, λσ_j u_j / s] (out x r2), A' = [A; v_jᵀ] (r2 x in); zero where no term.
        let mut b = DMatrix::<f64>::zeros(out_dim, r2);
        let mut a = DMatrix::<f64>::zeros(r2, in_dim);
        b.columns_mut(0, r).copy_from(&f.bt.transpose());
        a.rows_mut(0, r).copy_from(&f.at.transpose());
        for (j, (sg, u, v)) in terms.iter().enumerate() {
            b.set_column(r + j, &(u * (lambda * sg / s)));
            a.set_row(r + j, &v.transpose());
        }
        factors.push((stem.clone(), b, a));
        if !terms.is_empty() {
            let mut sg = vec![];
            let mut u = vec![];
            let mut v = vec![];
            for (x, uu, vv) in terms {
                le(&mut sg, *x);
                uu.iter().for_each(|y| le(&mut u, *y));
                vv.iter().for_each(|y| le(&mut v, *y));
            }
            predicted.push((format!("{stem}.sigma"), vec![terms.len()], sg));
            predicted.push((format!("{stem}.u"), vec![terms.len(), out_dim], u));
            predicted.push((format!("{stem}.v"), vec![terms.len(), in_dim], v));
        }
    }

    // The config: the original, with the new rank and an alpha that keeps the scaling.
    let cfg_path = adapter_dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let mut cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: {e}", cfg_path.display())))?;
    cfg["r"] = serde_json::json!(r2);
    cfg["lora_alpha"] = serde_json::json!(alpha2);

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".extend-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let refs: Vec<(String, &DMatrix<f64>, &DMatrix<f64>)> =
        factors.iter().map(|(n, b, a)| (n.clone(), b, a)).collect();
    next_trajectory::adapter::write(tmp.path(), &cfg, &refs)?;
    write_tensors(&tmp.path().join("prediction.safetensors"), &predicted)?;
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| Error::io(out, e))?;
    Ok(Extended {
        dir: out.to_owned(),
        r: r2,
        lora_alpha: alpha2,
        modules: adapter.modules.len(),
    })
}

fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}
