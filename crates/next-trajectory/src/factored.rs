//! Top singular triplets of `Σ_i s_i B_i A_i` (a LoRA update, or the difference of two) from the
//! factors alone: with `L = [s_1 B_1, s_2 B_2, ...]` (out x k) and `R = [A_1; A_2; ...]`
//! (k x in), `L = Q_L R_L` and `Rᵀ = Q_R R_R` give `L R = Q_L (R_L R_Rᵀ) Q_Rᵀ`, so the SVD of
//! the k x k core `C = R_L R_Rᵀ` is the SVD of the whole matrix: `U = Q_L U_C`, `V = Q_R V_C`.
//! Cost O((out + in) k²) instead of O(out · in · min(out, in)); no full matrix is formed.

use nalgebra::DMatrix;

use crate::{Error, Result};

/// One term `scale · B A` of a low-rank update; `b` is out x r, `a` is r x in.
#[derive(Debug, Clone, Copy)]
pub struct Term<'a> {
    pub scale: f64,
    pub b: &'a DMatrix<f64>,
    pub a: &'a DMatrix<f64>,
}

/// The leading singular triplets of a low-rank matrix and its squared Frobenius norm.
#[derive(Debug, Clone, PartialEq)]
pub struct Triplets {
    /// out x k, orthonormal columns.
    pub u: DMatrix<f64>,
    /// Descending singular values.
    pub sigma: Vec<f64>,
    /// in x k, orthonormal columns.
    pub v: DMatrix<f64>,
    /// ‖M‖²_F, exactly (the core has the same singular values as M).
    pub frobenius_sq: f64,
}

impl Triplets {
    /// σ1² / ‖M‖²_F: the share of the update in its top direction (0 for a zero matrix).
    pub fn energy(&self) -> f64 {
        match self.sigma.first() {
            Some(s) if self.frobenius_sq > 0.0 => s * s / self.frobenius_sq,
            _ => 0.0,
        }
    }
}

/// The top `k` singular triplets of `Σ terms` (k is capped by the total rank).
pub fn top_k(terms: &[Term], k: usize) -> Result<Triplets> {
    let first = terms
        .first()
        .ok_or_else(|| Error::Shape("no terms".into()))?;
    let (out, inp) = (first.b.nrows(), first.a.ncols());
    let mut rank = 0;
    for (i, t) in terms.iter().enumerate() {
        if t.b.nrows() != out || t.a.ncols() != inp || t.b.ncols() != t.a.nrows() {
            return Err(Error::Shape(format!(
                "term {i}: B is {}x{}, A is {}x{}; expected B out({out}) x r and A r x in({inp})",
                t.b.nrows(),
                t.b.ncols(),
                t.a.nrows(),
                t.a.ncols()
            )));
        }
        if !t.scale.is_finite() || t.b.iter().chain(t.a.iter()).any(|x| !x.is_finite()) {
            return Err(Error::NotFinite(format!(
                "term {i} has a NaN or infinite value"
            )));
        }
        rank += t.b.ncols();
    }
    let mut l = DMatrix::<f64>::zeros(out, rank);
    let mut rt = DMatrix::<f64>::zeros(inp, rank);
    let mut col = 0;
    for t in terms {
        let r = t.b.ncols();
        l.columns_mut(col, r).copy_from(&(t.b * t.scale));
        rt.columns_mut(col, r).copy_from(&t.a.transpose());
        col += r;
    }
    let (ql, rl) = l.qr().unpack();
    let (qr, rr) = rt.qr().unpack();
    let core = &rl * rr.transpose();
    let mut frobenius_sq = core.norm_squared();
    // Terms that cancel (W_t - W_t, a zero B) leave rounding noise: call it zero, relative to
    // the size of the terms, so that a zero delta has σ = 0 and energy 0.
    let scale: f64 = terms
        .iter()
        .map(|t| t.scale * t.scale * t.b.norm_squared() * t.a.norm_squared())
        .sum();
    let zero = frobenius_sq <= 1e-24 * scale;
    if zero {
        frobenius_sq = 0.0;
    }
    let svd = core.svd(true, true);
    let (uc, vtc) = (svd.u.expect("requested U"), svd.v_t.expect("requested Vᵀ"));
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
    let k = k.min(order.len());
    let mut u = DMatrix::<f64>::zeros(out, k);
    let mut v = DMatrix::<f64>::zeros(inp, k);
    let mut sigma = Vec::with_capacity(k);
    for (j, &i) in order.iter().take(k).enumerate() {
        u.set_column(j, &(&ql * uc.column(i)));
        v.set_column(j, &(&qr * vtc.row(i).transpose()));
        sigma.push(if zero { 0.0 } else { svd.singular_values[i] });
    }
    Ok(Triplets {
        u,
        sigma,
        v,
        frobenius_sq,
    })
}

/// Flips `(u_t, v_t)` together when `u_t · u_(t-1) < 0`, so that a trajectory of top
/// directions is continuous (SVD signs are arbitrary). Returns, per step, whether it was flipped,
/// so the raw signs stay recoverable.
pub fn align_signs(
    us: &mut [nalgebra::DVector<f64>],
    vs: &mut [nalgebra::DVector<f64>],
) -> Vec<bool> {
    let mut flipped = vec![false; us.len()];
    for t in 1..us.len() {
        if us[t].dot(&us[t - 1]) < 0.0 {
            us[t].neg_mut();
            vs[t].neg_mut();
            flipped[t] = true;
        }
    }
    flipped
}
