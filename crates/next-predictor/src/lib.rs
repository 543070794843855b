//! `next-predictor`: where a rank-1 weight trajectory goes next, and the adapter that jumps
//! there.
//!
//! A [`Trajectory`] is the sign-aligned rank-1 global records (σ_t, u_t, v_t of W_t − W_0) of
//! every matrix, read from a `next-trajectory` store. A [`TrajectoryPredictor`] fits it and
//! predicts, per matrix, the change W_(t+h) − W_t from the last observed step t as a few
//! rank-1 terms. `linear` holds the linear peers (RLVR-Linearity's two-point extrapolation,
//! AlphaRL's linear fit of u·σ, RELEX's temporal OLS along the top direction); `extend` writes
//! the current adapter plus λ times a prediction as an exact PEFT adapter of rank r + k;
//! `search` picks λ with a caller-supplied score (the task's verifier on validation prompts).
//!
//! `mlp` is NExt as published (`next-reference`): per vector length, a two-branch MLP from the
//! global and local rank-1 factors to the target's, trained with tch. `curves` is ours (`next`):
//! per matrix, the trajectory's top directions with a curve per coefficient chosen by how well
//! it predicts the latest checkpoints. `factor` holds the methods that work on the LoRA factors
//! themselves (RELEX as published, scale-first, EMA, two-point and `next` in factor space); [`Method`]
//! names every method. `diagnostics` measures how well a predicted change matches the one
//! training made.
//!
//! Architecture invariant: never depends on the model crate (tch only for the MLP); it reads
//! stores and adapters and writes adapters, so it works on any trainer's runs.
//!
//! Entry points: [`by_name`] (a predictor by the name users pick), [`Trajectory::from_store`],
//! [`extend`] (the jumped adapter), [`search`] (λ).
//!
//! ```
//! use nalgebra::DVector;
//! use next_predictor::{by_name, Series, Trajectory};
//! # fn main() -> next_predictor::Result<()> {
//! // One matrix whose update grows by σ = 1 every 10 steps along a fixed u vᵀ.
//! let (u, v) = (DVector::from_vec(vec![1.0, 0.0]), DVector::from_vec(vec![0.0, 1.0]));
//! let series = Series {
//!     module: "model.layers.0.self_attn.q_proj".into(),
//!     steps: vec![10, 20, 30],
//!     sigma: vec![1.0, 2.0, 3.0],
//!     u: vec![u.clone(); 3],
//!     v: vec![v.clone(); 3],
//! };
//! let trajectory = Trajectory { series: vec![series], raw: Default::default(), target_gap: 10 };
//! let mut p = by_name("two-point", None)?;
//! p.fit(&trajectory)?;
//! let change = &p.predict(&trajectory, 10, 1)?[0].terms[0];
//! assert!((change.0 - 1.0).abs() < 1e-9); // W_40 - W_30 = 1 · u vᵀ
//! # Ok(())
//! # }
//! ```

use nalgebra::DVector;
use next_trajectory::store::{Kind, Store};

pub mod curves;
pub mod diagnostics;
pub mod extend;
pub mod factor;
pub mod linear;
pub mod mlp;
pub mod search;

/// Errors of fitting, predicting and writing extended adapters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Trajectory(#[from] next_trajectory::Error),
    #[error(transparent)]
    File(#[from] next_files::Error),
    /// The trajectory cannot support the request (too short, a module missing, ...).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One matrix's observed rank-1 trajectory of W_t − W_0, signs aligned.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// PEFT key stem (or weight name in full-parameter stores).
    pub module: String,
    pub steps: Vec<u64>,
    pub sigma: Vec<f64>,
    pub u: Vec<DVector<f64>>,
    pub v: Vec<DVector<f64>>,
}

impl Series {
    pub fn last(&self) -> usize {
        self.steps.len() - 1
    }

    /// ⟨g_a, g_b⟩_F of records a and b, g = σ u vᵀ: exact from the factors.
    pub fn inner(&self, a: usize, b: usize) -> f64 {
        self.sigma[a] * self.sigma[b] * self.u[a].dot(&self.u[b]) * self.v[a].dot(&self.v[b])
    }

    /// The indices of the last `window` records (all when None; never fewer than `min`).
    pub fn window(&self, window: Option<usize>, min: usize) -> std::ops::Range<usize> {
        let n = self.steps.len();
        n.saturating_sub(window.unwrap_or(n).max(min))..n
    }

    /// The Gram matrix ⟨g_i, g_j⟩ of the records in `w`, and its eigendecomposition.
    pub fn gram(
        &self,
        w: &std::ops::Range<usize>,
    ) -> (
        nalgebra::DMatrix<f64>,
        nalgebra::SymmetricEigen<f64, nalgebra::Dyn>,
    ) {
        let n = w.len();
        let g = nalgebra::DMatrix::from_fn(n, n, |i, j| self.inner(w.start + i, w.start + j));
        let eig = g.clone().symmetric_eigen();
        (g, eig)
    }
}

/// Refuses to predict with a predictor not fitted on a trajectory of this many matrices.
pub(crate) fn ensure_fitted(name: &str, fitted: usize, trajectory: &Trajectory) -> Result<()> {
    if fitted == 0 || fitted != trajectory.series.len() {
        return Err(Error::Invalid(format!("{name}: fit the trajectory first")));
    }
    Ok(())
}

/// Every matrix's series, all over the same steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// The global deltas W_t − W_0, signs aligned.
    pub series: Vec<Series>,
    /// The global, local and target records with the signs the SVD gave them (for the
    /// faithful NExt reference, which does not align them).
    pub raw: [Vec<Series>; 3],
    /// g of the store's target deltas W_(t+g) − W_t.
    pub target_gap: u64,
}

impl Trajectory {
    /// The records of a store.
    pub fn from_store(store: &Store) -> Result<Self> {
        let read = |kind: Kind, aligned: bool| -> Vec<Series> {
            store
                .index
                .modules
                .iter()
                .enumerate()
                .map(|(m, module)| {
                    let records = store.series(m, kind, aligned);
                    let to_vec =
                        |x: &[f32]| DVector::from_iterator(x.len(), x.iter().map(|v| *v as f64));
                    Series {
                        module: module.name.clone(),
                        steps: records.iter().map(|r| r.step).collect(),
                        sigma: records.iter().map(|r| r.sigma[0]).collect(),
                        u: records.iter().map(|r| to_vec(r.u1(module.out))).collect(),
                        v: records.iter().map(|r| to_vec(r.v1(module.inp))).collect(),
                    }
                })
                .collect()
        };
        let t = Self {
            series: read(Kind::Global, true),
            raw: [
                read(Kind::Global, false),
                read(Kind::Local, false),
                read(Kind::Target, false),
            ],
            target_gap: store.index.target_gap,
        };
        t.check(1)?;
        Ok(t)
    }

    /// Refuses trajectories with fewer than `min` points or uneven steps across matrices.
    pub fn check(&self, min: usize) -> Result<()> {
        let first = self
            .series
            .first()
            .ok_or_else(|| Error::Unsupported("the trajectory has no matrices".into()))?;
        if first.steps.len() < min {
            return Err(Error::Unsupported(format!(
                "the trajectory has {} checkpoint(s); this predictor needs at least {min}",
                first.steps.len()
            )));
        }
        for s in &self.series {
            if s.steps != first.steps {
                return Err(Error::Unsupported(format!(
                    "module `{}` has records at steps {:?}, `{}` at {:?}",
                    s.module, s.steps, first.module, first.steps
                )));
            }
        }
        Ok(())
    }

    /// The last observed step.
    pub fn last_step(&self) -> u64 {
        self.series[0].steps[self.series[0].last()]
    }
}

/// A predicted change of one matrix, `Σ σ_j u_j v_jᵀ` (σ descending, u and v unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub module: String,
    pub terms: Vec<(f64, DVector<f64>, DVector<f64>)>,
}

/// Fits a trajectory and predicts each matrix's change over the next `horizon` steps.
pub trait TrajectoryPredictor {
    /// The name users pick it by.
    fn name(&self) -> &'static str;
    /// Learns from the observed trajectory.
    fn fit(&mut self, trajectory: &Trajectory) -> Result<()>;
    /// W_(t+horizon) − W_t per matrix, t the last observed step, as at most `rank` terms.
    fn predict(
        &self,
        trajectory: &Trajectory,
        horizon: u64,
        rank: usize,
    ) -> Result<Vec<Prediction>>;
    /// A summary of the fitted state (losses, chosen curves, ...), for logs and reports.
    fn state(&self) -> serde_json::Value;
    /// The fitted parameters as JSON; may also write files into `dir` (network weights).
    fn save(&self, dir: &std::path::Path) -> Result<serde_json::Value>;
    /// Restores what `save` wrote into a fresh predictor of the same name.
    fn load(&mut self, params: &serde_json::Value, dir: &std::path::Path) -> Result<()>;
}

/// What a fitted predictor was fitted on: every matrix with its shape, and the steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub modules: Vec<(String, usize, usize)>,
    pub steps: Vec<u64>,
    pub target_gap: u64,
}

impl Trajectory {
    pub fn provenance(&self) -> Provenance {
        Provenance {
            modules: self
                .series
                .iter()
                .map(|s| {
                    let (o, i) =
                        s.u.first()
                            .zip(s.v.first())
                            .map_or((0, 0), |(u, v)| (u.len(), v.len()));
                    (s.module.clone(), o, i)
                })
                .collect(),
            steps: self.series.first().map_or(vec![], |s| s.steps.clone()),
            target_gap: self.target_gap,
        }
    }
}

/// The file a fitted predictor is described by, in its directory.
pub const FITTED: &str = "predictor.json";

/// Saves a fitted predictor into `dir` (replaced as a whole: written beside it and renamed).
pub fn save_fitted(
    p: &dyn TrajectoryPredictor,
    window: Option<usize>,
    trajectory: &Trajectory,
    dir: &std::path::Path,
) -> Result<()> {
    let staging = next_files::atomic::Staging::new(dir)?;
    let params = p.save(staging.path())?;
    let doc = serde_json::json!({
        "predictor": p.name(),
        "window": window,
        "provenance": trajectory.provenance(),
        "state": p.state(),
        "params": params,
    });
    next_files::json::write(&staging.path().join(FITTED), &doc)?;
    staging.publish(next_files::atomic::Existing::Replace)?;
    Ok(())
}

/// Loads a predictor saved by [`save_fitted`], refusing one fitted on another run, model or
/// stretch of the trajectory than `trajectory`.
pub fn load_fitted(
    dir: &std::path::Path,
    trajectory: &Trajectory,
) -> Result<Box<dyn TrajectoryPredictor>> {
    let path = dir.join(FITTED);
    let doc: serde_json::Value = next_files::json::read(&path)?;
    let bad = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    let name = doc["predictor"]
        .as_str()
        .ok_or_else(|| bad("no `predictor` name".into()))?;
    let fitted: Provenance = serde_json::from_value(doc["provenance"].clone())
        .map_err(|e| bad(format!("`provenance`: {e}")))?;
    let here = trajectory.provenance();
    if fitted.modules != here.modules {
        let diff = fitted
            .modules
            .iter()
            .zip(&here.modules)
            .find(|(a, b)| a != b)
            .map_or(
                format!(
                    "{} matrices vs {}",
                    fitted.modules.len(),
                    here.modules.len()
                ),
                |(a, b)| format!("{} {}x{} vs {} {}x{}", a.0, a.1, a.2, b.0, b.1, b.2),
            );
        return Err(bad(format!(
            "fitted on another run or model ({diff}); fit it on this one"
        )));
    }
    if fitted.steps != here.steps || fitted.target_gap != here.target_gap {
        return Err(bad(format!(
            "fitted on steps {:?} (target gap {}), the trajectory now has {:?} (target gap {}); refit",
            fitted.steps, fitted.target_gap, here.steps, here.target_gap
        )));
    }
    let window = doc["window"].as_u64().map(|w| w as usize);
    let mut p = name.parse::<PredictorKind>()?.build(window);
    p.load(&doc["params"], dir)
        .map_err(|e| bad(e.to_string()))?;
    Ok(p)
}

/// The predictors, as configs and flags name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PredictorKind {
    /// RLVR-Linearity: the line through the last two checkpoints.
    TwoPoint,
    /// AlphaRL: a line through u·σ per coordinate, v from the latest checkpoint.
    LinearAlpharl,
    /// RELEX: the stacked deltas' top direction, its coefficient fitted linearly in t.
    LinearRelex,
    /// NExt as published: per-length two-branch MLPs from global and local factors.
    NextReference,
    /// Ours: per matrix, the trajectory's top directions with a curve per coefficient.
    Next,
}

impl PredictorKind {
    pub const ALL: [PredictorKind; 5] = [
        PredictorKind::TwoPoint,
        PredictorKind::LinearAlpharl,
        PredictorKind::LinearRelex,
        PredictorKind::NextReference,
        PredictorKind::Next,
    ];

    /// The name users pick it by.
    pub fn name(self) -> &'static str {
        match self {
            PredictorKind::TwoPoint => "two-point",
            PredictorKind::LinearAlpharl => "linear-alpharl",
            PredictorKind::LinearRelex => "linear-relex",
            PredictorKind::NextReference => "next-reference",
            PredictorKind::Next => "next",
        }
    }

    /// A fresh predictor (`window`: how many latest checkpoints the linear fits use; None: all).
    pub fn build(self, window: Option<usize>) -> Box<dyn TrajectoryPredictor> {
        match self {
            PredictorKind::TwoPoint => Box::new(linear::TwoPoint),
            PredictorKind::LinearAlpharl => Box::new(linear::AlphaRl::new(window)),
            PredictorKind::LinearRelex => Box::new(linear::Relex::new(window)),
            PredictorKind::NextReference => Box::new(mlp::NextReference::default()),
            PredictorKind::Next => Box::new(curves::Next::new(window)),
        }
    }
}

/// A way to jump: a predictor of the rank-1 trajectory of the merged deltas (the jump adds rank
/// to the adapter), or a method in the space of the LoRA factors (the jump keeps the rank).
/// Configs and flags name it by its name alone.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    Merged(PredictorKind),
    Factor(factor::FactorKind),
}

impl Method {
    /// Every method, merged-space predictors first.
    pub fn all() -> Vec<Method> {
        PredictorKind::ALL
            .into_iter()
            .map(Method::Merged)
            .chain(factor::FactorKind::ALL.into_iter().map(Method::Factor))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Merged(k) => k.name(),
            Method::Factor(k) => k.name(),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Method::all()
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::all().iter().map(|m| m.name()).collect();
                Error::Invalid(format!(
                    "unknown method `{name}`; available: {}",
                    names.join(", ")
                ))
            })
    }
}

impl TryFrom<String> for Method {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse().map_err(|e: Error| e.to_string())
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.name().to_string()
    }
}

#[cfg(feature = "clap")]
impl clap::ValueEnum for Method {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: std::sync::OnceLock<Vec<Method>> = std::sync::OnceLock::new();
        ALL.get_or_init(Method::all)
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// The predictor called `name` (see [`PredictorKind`]); unknown names are refused with the
/// list of known ones.
pub fn by_name(name: &str, window: Option<usize>) -> Result<Box<dyn TrajectoryPredictor>> {
    Ok(name.parse::<PredictorKind>()?.build(window))
}

impl std::fmt::Display for PredictorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PredictorKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                Error::Invalid(format!(
                    "unknown predictor `{name}`; available: {}",
                    names.join(", ")
                ))
            })
    }
}
