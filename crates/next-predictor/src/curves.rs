//! `next`: our predictor. Per matrix, the rank-1 global deltas g_t = σ_t u_t v_tᵀ over the window
//! span a small subspace; its top `p` orthonormal directions V_k (from the exact Gram matrix of
//! the g_t, as RELEX does for p = 1) carry coefficients c_k(t) = ⟨g_t, V_k⟩ that move
//! non-linearly (a direction that turns shows up as two curved coefficients). Each c_k(t) gets
//! the curve family — line, parabola, √t, log — that best predicts the latest checkpoints from
//! the earlier ones (hold-out validation, so a curve is only trusted when it extrapolates), is
//! refitted on all points, and evaluated at t + h. The prediction is the whole rank-1 matrix
//! (u, σ, v jointly), reduced to its top triplets; it is invariant to SVD signs by construction.

use nalgebra::{DMatrix, DVector};
use serde_json::json;

use crate::linear::reduce;
use crate::{ensure_fitted, Error, Prediction, Result, Trajectory, TrajectoryPredictor};

/// Curve families for c(t), as basis functions of the normalised step x = t / t_last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    Line,
    Parabola,
    Sqrt,
    Log,
}

impl Curve {
    pub const ALL: [Curve; 4] = [Curve::Line, Curve::Parabola, Curve::Sqrt, Curve::Log];

    fn basis(self, x: f64) -> Vec<f64> {
        match self {
            Curve::Line => vec![1.0, x],
            Curve::Parabola => vec![1.0, x, x * x],
            Curve::Sqrt => vec![1.0, x.sqrt()],
            Curve::Log => vec![1.0, (1.0 + 4.0 * x).ln()],
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Curve::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::Line => "line",
            Curve::Parabola => "parabola",
            Curve::Sqrt => "sqrt",
            Curve::Log => "log",
        }
    }

    /// Least-squares coefficients through (x, y); None when under-determined.
    fn fit(self, x: &[f64], y: &[f64]) -> Option<DVector<f64>> {
        let k = self.basis(0.0).len();
        if x.len() < k {
            return None;
        }
        let a = DMatrix::from_fn(x.len(), k, |i, j| self.basis(x[i])[j]);
        let b = DVector::from_column_slice(y);
        // Normal equations of a tiny, well-scaled system (x ∈ (0, 1]).
        (a.transpose() * &a)
            .cholesky()
            .map(|c| c.solve(&(a.transpose() * b)))
    }

    pub(crate) fn eval(self, coef: &DVector<f64>, x: f64) -> f64 {
        self.basis(x)
            .iter()
            .zip(coef.iter())
            .map(|(b, c)| b * c)
            .sum()
    }
}

/// The family among `families` that best predicts the last `holdout` points from the earlier
/// ones (ties and unusable families fall back to the line), refitted on all points.
pub fn select(x: &[f64], y: &[f64], holdout: usize, families: &[Curve]) -> (Curve, DVector<f64>) {
    let n = x.len();
    let cut = n.saturating_sub(holdout);
    let mut best = (Curve::Line, f64::INFINITY);
    for &c in families {
        let Some(coef) = c.fit(&x[..cut], &y[..cut]) else {
            continue;
        };
        let err: f64 = (cut..n).map(|i| (c.eval(&coef, x[i]) - y[i]).powi(2)).sum();
        // Strictly better only: the simpler family wins ties.
        if err < best.1 * (1.0 - 1e-9) {
            best = (c, err);
        }
    }
    let refit = best.0.fit(x, y).or_else(|| Curve::Line.fit(x, y));
    match refit {
        Some(coef) => (best.0, coef),
        // Fewer points than a line needs: hold the last value.
        None => (
            Curve::Line,
            DVector::from_vec(vec![y.last().copied().unwrap_or(0.0), 0.0]),
        ),
    }
}

/// Our predictor (see the module docs).
#[derive(Debug)]
pub struct Next {
    /// Subspace dimension p.
    pub directions: usize,
    /// The curve families tried per coefficient (all by default; `[Line]` is the ablation
    /// without non-linearity).
    pub curves: Vec<Curve>,
    window: Option<usize>,
    /// Per module: the window's indices, each direction's weights on the window's g_i, and its
    /// selected curve.
    fits: Vec<NextFit>,
}

/// One matrix's fit: window indices, and per direction (weights w with V = Σ w_i g_i, curve,
/// curve coefficients).
type NextFit = (std::ops::Range<usize>, Vec<(Vec<f64>, Curve, DVector<f64>)>);

impl Next {
    pub fn new(window: Option<usize>) -> Self {
        Self {
            directions: 2,
            curves: Curve::ALL.to_vec(),
            window,
            fits: vec![],
        }
    }
}

impl TrajectoryPredictor for Next {
    fn name(&self) -> &'static str {
        "next"
    }

    fn fit(&mut self, trajectory: &Trajectory) -> Result<()> {
        trajectory.check(3)?;
        self.fits = trajectory
            .series
            .iter()
            .map(|s| {
                let n_all = s.steps.len();
                let w = s.window(self.window, 3);
                let idx: Vec<usize> = w.clone().collect();
                let n = idx.len();
                let (_, eig) = s.gram(&w);
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
                let t_last = s.steps[n_all - 1] as f64;
                let x: Vec<f64> = idx.iter().map(|&k| s.steps[k] as f64 / t_last).collect();
                let top = eig.eigenvalues[order[0]].max(0.0);
                let dirs = order
                    .iter()
                    .take(self.directions)
                    .filter(|&&e| eig.eigenvalues[e] > 1e-12 * top && top > 0.0)
                    .map(|&e| {
                        let lambda = eig.eigenvalues[e];
                        let wv = eig.eigenvectors.column(e);
                        // V = Σ w_i g_i / √λ; its coefficients c_t = (G w)_t / √λ = √λ w_t.
                        let c: Vec<f64> = wv.iter().map(|x| x * lambda.sqrt()).collect();
                        let (curve, coef) = select(&x, &c, (n / 4).max(1), &self.curves);
                        (wv.iter().map(|x| x / lambda.sqrt()).collect(), curve, coef)
                    })
                    .collect();
                (w, dirs)
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
        trajectory
            .series
            .iter()
            .zip(&self.fits)
            .map(|(s, (w, dirs))| {
                let l = s.last();
                let t_last = s.steps[l] as f64;
                let x = (s.steps[l] + horizon) as f64 / t_last;
                // Σ_k c_k(t+h) V_k − g_t, as rank-1 terms on the window's g_i.
                let mut terms: Vec<(f64, &DVector<f64>, &DVector<f64>)> = vec![];
                for (weights, curve, coef) in dirs {
                    let c = curve.eval(coef, x);
                    for (k, wk) in w.clone().zip(weights) {
                        terms.push((c * wk * s.sigma[k], &s.u[k], &s.v[k]));
                    }
                }
                // The part of g_t outside the fitted subspace stays where it is.
                let in_span: Vec<(f64, &DVector<f64>, &DVector<f64>)> = dirs
                    .iter()
                    .flat_map(|(weights, _, _)| {
                        let ct: f64 = w
                            .clone()
                            .zip(weights)
                            .map(|(k, wk)| wk * s.inner(k, l))
                            .sum();
                        w.clone()
                            .zip(weights)
                            .map(move |(k, wk)| (-ct * wk * s.sigma[k], &s.u[k], &s.v[k]))
                    })
                    .collect();
                terms.extend(in_span);
                if terms.is_empty() {
                    terms.push((0.0, &s.u[l], &s.v[l]));
                }
                reduce(&s.module, &terms, rank)
            })
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        let mut counts = std::collections::BTreeMap::new();
        for (_, dirs) in &self.fits {
            for (_, c, _) in dirs {
                *counts.entry(c.name()).or_insert(0usize) += 1;
            }
        }
        json!({"predictor": self.name(), "directions": self.directions, "window": self.window, "curves": counts})
    }

    fn save(&self, _: &std::path::Path) -> Result<serde_json::Value> {
        type Dir<'a> = (&'a [f64], &'static str, &'a [f64]);
        let fits: Vec<((usize, usize), Vec<Dir>)> = self
            .fits
            .iter()
            .map(|(w, dirs)| {
                let d = dirs
                    .iter()
                    .map(|(wt, c, coef)| (wt.as_slice(), c.name(), coef.as_slice()))
                    .collect();
                ((w.start, w.end), d)
            })
            .collect();
        let curves: Vec<&str> = self.curves.iter().map(|c| c.name()).collect();
        Ok(json!({"directions": self.directions, "curves": curves, "fits": fits}))
    }

    fn load(&mut self, params: &serde_json::Value, _: &std::path::Path) -> Result<()> {
        type Dir = (Vec<f64>, String, Vec<f64>);
        let fits: Vec<((usize, usize), Vec<Dir>)> =
            crate::linear::from_json(&params["fits"], "next fits")?;
        let curve = |n: &str| {
            Curve::parse(n).ok_or_else(|| Error::Invalid(format!("next fits: unknown curve {n:?}")))
        };
        self.fits = fits
            .into_iter()
            .map(|((a, b), dirs)| {
                let d = dirs
                    .into_iter()
                    .map(|(w, c, coef)| Ok((w, curve(&c)?, DVector::from_vec(coef))))
                    .collect::<Result<Vec<_>>>()?;
                Ok((a..b, d))
            })
            .collect::<Result<_>>()?;
        self.directions = params["directions"].as_u64().unwrap_or(2) as usize;
        let names: Vec<String> = crate::linear::from_json(&params["curves"], "next curves")?;
        self.curves = names.iter().map(|n| curve(n)).collect::<Result<_>>()?;
        Ok(())
    }
}
