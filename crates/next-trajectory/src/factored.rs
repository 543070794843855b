//! Top singular triplets of `Σ_i s_i B_i A_i` (a LoRA update, or the difference of two) from the
//! factors alone. With `L = [s_1 B_1, s_2 B_2, ...]` (out x k) and `R = [A_1; A_2; ...]`
//! (k x in), the eigendecompositions of the k x k Gram matrices `LᵀL = V D_L Vᵀ` and
//! `R Rᵀ = W D_R Wᵀ` give `L = Q_L S_L Vᵀ` and `R = W S_R Q_Rᵀ` with orthonormal `Q`s, so
//! `L R = Q_L (S_L Vᵀ W S_R) Q_Rᵀ` and the SVD of the k x k core is the SVD of the whole matrix.
//! Cost: two `n x k` Gram products (BLAS-3) plus O(k³); no full matrix and no thin QR is formed,
//! and only the k requested columns of `Q` are ever built.
//!
//! A difference of two checkpoints is written as `(s B_new − s' B_old) A_new + s' B_old (A_new −
//! A_old)` rather than `s B_new A_new − s' B_old A_old`: when the checkpoints are close, the two
//! terms then stay small instead of cancelling, which keeps the Gram route accurate.

use nalgebra::{DMatrix, DVector};

use crate::{Error, Result};

/// One term `scale · B A` of a low-rank update; `b` is out x r, `a` is r x in.
#[derive(Debug, Clone, Copy)]
pub struct Term<'a> {
    pub scale: f64,
    pub b: &'a DMatrix<f64>,
    pub a: &'a DMatrix<f64>,
}

/// A LoRA update `scale · B A` with owned factors (f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    pub scale: f64,
    /// out x r
    pub b: DMatrix<f64>,
    /// r x in
    pub a: DMatrix<f64>,
}

impl Factors {
    pub fn term(&self) -> Term<'_> {
        Term {
            scale: self.scale,
            b: &self.b,
            a: &self.a,
        }
    }
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

/// The top `k` triplets of `new − old`, where either side may be absent (the base weights, a
/// zero update). Both absent is a zero matrix of unknown shape and is refused.
pub fn top_k_difference(
    new: Option<&Factors>,
    old: Option<&Factors>,
    k: usize,
) -> Result<Triplets> {
    match (new, old) {
        (Some(n), None) => top_k(&[n.term()], k),
        (None, Some(o)) => top_k(
            &[Term {
                scale: -o.scale,
                b: &o.b,
                a: &o.a,
            }],
            k,
        ),
        (Some(n), Some(o)) => {
            if n.b.shape() != o.b.shape() || n.a.shape() != o.a.shape() {
                return Err(Error::Shape(format!(
                    "factors change shape between checkpoints: B {:?} vs {:?}, A {:?} vs {:?}",
                    n.b.shape(),
                    o.b.shape(),
                    n.a.shape(),
                    o.a.shape()
                )));
            }
            let db = &n.b * n.scale - &o.b * o.scale;
            let da = &n.a - &o.a;
            top_k(
                &[
                    Term {
                        scale: 1.0,
                        b: &db,
                        a: &n.a,
                    },
                    Term {
                        scale: o.scale,
                        b: &o.b,
                        a: &da,
                    },
                ],
                k,
            )
        }
        (None, None) => Err(Error::Shape("a difference of two absent updates".into())),
    }
}

/// A Gram matrix's eigenbasis restricted to the numerically non-zero part: (eigenvectors as
/// columns, their singular values), descending.
fn gram_basis(g: DMatrix<f64>) -> (DMatrix<f64>, Vec<f64>) {
    let eig = g.symmetric_eigen();
    let mut idx: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    idx.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let max = idx.first().map_or(0.0, |&i| eig.eigenvalues[i]).max(0.0);
    // Eigenvalues below this are rounding noise of the Gram product (relative 1e-14 ≈ a singular
    // value 1e-7 of the largest); dropping them changes the product by less than that.
    let keep: Vec<usize> = idx
        .into_iter()
        .filter(|&i| max > 0.0 && eig.eigenvalues[i] > max * 1e-14)
        .collect();
    let mut basis = DMatrix::<f64>::zeros(eig.eigenvectors.nrows(), keep.len());
    let mut svals = Vec::with_capacity(keep.len());
    for (j, &i) in keep.iter().enumerate() {
        basis.set_column(j, &eig.eigenvectors.column(i));
        svals.push(eig.eigenvalues[i].sqrt());
    }
    (basis, svals)
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
    let mut r = DMatrix::<f64>::zeros(rank, inp);
    let mut col = 0;
    for t in terms {
        let n = t.b.ncols();
        // Balance each term (‖B‖ = ‖A‖, same product) so that a small term paired with a large
        // factor does not sink below the rounding of the Gram products.
        let (nb, na) = (t.b.norm() * t.scale.abs(), t.a.norm());
        let c = if nb > 0.0 && na > 0.0 {
            (na / nb).sqrt()
        } else {
            1.0
        };
        l.columns_mut(col, n).copy_from(&(t.b * (t.scale * c)));
        r.rows_mut(col, n).copy_from(&(t.a / c));
        col += n;
    }
    let (vl, sl) = gram_basis(l.tr_mul(&l));
    let (wr, sr) = gram_basis(&r * r.transpose());
    // core = S_L Vᵀ W S_R
    let mut core = vl.tr_mul(&wr);
    for (i, s) in sl.iter().enumerate() {
        core.row_mut(i).scale_mut(*s);
    }
    for (j, s) in sr.iter().enumerate() {
        core.column_mut(j).scale_mut(*s);
    }
    let frobenius_sq = core.norm_squared();
    let empty = || Triplets {
        u: DMatrix::zeros(out, 0),
        sigma: vec![],
        v: DMatrix::zeros(inp, 0),
        frobenius_sq: 0.0,
    };
    // Terms that cancel (W_t − W_t, a zero B) leave rounding noise: call it zero, relative to
    // the size of the terms, so that a zero delta has σ = 0 and energy 0.
    let size: f64 = terms
        .iter()
        .map(|t| t.scale * t.scale * t.b.norm_squared() * t.a.norm_squared())
        .sum();
    if core.is_empty() || frobenius_sq <= 1e-24 * size {
        let mut t = empty();
        if k > 0 && out > 0 && inp > 0 {
            // A zero matrix: σ = 0 with arbitrary unit directions, so shapes stay uniform.
            let mut u = DMatrix::zeros(out, 1);
            let mut v = DMatrix::zeros(inp, 1);
            u[(0, 0)] = 1.0;
            v[(0, 0)] = 1.0;
            t = Triplets {
                u,
                sigma: vec![0.0],
                v,
                frobenius_sq: 0.0,
            };
        }
        return Ok(t);
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
        // u = L V S_L⁻¹ u_c and v = Rᵀ W S_R⁻¹ v_c: one thin product each.
        let cu = DVector::from_iterator(sl.len(), (0..sl.len()).map(|p| uc[(p, i)] / sl[p]));
        let cv = DVector::from_iterator(sr.len(), (0..sr.len()).map(|p| vtc[(i, p)] / sr[p]));
        let mut uj = &l * (&vl * cu);
        let mut vj = r.tr_mul(&(&wr * cv));
        // The Gram route is orthonormal up to rounding; make the returned vectors exactly unit.
        uj.normalize_mut();
        vj.normalize_mut();
        u.set_column(j, &uj);
        v.set_column(j, &vj);
        sigma.push(svd.singular_values[i]);
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
pub fn align_signs(us: &mut [DVector<f64>], vs: &mut [DVector<f64>]) -> Vec<bool> {
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
