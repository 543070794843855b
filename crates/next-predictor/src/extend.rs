//! Extension: the current adapter plus λ times a prediction, written exactly as a PEFT LoRA
//! adapter of rank r + k. With B' = [B, λσ_j u_j / s] and A' = [A; v_jᵀ] and lora_alpha chosen
//! so that the scaling s stays the same, s B' A' = s B A + λ Σ σ_j u_j v_jᵀ, and any trainer that
//! loads PEFT adapters (this one, verl, TRL) can resume from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};

use next_trajectory::adapter::Adapter;

use crate::{Error, Prediction, Result};

/// The predicted terms a jump was built from, beside the extended adapter.
pub const PREDICTION: &str = "prediction.safetensors";

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
    if out.exists() {
        return Err(Error::Invalid(format!(
            "{} already exists; choose a new --out",
            out.display()
        )));
    }
    let staging = next_files::atomic::Staging::new(out)?;
    let mut ext = write_extended_into(adapter_dir, predictions, lambda, k, staging.path())?;
    ext.dir = staging.publish(next_files::atomic::Existing::Refuse)?;
    Ok(ext)
}

/// As [`write_extended`], into the existing directory `dir` (a caller's staging directory,
/// which it publishes itself).
pub fn write_extended_into(
    adapter_dir: &Path,
    predictions: &[Prediction],
    lambda: f64,
    k: usize,
    dir: &Path,
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
    let mut cfg: serde_json::Value =
        next_files::json::read(&adapter_dir.join(next_files::peft::CONFIG))?;
    cfg["r"] = serde_json::json!(r2);
    cfg["lora_alpha"] = serde_json::json!(alpha2);

    let refs: Vec<(String, &DMatrix<f64>, &DMatrix<f64>)> =
        factors.iter().map(|(n, b, a)| (n.clone(), b, a)).collect();
    next_trajectory::adapter::write(dir, &cfg, &refs)?;
    next_trajectory::adapter::write_f32(&dir.join(PREDICTION), &predicted)?;
    Ok(Extended {
        dir: dir.to_owned(),
        r: r2,
        lora_alpha: alpha2,
        modules: adapter.modules.len(),
    })
}

/// How to continue training from an extended adapter in verl 0.9 and TRL 1.x, whose defaults
/// would otherwise drop it (verl applies LoRA only with `lora_rank > 0`) or anchor the KL term
/// to it (TRL copies a loaded adapter as its reference when `beta != 0`).
pub fn resume_hints(dir: &Path, r: usize, alpha: f64) -> String {
    let d = dir.display();
    let mut out = format!(
        "resume from it:\n  \
         verl 0.9: actor_rollout_ref.model.lora_rank={r} actor_rollout_ref.model.lora_alpha={alpha} \
         actor_rollout_ref.model.lora_adapter_path={d}\n  \
         TRL 1.x: GRPOTrainer(model=base, peft_config=LoraConfig.from_pretrained(\"{d}\"), ...), then \
         set_peft_model_state_dict(trainer.model, safetensors.torch.load_file(\"{d}/adapter_model.safetensors\")) \
         before train(); PeftModel.from_pretrained(base, \"{d}\", is_trainable=True) also works with beta = 0, \
         but with beta != 0 TRL makes this adapter the KL reference instead of the base model\n  \
         next generate --adapter {d}"
    );
    if alpha.fract() != 0.0 {
        out.push_str(&format!(
            "\n  note: verl reads lora_alpha as an integer; {alpha} would become {}, scaling the adapter by {:.4}",
            alpha.trunc(),
            alpha.trunc() / alpha
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: usize, alpha: f64, expected: &[&str], absent: &[&str]) {
        let h = resume_hints(Path::new("/runs/x/jumped"), r, alpha);
        for e in expected {
            assert!(h.contains(e), "{e:?} missing in\n{h}");
        }
        for a in absent {
            assert!(!h.contains(a), "{a:?} present in\n{h}");
        }
    }

    #[test]
    fn resume_hints_name_what_verl_and_trl_need() {
        check(
            9,
            18.0,
            &[
                "lora_rank=9",
                "lora_alpha=18",
                "lora_adapter_path=/runs/x/jumped",
                "LoraConfig.from_pretrained(\"/runs/x/jumped\")",
                "KL reference",
            ],
            &["integer"],
        );
        check(
            17,
            34.5,
            &["lora_rank=17", "34.5 would become 34", "0.9855"],
            &[],
        );
    }
}
