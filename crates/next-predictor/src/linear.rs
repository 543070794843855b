//! The linear peers of NExt, on the rank-1 trajectory g_t = σ_t u_t v_tᵀ of W_t − W_0:
//! RLVR-Linearity's two-point extrapolation, AlphaRL's straight-line fit of u·σ (v from the
//! latest checkpoint) and RELEX's ordinary least squares along the top direction of the
//! stacked deltas. Each prediction is reduced to its top `rank` singular triplets exactly,
//! from its rank-1 terms.

use nalgebra::{DMatrix, DVector};
use next_trajectory::factored::{top_k, Term};
use serde_json::json;

use crate::{ensure_fitted, Error, Prediction, Result, Trajectory, TrajectoryPredictor};

/// The top `rank` triplets of `Σ c_i a_i b_iᵀ`.
pub(crate) fn reduce(
    module: &str,
    terms: &[(f64, &DVector<f64>, &DVector<f64>)],
    rank: usize,
) -> Result<Prediction> {
    let owned: Vec<(DMatrix<f64>, DMatrix<f64>)> = terms
        .iter()
        .map(|(_, a, b)| {
            (
                DMatrix::from_row_slice(1, a.len(), a.as_slice()),
                DMatrix::from_column_slice(b.len(), 1, b.as_slice()),
            )
        })
        .collect();
    let t: Vec<Term> = terms
        .iter()
        .zip(&owned)
        .map(|((c, _, _), (bt, at))| Term { scale: *c, bt, at })
        .collect();
    let tr = top_k(&t, rank)?;
    Ok(Prediction {
        module: module.to_string(),
        terms: (0..tr.sigma.len())
            .map(|j| {
                (
                    tr.sigma[j],
                    tr.u.column(j).into_owned(),
                    tr.v.column(j).into_owned(),
                )
            })
            .collect(),
    })
}

/// A JSON value as `T`, naming what is wrong.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    v: &serde_json::Value,
    what: &str,
) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

/// Ordinary least squares y ≈ a + b t; returns (a, b).
fn ols(t: &[f64], y: &[f64]) -> (f64, f64) {
    let n = t.len() as f64;
    let mt = t.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let stt: f64 = t.iter().map(|x| (x - mt).powi(2)).sum();
    let sty: f64 = t.iter().zip(y).map(|(x, z)| (x - mt) * (z - my)).sum();
    let b = if stt > 0.0 { sty / stt } else { 0.0 };
    (my - b * mt, b)
}

/// RLVR-Linearity: W_(t+h) = W_0 + ((t+h)/t)(W_t − W_0), so the change is (h/t) g_t.
#[derive(Debug, Default)]
pub struct TwoPoint;

impl TrajectoryPredictor for TwoPoint {
    fn name(&self) -> &'static str {
        "two-point"
    }

    fn fit(&mut self, trajectory: &Trajectory) -> Result<()> {
        trajectory.check(1)
    }

    fn predict(
        &self,
        trajectory: &Trajectory,
        horizon: u64,
        rank: usize,
    ) -> Result<Vec<Prediction>> {
        trajectory.check(1)?;
        let t = trajectory.last_step() as f64;
        let alpha = horizon as f64 / t;
        trajectory
            .series
            .iter()
            .map(|s| {
                let l = s.last();
                reduce(&s.module, &[(alpha * s.sigma[l], &s.u[l], &s.v[l])], rank)
            })
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        json!({"predictor": self.name()})
    }

    fn save(&self, _: &std::path::Path) -> Result<serde_json::Value> {
        Ok(json!({}))
    }

    fn load(&mut self, _: &serde_json::Value, _: &std::path::Path) -> Result<()> {
        Ok(())
    }
}

/// AlphaRL: a straight line through the aligned u_t σ_t over the window, per coordinate,
/// evaluated at t + h; v from the latest checkpoint.
#[derive(Debug)]
pub struct AlphaRl {
    window: Option<usize>,
    /// Per module: (intercept, slope) vectors of u·σ against the step.
    fits: Vec<(DVector<f64>, DVector<f64>)>,
}

impl AlphaRl {
    pub fn new(window: Option<usize>) -> Self {
        Self {
            window,
            fits: vec![],
        }
    }
}

impl TrajectoryPredictor for AlphaRl {
    fn name(&self) -> &'static str {
        "linear-alpharl"
    }

    fn fit(&mut self, trajectory: &Trajectory) -> Result<()> {
        trajectory.check(2)?;
        self.fits = trajectory
            .series
            .iter()
            .map(|s| {
                let w = s.window(self.window, 2);
                let t: Vec<f64> = s.steps[w.clone()].iter().map(|x| *x as f64).collect();
                let n = s.u[0].len();
                let mut a = DVector::zeros(n);
                let mut b = DVector::zeros(n);
                for i in 0..n {
                    let y: Vec<f64> = w.clone().map(|k| s.u[k][i] * s.sigma[k]).collect();
                    (a[i], b[i]) = ols(&t, &y);
                }
                (a, b)
            })
            .collect();
        Ok(())
    }

    fn predict(
        &self,
        trajectory: &Trajectory,
        horizon: u64,
        rank: usize,
    ) -> Result<Vec<Prediction>> {
        ensure_fitted(self.name(), self.fits.len(), trajectory)?;
        let target = (trajectory.last_step() + horizon) as f64;
        trajectory
            .series
            .iter()
            .zip(&self.fits)
            .map(|(s, (a, b))| {
                let l = s.last();
                // (a + b t*) v_tᵀ − σ_t u_t v_tᵀ = (a + b t* − σ_t u_t) v_tᵀ.
                let d = a + b * target - &s.u[l] * s.sigma[l];
                let norm = d.norm();
                let unit = if norm > 0.0 { d / norm } else { d };
                reduce(&s.module, &[(norm, &unit, &s.v[l])], rank)
            })
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        json!({"predictor": self.name(), "window": self.window, "modules": self.fits.len()})
    }

    fn save(&self, _: &std::path::Path) -> Result<serde_json::Value> {
        let fits: Vec<(&[f64], &[f64])> = self
            .fits
            .iter()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
            .collect();
        Ok(json!({ "fits": fits }))
    }

    fn load(&mut self, params: &serde_json::Value, _: &std::path::Path) -> Result<()> {
        let fits: Vec<(Vec<f64>, Vec<f64>)> = from_json(&params["fits"], "linear-alpharl fits")?;
        self.fits = fits
            .into_iter()
            .map(|(a, b)| (DVector::from_vec(a), DVector::from_vec(b)))
            .collect();
        Ok(())
    }
}

/// RELEX: the top direction V1 of the stacked g_t over the window (from their Gram matrix,
/// ⟨g_i, g_j⟩ = σ_i σ_j (u_i·u_j)(v_i·v_j)), the coefficients c_t = ⟨g_t, V1⟩ fitted by OLS
/// against the step; the prediction W_0 + c(t+h) V1.
#[derive(Debug)]
pub struct Relex {
    window: Option<usize>,
    fits: Vec<RelexFit>,
}

/// One matrix's RELEX fit: the window's indices, V1's weights on them (V1 = Σ w_i g_i), and
/// the line c(t) = a + b t.
type RelexFit = (std::ops::Range<usize>, Vec<f64>, (f64, f64));

/// A RELEX fit as saved: (window start, end), V1's weights, the line.
type SavedRelex<W> = ((usize, usize), W, (f64, f64));

impl Relex {
    pub fn new(window: Option<usize>) -> Self {
        Self {
            window,
            fits: vec![],
        }
    }
}

impl TrajectoryPredictor for Relex {
    fn name(&self) -> &'static str {
        "linear-relex"
    }

    fn fit(&mut self, trajectory: &Trajectory) -> Result<()> {
        trajectory.check(2)?;
        self.fits = trajectory
            .series
            .iter()
            .map(|s| {
                let w = s.window(self.window, 2);
                let idx: Vec<usize> = w.clone().collect();
                let n = idx.len();
                let (g, eig) = s.gram(&w);
                let top = (0..n)
                    .max_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]))
                    .expect("n >= 2");
                let lambda = eig.eigenvalues[top].max(0.0);
                let mut wv: Vec<f64> = eig.eigenvectors.column(top).iter().copied().collect();
                // Orient V1 along the latest delta so that c_t grows with training.
                if wv
                    .iter()
                    .zip(g.column(n - 1).iter())
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    < 0.0
                {
                    wv.iter_mut().for_each(|x| *x = -*x);
                }
                let (weights, line) = if lambda > 0.0 {
                    let sq = lambda.sqrt();
                    // V1 = Σ w_i g_i / √λ; c_t = (G w)_t / √λ = √λ w_t on the window.
                    let c: Vec<f64> = wv.iter().map(|x| sq * x).collect();
                    let t: Vec<f64> = idx.iter().map(|&k| s.steps[k] as f64).collect();
                    (wv.iter().map(|x| x / sq).collect(), ols(&t, &c))
                } else {
                    (vec![0.0; n], (0.0, 0.0))
                };
                (w, weights, line)
            })
            .collect();
        Ok(())
    }

    fn predict(
        &self,
        trajectory: &Trajectory,
        horizon: u64,
        rank: usize,
    ) -> Result<Vec<Prediction>> {
        ensure_fitted(self.name(), self.fits.len(), trajectory)?;
        let target = (trajectory.last_step() + horizon) as f64;
        trajectory
            .series
            .iter()
            .zip(&self.fits)
            .map(|(s, (w, weights, (a, b)))| {
                let c = a + b * target;
                let l = s.last();
                // c V1 − g_t = Σ_i c w_i σ_i u_i v_iᵀ − σ_t u_t v_tᵀ.
                let mut terms: Vec<(f64, &DVector<f64>, &DVector<f64>)> = w
                    .clone()
                    .zip(weights)
                    .map(|(k, wk)| (c * wk * s.sigma[k], &s.u[k], &s.v[k]))
                    .collect();
                terms.push((-s.sigma[l], &s.u[l], &s.v[l]));
                reduce(&s.module, &terms, rank)
            })
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        let lines: Vec<(f64, f64)> = self.fits.iter().map(|f| f.2).collect();
        json!({"predictor": self.name(), "window": self.window, "lines": lines})
    }

    fn save(&self, _: &std::path::Path) -> Result<serde_json::Value> {
        let fits: Vec<SavedRelex<&Vec<f64>>> = self
            .fits
            .iter()
            .map(|(w, weights, line)| ((w.start, w.end), weights, *line))
            .collect();
        Ok(json!({ "fits": fits }))
    }

    fn load(&mut self, params: &serde_json::Value, _: &std::path::Path) -> Result<()> {
        let fits: Vec<SavedRelex<Vec<f64>>> = from_json(&params["fits"], "linear-relex fits")?;
        self.fits = fits
            .into_iter()
            .map(|((a, b), w, l)| (a..b, w, l))
            .collect();
        Ok(())
    }
}
