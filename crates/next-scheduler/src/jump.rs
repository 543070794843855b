//! One jump, the same for `next run`, `next extend` and `next experiment`: extract a run's
//! rank-1 trajectory, fit a predictor (or load a fitted one, or take a factor-space method),
//! score λ candidates on the selection split against no jump, and write the chosen adapter with
//! `extend.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nalgebra::DMatrix;
use next_files::atomic::{Existing, Staging};
use next_predictor::extend::write_extended_into;
use next_predictor::factor::{self, FactorJump, FactorSeries};
use next_predictor::search::{self, Candidate, Search};
use next_predictor::{Method, Prediction, Trajectory};
use next_trajectory::extract::{extract, Input, Options};
use next_trajectory::layout::{discover, Format};
use next_trajectory::store::Store;
use serde::{Deserialize, Serialize};

use crate::{Engine, Error, Result};

/// The record of a jump, `extend.json` beside the adapter it wrote.
pub const RECORD: &str = "extend.json";

/// The checkpoints of the run `run` (this project's, verl's or TRL's) up to step `until` (all
/// when None), as `(step, adapter directory)`.
pub fn checkpoints(run: &Path, until: Option<usize>) -> Result<Vec<(u64, PathBuf)>> {
    let (_, cps) = discover(run, None)?;
    Ok(cps
        .into_iter()
        .filter(|c| until.is_none_or(|u| c.step as usize <= u))
        .map(|c| (c.step, c.dir))
        .collect())
}

/// Extracts the rank-1 store of `run`'s checkpoints (those up to step `until`, or all) into
/// `store` with target gap `horizon`; incremental. Returns the seconds it took.
pub fn extract_run(run: &Path, until: Option<usize>, horizon: u64, store: &Path) -> Result<f64> {
    let t = std::time::Instant::now();
    let input = match until {
        None => Input::Run {
            dir: run.to_owned(),
            format: Some(Format::Next),
        },
        Some(_) => Input::List(
            checkpoints(run, until)?
                .into_iter()
                .map(|(step, dir)| next_trajectory::layout::Checkpoint { step, dir })
                .collect(),
        ),
    };
    let opts = Options {
        target_gap: Some(horizon),
        ..Options::default()
    };
    extract(&input, store, &opts, &|_, _| {})?;
    Ok(t.elapsed().as_secs_f64())
}

/// Where the method comes from.
#[derive(Debug, Clone)]
pub enum Predictor {
    /// Fitted here (`window`: the latest checkpoints the linear fits use).
    Fit {
        method: Method,
        window: Option<usize>,
    },
    /// A merged-space predictor fitted earlier by `next fit` (refused on another trajectory).
    Fitted(PathBuf),
}

/// What to jump with.
#[derive(Debug, Clone)]
pub struct Plan {
    pub predictor: Predictor,
    /// Steps ahead to predict.
    pub horizon: u64,
    /// Rank-1 terms added to the adapter (merged-space predictors).
    pub rank: usize,
    /// How λ is chosen (needs a scorer), or None for `lambda` as is.
    pub search: Option<Search>,
    pub lambda: f64,
}

/// Where a jump reads the trajectory: the rank-1 store (merged-space predictors) and the
/// checkpoints with the run's initial adapter (factor-space methods).
#[derive(Debug, Clone)]
pub struct Source {
    pub store: PathBuf,
    pub checkpoints: Vec<(u64, PathBuf)>,
    pub initial: Option<PathBuf>,
}

impl Source {
    /// The checkpoints of `run` up to `until`, its store in `store`, its initial adapter if kept.
    pub fn of_run(run: &Path, until: Option<usize>, store: &Path) -> Result<Self> {
        let initial = next_trainer::checkpoint::initial_adapter(run);
        Ok(Source {
            store: store.to_owned(),
            checkpoints: checkpoints(run, until)?,
            initial: initial.is_dir().then_some(initial),
        })
    }

    /// What `predictor` reads (`next extend`'s): a factor-space method every checkpoint of
    /// `run` (refused without one), a predictor of the merged trajectory only the store.
    pub fn for_predictor(predictor: &Predictor, run: Option<&Path>, store: &Path) -> Result<Self> {
        match (predictor, run) {
            (
                Predictor::Fit {
                    method: Method::Factor(_),
                    ..
                },
                Some(run),
            ) => Self::of_run(run, None, store),
            (
                Predictor::Fit {
                    method: Method::Factor(m),
                    ..
                },
                None,
            ) => Err(Error::Config(format!(
                "--predictor {m} works on the factors of a run's checkpoints: give --run"
            ))),
            _ => Ok(Source {
                store: store.to_owned(),
                checkpoints: vec![],
                initial: None,
            }),
        }
    }
}

/// The adapter a jump from `store` starts from unless told otherwise: its last checkpoint.
pub fn last_adapter(store: &Store) -> Result<PathBuf> {
    let last = store.index.sources.last();
    last.map(|s| s.dir.clone()).ok_or_else(|| {
        Error::Config(format!(
            "{}: the store lists no checkpoints",
            store.dir.display()
        ))
    })
}

/// `extend.json`: what was predicted, every candidate scored, and the λ chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jump {
    pub predictor: String,
    pub lambda: f64,
    pub horizon: u64,
    pub rank: usize,
    /// The step of the adapter jumped from.
    pub from_step: u64,
    /// The adapter jumped from, and the store the predictor was fitted on.
    pub adapter: PathBuf,
    pub store: PathBuf,
    /// The fitted predictor's summary (losses, chosen curves, ...).
    pub state: serde_json::Value,
    /// In evaluation order, λ = 0 (no jump) first; empty without a search. Scores are on the
    /// selection split.
    pub candidates: Vec<Candidate>,
    /// Fitting the predictor and predicting.
    pub fit_seconds: f64,
    /// Scoring the candidates.
    pub search_seconds: f64,
    pub search_tokens: u64,
    /// The selection score of the chosen adapter (None without a search).
    pub score: Option<f64>,
    /// The written adapter's rank and alpha.
    pub r: usize,
    pub lora_alpha: f64,
}

impl Jump {
    /// One line saying what was written into `out` (`next extend`'s).
    pub fn summary_line(&self, out: &Path) -> String {
        format!(
            "extended {} (step {}) by {} x {} over {} steps: rank {} adapter (lora_alpha {}) in {}",
            self.adapter.display(),
            self.from_step,
            self.lambda,
            self.predictor,
            self.horizon,
            self.r,
            self.lora_alpha,
            out.display()
        )
    }

    /// (λ, score) of every candidate, in evaluation order.
    pub fn scores(&self) -> Vec<(f64, f64)> {
        self.candidates
            .iter()
            .map(|c| (c.lambda, c.score))
            .collect()
    }
}

/// What a jump predicted, kept in memory for diagnostics.
#[derive(Debug, Clone)]
pub enum Predicted {
    Merged(Vec<Prediction>),
    Factor(FactorJump),
}

impl Predicted {
    /// The change of candidate λ = 1 from the adapter jumped from, per module, dense.
    pub fn change(&self) -> BTreeMap<String, DMatrix<f64>> {
        match self {
            Predicted::Merged(p) => next_predictor::diagnostics::dense(p),
            Predicted::Factor(f) => f.merged_change(),
        }
    }
}

/// What one jump reads, scores with and writes.
pub struct Ctx<'a> {
    /// The trajectory the method is fitted on.
    pub source: &'a Source,
    /// The adapter jumped from.
    pub adapter: &'a Path,
    pub plan: &'a Plan,
    /// Scores the λ candidates on the selection split; needed when the plan searches.
    pub scorer: Option<&'a mut dyn Engine>,
    /// Where the jumped adapter and `extend.json` go, and whether an old one is replaced.
    pub out: &'a Path,
    pub existing: Existing,
    /// Sees each (λ, score) as it is scored.
    pub on_candidate: &'a mut dyn FnMut(f64, f64),
}

/// Fits the method on `ctx.source`, predicts from `ctx.adapter`, chooses λ (scored on the
/// selection split by the scorer when the plan searches; λ = 0 is always a candidate), and
/// writes the jumped adapter with `extend.json` into `ctx.out` as one directory.
pub fn jump(ctx: Ctx) -> Result<(Jump, Predicted)> {
    let Ctx {
        source,
        adapter,
        plan,
        scorer,
        out,
        existing,
        on_candidate,
    } = ctx;
    if existing == Existing::Refuse && out.exists() {
        return Err(Error::Config(format!(
            "{} already exists; choose a new --out",
            out.display()
        )));
    }
    if plan.search.is_some() && scorer.is_none() {
        return Err(Error::Config(
            "choosing λ needs a run of this project to score candidates with".into(),
        ));
    }
    let t = std::time::Instant::now();
    let (name, state, from_step, predicted) = match &plan.predictor {
        Predictor::Fit {
            method: Method::Factor(kind),
            ..
        } => {
            let series = FactorSeries::read(&source.checkpoints, source.initial.as_deref())?;
            let j = factor::predict(*kind, &series, plan.horizon)?;
            let step = series.steps.last().copied().unwrap_or(0);
            (
                kind.name().to_string(),
                serde_json::json!({}),
                step,
                Predicted::Factor(j),
            )
        }
        merged => {
            let store = Store::open(&source.store)?;
            if store.index.format == Format::Full {
                return Err(Error::Config(format!(
                    "{}: extension writes LoRA adapters; this store was extracted from full weights",
                    source.store.display()
                )));
            }
            let trajectory = Trajectory::from_store(&store)?;
            let p = match merged {
                Predictor::Fit {
                    method: Method::Merged(kind),
                    window,
                } => {
                    let mut p = kind.build(*window);
                    p.fit(&trajectory)?;
                    p
                }
                Predictor::Fitted(dir) => next_predictor::load_fitted(dir, &trajectory)?,
                Predictor::Fit { .. } => unreachable!("factor methods are handled above"),
            };
            let predictions = p.predict(&trajectory, plan.horizon, plan.rank)?;
            (
                p.name().to_string(),
                p.state(),
                trajectory.last_step(),
                Predicted::Merged(predictions),
            )
        }
    };
    let fit_seconds = t.elapsed().as_secs_f64();
    let candidates = match (&plan.search, scorer) {
        (Some(how), Some(engine)) => search::run(how, &mut |lambdas: &[f64]| {
            let scores = engine.score_jumps(adapter, &predicted, plan.rank, lambdas)?;
            for (&l, (s, _)) in lambdas.iter().zip(&scores) {
                on_candidate(l, *s);
            }
            Ok::<_, Error>(scores)
        })?,
        _ => vec![],
    };
    let best = search::best(&candidates);
    let lambda = best.map_or(plan.lambda, |c| c.lambda);
    let staging = Staging::new(out)?;
    let (r, lora_alpha) = write_candidate(&predicted, adapter, lambda, plan.rank, staging.path())?;
    let record = Jump {
        predictor: name,
        lambda,
        horizon: plan.horizon,
        rank: plan.rank,
        from_step,
        adapter: adapter.to_owned(),
        store: source.store.clone(),
        state,
        fit_seconds,
        search_seconds: candidates.iter().map(|c| c.seconds).sum(),
        search_tokens: candidates.iter().map(|c| c.tokens).sum(),
        score: best.map(|c| c.score),
        candidates,
        r,
        lora_alpha,
    };
    next_files::json::write(&staging.path().join(RECORD), &record)?;
    staging.publish(existing)?;
    Ok((record, predicted))
}

/// Writes candidate λ of `predicted` from `adapter` into the existing directory `dir`; returns
/// its rank and alpha. λ = 0 is no jump: the adapter as it was, without the rank an extension
/// adds (a zero-initialised extra rank would still train, so "no jump" would not continue as
/// the run itself would).
pub fn write_candidate(
    predicted: &Predicted,
    adapter: &Path,
    lambda: f64,
    rank: usize,
    dir: &Path,
) -> Result<(usize, f64)> {
    if lambda == 0.0 {
        next_files::atomic::copy_files(adapter, dir)?;
        let a = next_trajectory::adapter::Adapter::open(dir)?;
        return Ok((a.r, a.alpha));
    }
    Ok(match predicted {
        Predicted::Merged(p) => {
            let ext = write_extended_into(adapter, p, lambda, rank, dir)?;
            (ext.r, ext.lora_alpha)
        }
        Predicted::Factor(f) => {
            f.write_into(lambda, dir)?;
            let a = next_trajectory::adapter::Adapter::open(dir)?;
            (a.r, a.alpha)
        }
    })
}
