//! Full-parameter mode: checkpoints that hold whole weights (a full fine-tuning run). The top
//! triplets of `W_t − W_0` come from Golub–Kahan–Lanczos bidiagonalisation with full
//! reorthogonalisation, which needs only products with the delta and its transpose; one delta
//! (f64) is materialised per matrix being processed, streamed from the memory-mapped files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};

use crate::factored::Triplets;
use crate::tensors::Mapped;
use crate::{Error, Result};

/// An HF model directory of (possibly sharded) safetensors, tensors located by name.
#[derive(Debug)]
pub struct Weights {
    pub dir: PathBuf,
    files: Vec<Mapped>,
    by_name: BTreeMap<String, usize>,
}

impl Weights {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::format(dir, "holds no .safetensors weights"));
        }
        let mut files = vec![];
        let mut by_name = BTreeMap::new();
        for p in paths {
            let f = Mapped::open(&p)?;
            for n in f.names() {
                by_name.insert(n, files.len());
            }
            files.push(f);
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
            by_name,
        })
    }

    /// The 2-D weights of the transformer blocks (`...layers.N....weight`), with their shapes;
    /// embeddings and the LM head are left out, as in the LoRA targets.
    pub fn block_matrices(&self) -> Vec<(String, usize, usize)> {
        self.by_name
            .iter()
            .filter(|(n, _)| n.contains(".layers.") && n.ends_with(".weight"))
            .filter_map(|(n, &f)| match self.files[f].info(n)?.shape[..] {
                [out, inp] => Some((n.clone(), out, inp)),
                _ => None,
            })
            .collect()
    }

    pub fn matrix(&self, name: &str) -> Result<DMatrix<f64>> {
        let f = self
            .by_name
            .get(name)
            .ok_or_else(|| Error::format(&self.dir, format!("no tensor `{name}`")))?;
        self.files[*f].matrix(name)
    }

    /// The weight files.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// The top `k` singular triplets of a dense matrix by Lanczos bidiagonalisation (seeded start).
/// Converges when the top Ritz values stop moving (relative 1e-13) or the Krylov space is
/// exhausted.
pub fn top_k_dense(m: &DMatrix<f64>, k: usize, seed: u64) -> Triplets {
    let (out, inp) = m.shape();
    let frobenius_sq = m.norm_squared();
    let max_iter = out.min(inp);
    if frobenius_sq == 0.0 || k == 0 || max_iter == 0 {
        let mut u = DMatrix::zeros(out, k.min(1));
        let mut v = DMatrix::zeros(inp, k.min(1));
        if k > 0 && out > 0 && inp > 0 {
            u[(0, 0)] = 1.0;
            v[(0, 0)] = 1.0;
        }
        return Triplets {
            u,
            sigma: vec![0.0; k.min(1)],
            v,
            frobenius_sq: 0.0,
        };
    }
    let breakdown = 1e-12 * frobenius_sq.sqrt();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = DVector::from_fn(inp, |_, _| rng.random_range(-1.0..1.0));
    v.normalize_mut();
    let mut us: Vec<DVector<f64>> = vec![];
    let mut vs: Vec<DVector<f64>> = vec![v];
    let (mut alphas, mut betas): (Vec<f64>, Vec<f64>) = (vec![], vec![]);
    let mut history: Vec<Vec<f64>> = vec![];
    let mut best: Option<Ritz> = None;
    for j in 0..max_iter {
        let mut u = m * &vs[j];
        if let Some(prev) = us.last() {
            u.axpy(-betas[j - 1], prev, 1.0);
        }
        reorthogonalise(&mut u, &us);
        let alpha = u.norm();
        if alpha <= breakdown {
            // The Krylov space is exhausted (an exactly low-rank delta): M [V, v_j] = U B̃ with
            // the rectangular B̃ = [B | β e], whose triplets are exact.
            if j > 0 {
                best = Some(ritz(&alphas, &betas, &us, &vs, k));
            }
            break;
        }
        u /= alpha;
        us.push(u);
        alphas.push(alpha);
        let mut w = m.tr_mul(&us[j]);
        w.axpy(-alpha, &vs[j], 1.0);
        reorthogonalise(&mut w, &vs);
        let beta = w.norm();
        let r = ritz(&alphas, &betas, &us, &vs, k);
        let converged = r.0.len() == k
            && history.len() >= 2
            && history[history.len() - 2..].iter().all(|h| {
                h.len() == k
                    && h.iter()
                        .zip(&r.0)
                        .all(|(a, b)| (a - b).abs() <= 1e-13 * r.0[0])
            });
        history.push(r.0.clone());
        best = Some(r);
        if converged || beta <= breakdown {
            break;
        }
        betas.push(beta);
        vs.push(w / beta);
    }
    let (sigma, u, v) = best.expect("at least one Lanczos step on a non-zero matrix");
    Triplets {
        u,
        sigma,
        v,
        frobenius_sq,
    }
}

/// Ritz values and vectors: (σ, U, V).
type Ritz = (Vec<f64>, DMatrix<f64>, DMatrix<f64>);

/// The top `k` triplets of the bidiagonal B (rows = `us.len()`, columns = `vs.len()`, which is
/// the same or one more) lifted to the Lanczos bases. From the eigenpairs of B Bᵀ rather than
/// an SVD of B: nalgebra's dense SVD misjudges rank-deficient matrices.
fn ritz(alphas: &[f64], betas: &[f64], us: &[DVector<f64>], vs: &[DVector<f64>], k: usize) -> Ritz {
    let (rows, cols) = (us.len(), vs.len());
    let mut b = DMatrix::<f64>::zeros(rows, cols);
    for i in 0..rows {
        b[(i, i)] = alphas[i];
        if i + 1 < cols {
            b[(i, i + 1)] = betas[i];
        }
    }
    let eig = (&b * b.transpose()).symmetric_eigen();
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by(|&a, &c| eig.eigenvalues[c].total_cmp(&eig.eigenvalues[a]));
    let kk = k.min(rows);
    let (out, inp) = (us[0].len(), vs[0].len());
    let mut uu = DMatrix::zeros(out, kk);
    let mut vv = DMatrix::zeros(inp, kk);
    let mut sig = Vec::with_capacity(kk);
    for (c, &i) in order[..kk].iter().enumerate() {
        let y = eig.eigenvectors.column(i);
        let x = b.tr_mul(&y);
        let mut col_u = DVector::zeros(out);
        let mut col_v = DVector::zeros(inp);
        for p in 0..rows {
            col_u.axpy(y[p], &us[p], 1.0);
        }
        for p in 0..cols {
            col_v.axpy(x[p], &vs[p], 1.0);
        }
        uu.set_column(c, &col_u.normalize());
        let n = col_v.norm();
        vv.set_column(c, &if n > 0.0 { col_v / n } else { col_v });
        sig.push(eig.eigenvalues[i].max(0.0).sqrt());
    }
    (sig, uu, vv)
}

/// Two passes of classical Gram–Schmidt against an orthonormal set ("twice is enough").
fn reorthogonalise(x: &mut DVector<f64>, basis: &[DVector<f64>]) {
    for _ in 0..2 {
        for q in basis {
            let c = q.dot(x);
            x.axpy(-c, q, 1.0);
        }
    }
}
