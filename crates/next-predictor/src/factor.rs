//! Extrapolation in the space of the LoRA factors (A, B) instead of the merged deltas: the
//! candidates keep the adapter's rank r and are `θ_base + λ Δθ` factor by factor, λ = 0 always
//! being the current adapter (no jump).
//!
//! - `relex-pca`: RELEX as published — per tensor, the top right-singular vector of the
//!   flattened trajectory θ_t − θ_0 (a T x d matrix, exactly through its T x T Gram matrix),
//!   its coefficient fitted linearly in t, θ_0 + c(t + h) V1 the prediction.
//! - `two-point-factor`: the line through the last two checkpoints' factors.
//! - `ema`: denoising only — an exponential moving average of the checkpoints' factors, so
//!   that a gain from it is averaging, not prediction.
//! - `next-factor`: our `next` predictor moved into factor space (where the study's diagnostics
//!   found the trajectory easier to predict): per tensor, the top directions of θ_t − θ_0 (as
//!   `relex-pca` finds one), each coefficient given the curve family (line, parabola, √t, log)
//!   that best predicts the latest checkpoints from the earlier ones, and the change of the
//!   fitted coefficients from the last checkpoint's to t + h added to it (the part of the last
//!   checkpoint outside those directions stays where it is).
//! - `scale-first`: the outside replication's control — the first checkpoint's update,
//!   scaled: B_k times α with A_k, α = λ t / k (λ = 1: the first update as large as the step
//!   count t says it would be by now), i.e. `θ_0 + α (θ_k − θ_0)` in the merged space.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nalgebra::DMatrix;
use next_trajectory::adapter::Adapter;

use crate::{Error, Result};

/// The factor-space methods, as configs name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FactorKind {
    RelexPca,
    TwoPointFactor,
    Ema,
    ScaleFirst,
    NextFactor,
}

impl FactorKind {
    pub const ALL: [FactorKind; 5] = [
        FactorKind::RelexPca,
        FactorKind::TwoPointFactor,
        FactorKind::Ema,
        FactorKind::ScaleFirst,
        FactorKind::NextFactor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FactorKind::RelexPca => "relex-pca",
            FactorKind::TwoPointFactor => "two-point-factor",
            FactorKind::Ema => "ema",
            FactorKind::ScaleFirst => "scale-first",
            FactorKind::NextFactor => "next-factor",
        }
    }
}

impl std::fmt::Display for FactorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One module's factors: B (`[out, r]`) and A (`[r, in]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub b: DMatrix<f64>,
    pub a: DMatrix<f64>,
}

/// One checkpoint's factors, by module stem.
pub type Factors = BTreeMap<String, Pair>;

/// The factors of a checkpoint series, every module at every step.
#[derive(Debug, Clone)]
pub struct FactorSeries {
    pub steps: Vec<u64>,
    /// Per checkpoint, per module stem.
    pub factors: Vec<Factors>,
    /// The factors before training (θ_0), when the run kept them; else the first checkpoint
    /// serves as the origin.
    pub init: Option<Factors>,
    /// The LoRA scaling s, shared by every checkpoint.
    pub scaling: f64,
    /// The last checkpoint's directory (its config is the template of the candidates).
    pub last: PathBuf,
}

fn read_pairs(a: &Adapter) -> Result<Factors> {
    a.modules
        .keys()
        .map(|stem| {
            let f = a.factors(stem)?;
            Ok((
                stem.clone(),
                Pair {
                    b: f.bt.transpose(),
                    a: f.at.transpose(),
                },
            ))
        })
        .collect()
}

impl FactorSeries {
    /// Reads `(step, adapter directory)` pairs in step order, and `init` (θ_0) if given.
    pub fn read(checkpoints: &[(u64, PathBuf)], init: Option<&Path>) -> Result<Self> {
        let (Some(first), Some(last)) = (checkpoints.first(), checkpoints.last()) else {
            return Err(Error::Unsupported(
                "no checkpoints to extrapolate from".into(),
            ));
        };
        let a0 = Adapter::open(&first.1)?;
        let mut factors = vec![];
        for (_, dir) in checkpoints {
            let a = Adapter::open(dir)?;
            if a.r != a0.r || a.scaling != a0.scaling {
                return Err(Error::Unsupported(format!(
                    "{}: rank {} and scaling {} differ from step {}'s ({}, {}): factor-space methods need one rank",
                    dir.display(),
                    a.r,
                    a.scaling,
                    first.0,
                    a0.r,
                    a0.scaling
                )));
            }
            let pairs = read_pairs(&a)?;
            if factors
                .first()
                .is_some_and(|f: &Factors| f.keys().ne(pairs.keys()))
            {
                return Err(Error::Unsupported(format!(
                    "{}: other modules than step {}",
                    dir.display(),
                    first.0
                )));
            }
            factors.push(pairs);
        }
        let init = match init {
            Some(dir) => {
                let a = Adapter::open(dir)?;
                if a.r != a0.r {
                    return Err(Error::Unsupported(format!(
                        "{}: the initial adapter has rank {}, the checkpoints {}",
                        dir.display(),
                        a.r,
                        a0.r
                    )));
                }
                Some(read_pairs(&a)?)
            }
            None => None,
        };
        Ok(FactorSeries {
            steps: checkpoints.iter().map(|c| c.0).collect(),
            factors,
            init,
            scaling: a0.scaling,
            last: last.1.clone(),
        })
    }
}

/// Candidates `base + λ dir` per module (λ = 0: the current adapter, whatever `base` is).
#[derive(Debug, Clone)]
pub struct FactorJump {
    pub method: FactorKind,
    pub current: Factors,
    pub base: Factors,
    pub dir: Factors,
    pub scaling: f64,
    /// The adapter whose config the candidates keep.
    pub template: PathBuf,
}

impl FactorJump {
    /// The factors of candidate λ.
    pub fn at(&self, lambda: f64) -> Factors {
        if lambda == 0.0 {
            return self.current.clone();
        }
        self.base
            .iter()
            .map(|(m, p)| {
                let d = &self.dir[m];
                (
                    m.clone(),
                    Pair {
                        b: &p.b + &d.b * lambda,
                        a: &p.a + &d.a * lambda,
                    },
                )
            })
            .collect()
    }

    /// Writes candidate λ as a PEFT adapter (the template's config, the same rank) into `dir`,
    /// an existing directory (a caller's staging directory).
    pub fn write_into(&self, lambda: f64, dir: &Path) -> Result<()> {
        if !lambda.is_finite() {
            return Err(Error::Invalid(format!(
                "λ = {lambda} is not a finite number"
            )));
        }
        let cfg: serde_json::Value =
            next_files::json::read(&self.template.join(next_files::peft::CONFIG))?;
        let pairs = self.at(lambda);
        let refs: Vec<(String, &DMatrix<f64>, &DMatrix<f64>)> =
            pairs.iter().map(|(m, p)| (m.clone(), &p.b, &p.a)).collect();
        next_trajectory::adapter::write(dir, &cfg, &refs)?;
        Ok(())
    }

    /// The change of candidate λ = 1 from the current adapter, per module, as dense merged
    /// matrices `s (B' A' − B A)` (for diagnostics).
    pub fn merged_change(&self) -> BTreeMap<String, DMatrix<f64>> {
        let one = self.at(1.0);
        one.iter()
            .map(|(m, p)| {
                let c = &self.current[m];
                (m.clone(), (&p.b * &p.a - &c.b * &c.a) * self.scaling)
            })
            .collect()
    }
}

/// The EMA's weight on the previous average, per checkpoint.
pub const EMA_DECAY: f64 = 0.5;

/// Predicts the factor-space candidates of `kind` from `series`, `horizon` steps ahead of its
/// last checkpoint.
pub fn predict(kind: FactorKind, series: &FactorSeries, horizon: u64) -> Result<FactorJump> {
    let n = series.steps.len();
    let last = &series.factors[n - 1];
    let need = |k: usize| -> Result<()> {
        if n < k {
            Err(Error::Unsupported(format!(
                "{}: the trajectory has {n} checkpoint(s); it needs at least {k}",
                kind.name()
            )))
        } else {
            Ok(())
        }
    };
    let t = series.steps[n - 1] as f64;
    let h = horizon as f64;
    let map = |f: &dyn Fn(&str, &Pair) -> Pair| -> Factors {
        last.iter().map(|(m, p)| (m.clone(), f(m, p))).collect()
    };
    let zero = |p: &Pair| Pair {
        b: DMatrix::zeros(p.b.nrows(), p.b.ncols()),
        a: DMatrix::zeros(p.a.nrows(), p.a.ncols()),
    };
    let (base, dir) = match kind {
        FactorKind::TwoPointFactor => {
            need(2)?;
            let prev = &series.factors[n - 2];
            let gap = (series.steps[n - 1] - series.steps[n - 2]) as f64;
            let dir = map(&|m, p| Pair {
                b: (&p.b - &prev[m].b) * (h / gap),
                a: (&p.a - &prev[m].a) * (h / gap),
            });
            (last.clone(), dir)
        }
        FactorKind::Ema => {
            need(2)?;
            let mut avg = series.factors[0].clone();
            for f in &series.factors[1..] {
                for (m, p) in avg.iter_mut() {
                    p.b = &p.b * EMA_DECAY + &f[m].b * (1.0 - EMA_DECAY);
                    p.a = &p.a * EMA_DECAY + &f[m].a * (1.0 - EMA_DECAY);
                }
            }
            let dir = map(&|m, p| Pair {
                b: &avg[m].b - &p.b,
                a: &avg[m].a - &p.a,
            });
            (last.clone(), dir)
        }
        FactorKind::ScaleFirst => {
            // B_k α with A_k: base (A_k, 0), direction (0, B_k t / k).
            let k = series.steps[0].max(1) as f64;
            let first = &series.factors[0];
            let base = map(&|m, p| Pair {
                b: zero(p).b,
                a: first[m].a.clone(),
            });
            let dir = map(&|m, p| Pair {
                b: &first[m].b * (t / k),
                a: zero(p).a,
            });
            (base, dir)
        }
        FactorKind::RelexPca | FactorKind::NextFactor => {
            let (origin, t0, points) = anchored(series, &need)?;
            let ts: Vec<f64> = points.iter().map(|(s, _)| s - t0).collect();
            // Each method's change from the last point, from the deltas θ_i − θ_0 of one tensor.
            let tensor = |pick: &dyn Fn(&Pair) -> &DMatrix<f64>, m: &str| {
                let o = pick(&origin[m]);
                let deltas: Vec<DMatrix<f64>> =
                    points.iter().map(|(_, f)| pick(&f[m]) - o).collect();
                match kind {
                    FactorKind::RelexPca => relex_tensor(&deltas, &ts, t + h - t0),
                    _ => next_tensor(&deltas, &ts, t + h - t0),
                }
            };
            let dir = map(&|m, _| Pair {
                b: tensor(&|p| &p.b, m),
                a: tensor(&|p| &p.a, m),
            });
            (last.clone(), dir)
        }
    };
    Ok(FactorJump {
        method: kind,
        current: last.clone(),
        base,
        dir,
        scaling: series.scaling,
        template: series.last.clone(),
    })
}

/// Where a trajectory fit starts (its factors and step) and the (step, factors) points it fits.
type Anchored<'s> = (&'s Factors, f64, Vec<(f64, &'s Factors)>);

/// The origin of the trajectory-fitting methods and the points they fit: θ_0 at t = 0 if the run
/// kept it, else the first checkpoint (then one point fewer); at least two points.
fn anchored<'s>(
    series: &'s FactorSeries,
    need: &dyn Fn(usize) -> Result<()>,
) -> Result<Anchored<'s>> {
    let timed = series.steps.iter().map(|s| *s as f64).zip(&series.factors);
    let (origin, t0, points): Anchored = match &series.init {
        Some(init) => (init, 0.0, timed.collect()),
        None => {
            need(3)?;
            (
                &series.factors[0],
                series.steps[0] as f64,
                timed.skip(1).collect(),
            )
        }
    };
    if points.len() < 2 {
        return Err(Error::Unsupported(
            "fitting a trajectory needs at least two points of it".into(),
        ));
    }
    Ok((origin, t0, points))
}

/// The top directions of one tensor's deltas δ_i = θ_i − θ_0 (a T x d matrix), from its T x T
/// Gram matrix, largest first: each as (V_k, its coefficients c_ik = ⟨δ_i, V_k⟩), at most
/// `p`, none whose energy is negligible against the first's.
fn directions(deltas: &[DMatrix<f64>], p: usize) -> Vec<(DMatrix<f64>, Vec<f64>)> {
    let n = deltas.len();
    let gram = DMatrix::from_fn(n, n, |i, j| deltas[i].dot(&deltas[j]));
    let eig = gram.symmetric_eigen();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let top = eig.eigenvalues[order[0]];
    if top <= 0.0 || !top.is_finite() {
        return vec![];
    }
    order
        .into_iter()
        .take(p)
        .filter(|&e| eig.eigenvalues[e] > 1e-12 * top)
        .map(|e| {
            let lambda = eig.eigenvalues[e];
            // V = Σ_i y_i δ_i / √λ; c_i = ⟨δ_i, V⟩ = √λ y_i.
            let y = eig.eigenvectors.column(e);
            let mut v = DMatrix::zeros(deltas[0].nrows(), deltas[0].ncols());
            for (i, d) in deltas.iter().enumerate() {
                v += d * (y[i] / lambda.sqrt());
            }
            (v, y.iter().map(|y| lambda.sqrt() * y).collect())
        })
        .collect()
}

/// RELEX on one tensor's deltas δ_i = θ_i − θ_0 at times t_i: their top direction V1, its
/// coefficient fitted by a line in t, and the prediction θ_0 + c(t*) V1 as a change from the
/// last point, c(t*) V1 − δ_last.
fn relex_tensor(deltas: &[DMatrix<f64>], ts: &[f64], target: f64) -> DMatrix<f64> {
    let last = deltas.last().expect("at least two points");
    match directions(deltas, 1).pop() {
        Some((v1, c)) => {
            let (slope, intercept) = least_squares(ts, &c);
            v1 * (intercept + slope * target) - last
        }
        None => -last,
    }
}

/// How many directions `next-factor` follows per tensor (as `next` does per matrix).
pub const NEXT_DIRECTIONS: usize = 2;

/// `next-factor` on one tensor's deltas δ_i = θ_i − θ_0 at times t_i: the predicted change from
/// the last point, Σ_k (ĉ_k(t*) − c_k(t_last)) V_k, each ĉ_k the curve that
/// [`crate::curves::select`] picks; the origin is one more point, c = 0 at t = 0.
fn next_tensor(deltas: &[DMatrix<f64>], ts: &[f64], target: f64) -> DMatrix<f64> {
    let t_last = *ts.last().expect("at least two points");
    let mut x: Vec<f64> = ts.iter().map(|t| t / t_last).collect();
    let with_origin = ts[0] > 0.0;
    if with_origin {
        x.insert(0, 0.0);
    }
    let mut change = DMatrix::zeros(deltas[0].nrows(), deltas[0].ncols());
    for (v, mut c) in directions(deltas, NEXT_DIRECTIONS) {
        let now = *c.last().expect("one coefficient per point");
        if with_origin {
            c.insert(0, 0.0);
        }
        let holdout = (c.len() / 4).max(1);
        let (curve, coef) = crate::curves::select(&x, &c, holdout, &crate::curves::Curve::ALL);
        change += v * (curve.eval(&coef, target / t_last) - now);
    }
    change
}

/// The ordinary least-squares line through (x, y): (slope, intercept).
fn least_squares(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (slope, my - slope * mx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(b: f64, a: f64) -> Pair {
        Pair {
            b: DMatrix::from_element(2, 1, b),
            a: DMatrix::from_element(1, 3, a),
        }
    }

    fn series(points: &[(u64, f64, f64)], init: Option<(f64, f64)>) -> FactorSeries {
        let one = |b, a| BTreeMap::from([("m".to_string(), pair(b, a))]);
        FactorSeries {
            steps: points.iter().map(|p| p.0).collect(),
            factors: points.iter().map(|&(_, b, a)| one(b, a)).collect(),
            init: init.map(|(b, a)| one(b, a)),
            scaling: 2.0,
            last: PathBuf::new(),
        }
    }

    #[test]
    fn each_method_extrapolates_what_it_says() {
        // Factors moving on a line: θ_t = (0.1 t, 1 + 0.01 t) from θ_0 = (0, 1).
        let s = series(
            &[(10, 1.0, 1.1), (20, 2.0, 1.2), (30, 3.0, 1.3)],
            Some((0.0, 1.0)),
        );
        let check = |kind, lambda: f64, b: f64, a: f64| {
            let j = predict(kind, &s, 10).unwrap();
            let p = &j.at(lambda)["m"];
            assert!(
                (p.b[(0, 0)] - b).abs() < 1e-9,
                "{kind:?} λ {lambda}: b {}",
                p.b[(0, 0)]
            );
            assert!(
                (p.a[(0, 0)] - a).abs() < 1e-9,
                "{kind:?} λ {lambda}: a {}",
                p.a[(0, 0)]
            );
        };
        // λ = 0 is always the current adapter.
        for kind in FactorKind::ALL {
            check(kind, 0.0, 3.0, 1.3);
        }
        // A line is predicted exactly 10 steps ahead by the line-based methods.
        check(FactorKind::TwoPointFactor, 1.0, 4.0, 1.4);
        check(FactorKind::RelexPca, 1.0, 4.0, 1.4);
        check(FactorKind::NextFactor, 1.0, 4.0, 1.4);
        check(FactorKind::NextFactor, 0.5, 3.5, 1.35);
        // The EMA (decay 0.5) of 1, 2, 3 is 2.25 (and of 1.1, 1.2, 1.3, 1.225).
        check(FactorKind::Ema, 1.0, 2.25, 1.225);
        // Scale-first: B_10 scaled by λ·30/10 with A_10.
        check(FactorKind::ScaleFirst, 1.0, 3.0, 1.1);
        check(FactorKind::ScaleFirst, 0.5, 1.5, 1.1);
    }

    #[test]
    fn next_factor_follows_a_curve_that_a_line_would_overshoot() {
        // B moves as √(t/10) from θ_0 = 0, A stays put: 40 steps past t = 60, B is √10.
        let points: Vec<(u64, f64, f64)> =
            (1..=6).map(|k| (10 * k, (k as f64).sqrt(), 2.0)).collect();
        let s = series(&points, Some((0.0, 2.0)));
        let check = |kind, b: f64| {
            let p = &predict(kind, &s, 40).unwrap().at(1.0)["m"];
            assert!(
                (p.b[(0, 0)] - b).abs() < 1e-9,
                "{kind:?}: b {}",
                p.b[(0, 0)]
            );
            assert_eq!(
                p.a[(0, 0)],
                2.0,
                "{kind:?}: A did not move, nor may its prediction"
            );
        };
        check(FactorKind::NextFactor, 10f64.sqrt());
        // The line through the last two points overshoots: √6 + 4 (√6 − √5).
        check(
            FactorKind::TwoPointFactor,
            6f64.sqrt() + 4.0 * (6f64.sqrt() - 5f64.sqrt()),
        );
    }

    #[test]
    fn too_short_trajectories_are_refused() {
        let s = series(&[(10, 1.0, 1.0)], None);
        for kind in [
            FactorKind::TwoPointFactor,
            FactorKind::Ema,
            FactorKind::RelexPca,
            FactorKind::NextFactor,
        ] {
            let e = predict(kind, &s, 10).unwrap_err().to_string();
            assert!(e.contains("at least"), "{kind:?}: {e}");
        }
    }
}
