//! How well a jump's direction matches where training went: the cosine between a predicted
//! change and the change a run really made between two of its checkpoints, over all matrices
//! together (`Σ⟨P, R⟩ / sqrt(Σ|P|² Σ|R|²)`, merged deltas, dense per matrix).

use std::collections::BTreeMap;
use std::path::Path;

use nalgebra::DMatrix;
use next_trajectory::adapter::Adapter;

use crate::{Error, Prediction, Result};

/// The merged update `s B A` of every module of the adapter in `dir`.
fn merged(dir: &Path) -> Result<BTreeMap<String, DMatrix<f64>>> {
    let a = Adapter::open(dir)?;
    a.modules
        .keys()
        .map(|m| {
            let f = a.factors(m)?;
            Ok((m.clone(), f.bt.transpose() * f.at.transpose() * a.scaling))
        })
        .collect()
}

/// A merged-space prediction as dense matrices `Σ σ u vᵀ`.
pub fn dense(predictions: &[Prediction]) -> BTreeMap<String, DMatrix<f64>> {
    predictions
        .iter()
        .map(|p| {
            let mut m = DMatrix::zeros(
                p.terms.first().map_or(0, |t| t.1.len()),
                p.terms.first().map_or(0, |t| t.2.len()),
            );
            for (s, u, v) in &p.terms {
                m += u * v.transpose() * *s;
            }
            (p.module.clone(), m)
        })
        .collect()
}

/// The cosine between `predicted` (per module) and the change from the adapter in `from` to the
/// one in `to`, over every module of the adapters (a module without a prediction, or whose
/// prediction has no terms, predicts no change); NaN when either side is zero.
pub fn cosine(predicted: &BTreeMap<String, DMatrix<f64>>, from: &Path, to: &Path) -> Result<f64> {
    let (a, b) = (merged(from)?, merged(to)?);
    if let Some(m) = predicted.keys().find(|m| !b.contains_key(*m)) {
        return Err(Error::Unsupported(format!(
            "module `{m}` is predicted but not in {}",
            to.display()
        )));
    }
    let (mut dot, mut pp, mut rr) = (0.0, 0.0, 0.0);
    for (m, y) in &b {
        let Some(x) = a.get(m) else {
            return Err(Error::Unsupported(format!(
                "module `{m}` is in {} but not in {}",
                to.display(),
                from.display()
            )));
        };
        let r = y - x;
        rr += r.norm_squared();
        let Some(p) = predicted.get(m).filter(|p| !p.is_empty()) else {
            continue;
        };
        if r.shape() != p.shape() {
            return Err(Error::Unsupported(format!(
                "module `{m}`: the prediction is {:?}, the change {:?}",
                p.shape(),
                r.shape()
            )));
        }
        dot += p.dot(&r);
        pp += p.norm_squared();
    }
    Ok(if pp > 0.0 && rr > 0.0 {
        dot / (pp * rr).sqrt()
    } else {
        f64::NAN
    })
}
