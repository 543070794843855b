//! Factored extraction against a full SVD of the merged delta, on random adapters of several
//! shapes and ranks, including rank-deficient and zero deltas; sign alignment.

use nalgebra::{DMatrix, DVector};
use next_trajectory::factored::{align_signs, top_k, top_k_difference, Factors, Term, Triplets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| rng.random_range(-1.0..1.0))
}

/// The full SVD of `m` (descending), from the symmetric eigendecomposition of the smaller Gram
/// matrix. (nalgebra's `svd` returned a first singular value larger than the Frobenius norm
/// for one of the rank-deficient cases below, so it cannot serve as the reference.)
fn reference_svd(m: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>, DMatrix<f64>) {
    let tall = m.nrows() >= m.ncols();
    let g = if tall {
        m.transpose() * m
    } else {
        m * m.transpose()
    };
    let dim = g.nrows();
    let eig = g.symmetric_eigen();
    let mut idx: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    idx.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let svals: Vec<f64> = idx
        .iter()
        .map(|&i| eig.eigenvalues[i].max(0.0).sqrt())
        .collect();
    let n = idx.len();
    let mut side = DMatrix::<f64>::zeros(dim, n);
    for (j, &i) in idx.iter().enumerate() {
        side.set_column(j, &eig.eigenvectors.column(i));
    }
    // The other side: M v / σ (or Mᵀ u / σ); zero for zero singular values.
    let mut other = if tall {
        m * &side
    } else {
        m.transpose() * &side
    };
    for (j, s) in svals.iter().enumerate() {
        let scale = if *s > 0.0 { 1.0 / s } else { 0.0 };
        other.column_mut(j).scale_mut(scale);
    }
    if tall {
        (svals, other, side)
    } else {
        (svals, side, other)
    }
}

/// `(scale, B, A)` terms as owned factors.
fn factors(terms: &[(f64, &DMatrix<f64>, &DMatrix<f64>)]) -> Vec<Factors> {
    terms
        .iter()
        .map(|(s, b, a)| Factors::new(*s, b, a))
        .collect()
}

/// The factored top-k of `(scale, B, A)` terms.
fn factored(
    terms: &[(f64, &DMatrix<f64>, &DMatrix<f64>)],
    k: usize,
) -> next_trajectory::Result<Triplets> {
    let owned = factors(terms);
    let terms: Vec<Term> = owned.iter().map(Factors::term).collect();
    top_k(&terms, k)
}

/// Compares the factored top-k of `(scale, B, A)` terms with the dense SVD of their sum.
fn check(terms: &[(f64, &DMatrix<f64>, &DMatrix<f64>)], k: usize) {
    let dense = terms.iter().fold(
        DMatrix::<f64>::zeros(terms[0].1.nrows(), terms[0].2.ncols()),
        |acc, (s, b, a)| acc + *b * *a * *s,
    );
    compare(&dense, &factored(terms, k).unwrap(), k);
}

/// Compares a factored result with the dense SVD of the matrix it should decompose.
fn compare(dense: &DMatrix<f64>, got: &Triplets, k: usize) {
    let (svals, u_ref, v_ref) = reference_svd(dense);
    let order: Vec<usize> = (0..svals.len()).collect();
    let fro = dense.norm_squared();
    assert!(
        (got.frobenius_sq - fro).abs() <= 1e-9 * fro.max(1e-12),
        "frobenius {} vs {fro}",
        got.frobenius_sq
    );
    let s_ref = svals[0];
    if s_ref < 1e-12 {
        assert!(
            got.sigma.first().is_none_or(|s| *s < 1e-9),
            "zero delta gave sigma {:?}",
            got.sigma
        );
        assert_eq!(got.energy(), 0.0);
        return;
    }
    assert!(
        (got.energy() - s_ref * s_ref / fro).abs() < 1e-9,
        "energy {} vs {} (sigma {:?}, fro {fro})",
        got.energy(),
        s_ref * s_ref / fro,
        got.sigma
    );
    for j in 0..k.min(got.sigma.len()) {
        let i = order[j];
        let s = svals[i];
        // Only well-separated singular values have well-defined vectors.
        let gap = order.get(j + 1).map_or(f64::INFINITY, |&n| s - svals[n]);
        // σ1 to 1e-6 relative; the others relative to σ1 (near-zero ones are noise).
        assert!(
            (got.sigma[j] - s).abs() <= 1e-6 * s_ref,
            "sigma {j}: {} vs {s}",
            got.sigma[j]
        );
        if gap > 1e-3 * s && s > 1e-6 * s_ref {
            let cu = got.u.column(j).dot(&u_ref.column(i)).abs();
            let cv = got.v.column(j).dot(&v_ref.column(i)).abs();
            assert!(
                cu > 1.0 - 1e-6 && cv > 1.0 - 1e-6,
                "direction {j}: |cos u| {cu}, |cos v| {cv}"
            );
        }
    }
}

#[test]
fn factored_equals_full_svd() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // (out, in, r) shapes, including r >= min(out, in) and very thin ones.
    for (out, inp, r) in [
        (64, 48, 4),
        (48, 64, 8),
        (96, 32, 1),
        (20, 20, 16),
        (128, 24, 32),
        (5, 300, 2),
    ] {
        let (b0, a0, b1, a1) = (
            random(&mut rng, out, r),
            random(&mut rng, r, inp),
            random(&mut rng, out, r),
            random(&mut rng, r, inp),
        );
        // One adapter; a global delta W_t - W_0; an rsLoRA-like scale.
        check(&[(2.0, &b1, &a1)], 3);
        check(&[(2.0, &b1, &a1), (-2.0, &b0, &a0)], 3);
        check(&[(0.5, &b1, &a1), (-0.25, &b0, &a0)], 1);
        // Rank-deficient: B with repeated columns; the same adapter twice (zero delta).
        let mut bd = b1.clone();
        for c in 1..r {
            let first = bd.column(0).clone_owned();
            bd.set_column(c, &first);
        }
        check(&[(1.0, &bd, &a1)], 2);
        check(&[(1.0, &b1, &a1), (-1.0, &b1, &a1)], 1);
        // Differences of checkpoints, far apart and very close (the local delta), and a
        // checkpoint against the base (absent old side).
        let old = Factors::new(2.0, &b0, &a0);
        for step in [1.0, 1e-3, 1e-5] {
            let (b1, a1) = (
                &b0 + random(&mut rng, out, r) * step,
                &a0 + random(&mut rng, r, inp) * step,
            );
            let new = Factors::new(2.0, &b1, &a1);
            let dense = (&b1 * &a1 - &b0 * &a0) * 2.0;
            compare(
                &dense,
                &top_k_difference(Some(&new), Some(&old), 2).unwrap(),
                2,
            );
        }
        compare(
            &(&b0 * &a0 * 2.0),
            &top_k_difference(Some(&old), None, 1).unwrap(),
            1,
        );
        let zb = DMatrix::<f64>::zeros(out, r);
        check(&[(1.0, &zb, &a1)], 1);
    }
}

#[test]
fn bad_terms_are_refused() {
    let b = DMatrix::<f64>::zeros(4, 2);
    let a = DMatrix::<f64>::zeros(3, 5);
    assert!(factored(&[(1.0, &b, &a)], 1)
        .unwrap_err()
        .to_string()
        .contains("term 0"));
    let mut a2 = DMatrix::<f64>::zeros(2, 5);
    a2[(0, 0)] = f64::NAN;
    assert!(factored(&[(1.0, &b, &a2)], 1)
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    assert!(top_k(&[], 1).is_err());
}

#[test]
fn signs_are_aligned_and_recoverable() {
    let u0 = DVector::from_vec(vec![1.0, 0.0]);
    let mut us = vec![u0.clone(), -u0.clone(), -u0.clone(), u0.clone()];
    let mut vs = vec![u0.clone(), -u0.clone(), -u0.clone(), u0.clone()];
    let flipped = align_signs(&mut us, &mut vs);
    assert_eq!(flipped, vec![false, true, true, false]);
    assert!(us.iter().chain(&vs).all(|x| x[0] > 0.0));
}
