//! Top singular triplets of `Σ_i s_i B_i A_i` (a LoRA update, or the difference of two) from the
//! factors alone. With `L = [s_1 B_1, s_2 B_2, ...]` (out x k) and `R = [A_1; A_2; ...]`
//! (k x in), the eigendecomposition of the k x k Gram matrix `LᵀL = V S² Vᵀ` gives
//! `L = Q S Vᵀ` with orthonormal `Q`, so `M Mᵀ = Q (S Vᵀ R Rᵀ V S) Qᵀ`: the eigenpairs of that
//! k x k matrix are the squared singular values of `M` and its left singular vectors in the
//! basis `Q`. Cost: two `n x k` Gram products (one GEMM each) plus O(k³); no full matrix and no
//! thin QR is formed, and only the k requested singular vectors are ever built.
//!
//! A difference of two checkpoints is written as `(s B_new − s' B_old) A_new + s' B_old (A_new −
//! A_old)` rather than `s B_new A_new − s' B_old A_old`: when the checkpoints are close, the two
//! terms then stay small instead of cancelling, which keeps the Gram route accurate.

use nalgebra::{DMatrix, DVector};

use crate::{Error, Result};

/// One term `scale · B A` of a low-rank update, held transposed: `bt` = Bᵀ (r x out) and
/// `at` = Aᵀ (in x r). That is PEFT's row-major `lora_B` / `lora_A` read column-major, so
/// loading needs no transpose and every product below runs on contiguous columns.
#[derive(Debug, Clone, Copy)]
pub struct Term<'a> {
    pub scale: f64,
    pub bt: &'a DMatrix<f64>,
    pub at: &'a DMatrix<f64>,
}

/// A LoRA update `scale · B A` with owned factors (f64), held transposed like [`Term`].
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    pub scale: f64,
    /// Bᵀ, r x out
    pub bt: DMatrix<f64>,
    /// Aᵀ, in x r
    pub at: DMatrix<f64>,
}

impl Factors {
    /// From B (out x r) and A (r x in).
    pub fn new(scale: f64, b: &DMatrix<f64>, a: &DMatrix<f64>) -> Self {
        Self {
            scale,
            bt: b.transpose(),
            at: a.transpose(),
        }
    }

    pub fn term(&self) -> Term<'_> {
        Term {
            scale: self.scale,
            bt: &self.bt,
            at: &self.at,
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
                bt: &o.bt,
                at: &o.at,
            }],
            k,
        ),
        (Some(n), Some(o)) => {
            if n.bt.shape() != o.bt.shape() || n.at.shape() != o.at.shape() {
                return Err(Error::Shape(format!(
                    "factors change shape between checkpoints: Bᵀ {:?} vs {:?}, Aᵀ {:?} vs {:?}",
                    n.bt.shape(),
                    o.bt.shape(),
                    n.at.shape(),
                    o.at.shape()
                )));
            }
            let dbt = &n.bt * n.scale - &o.bt * o.scale;
            let dat = &n.at - &o.at;
            top_k(
                &[
                    Term {
                        scale: 1.0,
                        bt: &dbt,
                        at: &n.at,
                    },
                    Term {
                        scale: o.scale,
                        bt: &o.bt,
                        at: &dat,
                    },
                ],
                k,
            )
        }
        (None, None) => Err(Error::Shape("a difference of two absent updates".into())),
    }
}

/// `X Yᵀ` for X (p x n) and Y (q x n), column-major.
fn cross_rows(x: &DMatrix<f64>, y: &DMatrix<f64>) -> DMatrix<f64> {
    assert_eq!(x.ncols(), y.ncols(), "cross_rows: inner dimensions");
    // A = X (strides 1, p); B = Yᵀ (n x q): element (c, j) = Y(j, c) at j + c·q.
    strided_gemm(
        (x.nrows(), x.ncols(), y.nrows()),
        (x.as_slice(), 1, x.nrows()),
        (y.as_slice(), y.nrows(), 1),
    )
}

/// `Xᵀ Y` for X (n x p) and Y (n x q), column-major.
fn cross_cols(x: &DMatrix<f64>, y: &DMatrix<f64>) -> DMatrix<f64> {
    assert_eq!(x.nrows(), y.nrows(), "cross_cols: inner dimensions");
    // A = Xᵀ (p x n): element (i, c) = X(c, i) at c + i·n; B = Y (strides 1, n).
    strided_gemm(
        (x.ncols(), x.nrows(), y.ncols()),
        (x.as_slice(), x.nrows(), 1),
        (y.as_slice(), 1, y.nrows()),
    )
}

/// `A B` (m x n) for operands given as (storage, row stride, column stride), by one call of the
/// blocked GEMM kernel on the operands' own storage. nalgebra's `tr_mul` takes a dot-product
/// path (measured 4 GFLOP/s on 10496 x 64, against 30 for the kernel) and an explicit
/// transpose costs as much as the product itself.
fn strided_gemm(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (&[f64], usize, usize),
    (b, rsb, csb): (&[f64], usize, usize),
) -> DMatrix<f64> {
    let mut c = DMatrix::<f64>::zeros(m, n);
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len());
    // SAFETY: the assertion above keeps every element the kernel reads inside `a` and `b`;
    // `c` is a fresh m x n column-major buffer (strides 1, m) that nothing else borrows.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            0.0,
            c.as_mut_ptr(),
            1,
            m as isize,
        );
    }
    c
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
    let (out, inp) = (first.bt.ncols(), first.at.nrows());
    for (i, t) in terms.iter().enumerate() {
        if t.bt.ncols() != out || t.at.nrows() != inp || t.bt.nrows() != t.at.ncols() {
            return Err(Error::Shape(format!(
                "term {i}: B is {}x{}, A is {}x{}; expected B out({out}) x r and A r x in({inp})",
                t.bt.ncols(),
                t.bt.nrows(),
                t.at.ncols(),
                t.at.nrows()
            )));
        }
    }
    // L = [s_i B_i] and R = [A_i] are never assembled: their Gram matrices are built block by
    // block from the factors' own storage (assembling costs more than the products, measured),
    // the diagonal blocks first since their traces are the terms' squared norms.
    let mut offsets = Vec::with_capacity(terms.len());
    let mut rank = 0;
    for t in terms {
        offsets.push(rank);
        rank += t.bt.nrows();
    }
    let self_l: Vec<DMatrix<f64>> = terms.iter().map(|t| cross_rows(t.bt, t.bt)).collect();
    let self_r: Vec<DMatrix<f64>> = terms.iter().map(|t| cross_cols(t.at, t.at)).collect();
    // Per term: (coefficient of its B block, of its A block).
    let mut coef = Vec::with_capacity(terms.len());
    let mut size = 0.0;
    for (i, t) in terms.iter().enumerate() {
        let (nb, na) = (t.scale * t.scale * self_l[i].trace(), self_r[i].trace());
        // A NaN or infinity anywhere makes a sum of squares non-finite.
        if !(nb * na).is_finite() {
            return Err(Error::NotFinite(format!(
                "term {i} has a NaN or infinite value"
            )));
        }
        // Balance each term (‖B‖ = ‖A‖, same product) so that a small term paired with a large
        // factor does not sink below the rounding of the eigendecomposition.
        let c = if nb > 0.0 && na > 0.0 {
            (na / nb).sqrt().sqrt()
        } else {
            1.0
        };
        coef.push((t.scale * c, 1.0 / c));
        size += nb * na;
    }
    let mut gl = DMatrix::<f64>::zeros(rank, rank);
    let mut gr = DMatrix::<f64>::zeros(rank, rank);
    for (i, ti) in terms.iter().enumerate() {
        for (j, tj) in terms.iter().enumerate().skip(i) {
            let (bl, br) = if i == j {
                (self_l[i].clone(), self_r[i].clone())
            } else {
                (cross_rows(ti.bt, tj.bt), cross_cols(ti.at, tj.at))
            };
            let (ri, rj) = (ti.bt.nrows(), tj.bt.nrows());
            let (bl, br) = (bl * (coef[i].0 * coef[j].0), br * (coef[i].1 * coef[j].1));
            gl.view_mut((offsets[i], offsets[j]), (ri, rj))
                .copy_from(&bl);
            gr.view_mut((offsets[i], offsets[j]), (ri, rj))
                .copy_from(&br);
            if i != j {
                gl.view_mut((offsets[j], offsets[i]), (rj, ri))
                    .copy_from(&bl.transpose());
                gr.view_mut((offsets[j], offsets[i]), (rj, ri))
                    .copy_from(&br.transpose());
            }
        }
    }
    // Factor LᵀL: with a well-conditioned Cholesky LᵀL = C Cᵀ, L = Q Cᵀ and
    // M Mᵀ = Q (Cᵀ (R Rᵀ) C) Qᵀ, so the eigenpairs (σ², y) of that small matrix give σ,
    // u = L C⁻ᵀ y and v = Mᵀu / σ = Rᵀ (C y) / σ. Otherwise (rank-deficient factors) the same
    // with C = V S from the eigendecomposition, dropping the null space: u = L V S⁻¹ y.
    let basis = Basis::new(gl);
    let inner = basis.c.tr_mul(&gr) * &basis.c;
    let frobenius_sq = inner.trace().max(0.0);
    // Terms that cancel (W_t − W_t, a zero B) leave rounding noise: call it zero, relative to
    // the size of the terms, so that a zero delta has σ = 0 and energy 0.
    if inner.is_empty() || frobenius_sq <= 1e-24 * size {
        return Ok(zero(out, inp, k));
    }
    let eig = inner.symmetric_eigen();
    let mut order: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let k = k.min(order.len());
    let mut u = DMatrix::<f64>::zeros(out, k);
    let mut v = DMatrix::<f64>::zeros(inp, k);
    let mut sigma = Vec::with_capacity(k);
    for (j, &e) in order.iter().take(k).enumerate() {
        let y = eig.eigenvectors.column(e).into_owned();
        let (wl, wr) = (basis.left(&y), &basis.c * &y);
        let mut uj = DVector::<f64>::zeros(out);
        let mut vj = DVector::<f64>::zeros(inp);
        for (i, t) in terms.iter().enumerate() {
            let n = t.bt.nrows();
            uj += t.bt.tr_mul(&wl.rows(offsets[i], n)) * coef[i].0;
            vj += (t.at * wr.rows(offsets[i], n)) * coef[i].1;
        }
        // Orthonormal up to rounding; make the returned vectors exactly unit.
        uj.normalize_mut();
        vj.normalize_mut();
        u.set_column(j, &uj);
        v.set_column(j, &vj);
        sigma.push(eig.eigenvalues[e].max(0.0).sqrt());
    }
    Ok(Triplets {
        u,
        sigma,
        v,
        frobenius_sq,
    })
}

/// A factor C of a Gram matrix G = C Cᵀ (k x k', k' ≤ k), and how to apply C⁻ᵀ.
struct Basis {
    c: DMatrix<f64>,
    /// Some: C is the Cholesky factor (lower triangular, k' = k). None: C = V S.
    cholesky: bool,
    /// With the eigen route: V and S (C = V S).
    v: DMatrix<f64>,
    s: Vec<f64>,
}

impl Basis {
    fn new(g: DMatrix<f64>) -> Self {
        // Cholesky costs a fraction of an eigendecomposition; use it when the pivots show a
        // well-conditioned G (ratio 1e-5, condition ≤ 1e10), where C⁻ᵀ amplifies rounding
        // by at most that much.
        if let Some(ch) = g.clone().cholesky() {
            let c = ch.unpack();
            let d = c.diagonal();
            let (lo, hi) = (d.min(), d.max());
            if hi > 0.0 && lo > 1e-5 * hi {
                return Self {
                    c,
                    cholesky: true,
                    v: DMatrix::zeros(0, 0),
                    s: vec![],
                };
            }
        }
        let (v, s) = gram_basis(g);
        let mut c = v.clone();
        for (j, x) in s.iter().enumerate() {
            c.column_mut(j).scale_mut(*x);
        }
        Self {
            c,
            cholesky: false,
            v,
            s,
        }
    }

    /// C⁻ᵀ y (on the kept subspace).
    fn left(&self, y: &DVector<f64>) -> DVector<f64> {
        if self.cholesky {
            self.c
                .tr_solve_lower_triangular(y)
                .expect("a Cholesky factor with positive pivots is invertible")
        } else {
            let scaled =
                DVector::from_iterator(self.s.len(), (0..self.s.len()).map(|p| y[p] / self.s[p]));
            &self.v * scaled
        }
    }
}

/// A zero matrix's result: σ = 0 with arbitrary unit directions, so that shapes stay uniform.
fn zero(out: usize, inp: usize, k: usize) -> Triplets {
    let n = usize::from(k > 0 && out > 0 && inp > 0);
    let mut u = DMatrix::zeros(out, n);
    let mut v = DMatrix::zeros(inp, n);
    if n == 1 {
        u[(0, 0)] = 1.0;
        v[(0, 0)] = 1.0;
    }
    Triplets {
        u,
        sigma: vec![0.0; n],
        v,
        frobenius_sq: 0.0,
    }
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
