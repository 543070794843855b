//! One jump, the same for `next run`, `next extend` and `next experiment`: extract a run's
//! rank-1 trajectory, fit a predictor (or load a fitted one), score λ candidates with the
//! task's verifier against no jump, and write the chosen adapter with `extend.json`.

use std::path::{Path, PathBuf};

use next_files::atomic::{Existing, Staging};
use next_predictor::extend::write_extended_into;
use next_predictor::search::{self, Candidate, Search};
use next_predictor::{PredictorKind, Trajectory};
use next_trajectory::extract::{extract, Input, Options};
use next_trajectory::layout::{discover, Format};
use next_trajectory::store::Store;
use serde::{Deserialize, Serialize};

use crate::{Engine, Error, Result};

/// The record of a jump, `extend.json` beside the adapter it wrote.
pub const RECORD: &str = "extend.json";

/// Extracts the rank-1 store of `run`'s checkpoints (those up to step `until`, or all) into
/// `store` with target gap `horizon`; incremental. Returns the seconds it took.
pub fn extract_run(run: &Path, until: Option<usize>, horizon: u64, store: &Path) -> Result<f64> {
    let t = std::time::Instant::now();
    let input = match until {
        None => Input::Run {
            dir: run.to_owned(),
            format: Some(Format::Next),
        },
        Some(step) => {
            let (_, cps) = discover(run, Some(Format::Next))?;
            Input::List(
                cps.into_iter()
                    .filter(|c| c.step as usize <= step)
                    .collect(),
            )
        }
    };
    let opts = Options {
        target_gap: Some(horizon),
        ..Options::default()
    };
    extract(&input, store, &opts, &|_, _| {})?;
    Ok(t.elapsed().as_secs_f64())
}

/// Where the predictor comes from.
#[derive(Debug, Clone)]
pub enum Predictor {
    /// Fitted here (`window`: the latest checkpoints the linear fits use).
    Fit {
        kind: PredictorKind,
        window: Option<usize>,
    },
    /// Fitted earlier by `next fit` (refused on another trajectory).
    Fitted(PathBuf),
}

/// What to jump with.
#[derive(Debug, Clone)]
pub struct Plan {
    pub predictor: Predictor,
    /// Steps ahead to predict.
    pub horizon: u64,
    /// Rank-1 terms added to the adapter.
    pub rank: usize,
    /// How λ is chosen (needs a scorer), or None for `lambda` as is.
    pub search: Option<Search>,
    pub lambda: f64,
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
    /// In evaluation order, λ = 0 (no jump) first; empty without a search.
    pub candidates: Vec<Candidate>,
    /// Fitting the predictor and predicting.
    pub fit_seconds: f64,
    /// Scoring the candidates.
    pub search_seconds: f64,
    pub search_tokens: u64,
    /// The validation score of the chosen adapter (None without a search).
    pub score: Option<f64>,
    /// The written adapter's rank and alpha.
    pub r: usize,
    pub lora_alpha: f64,
}

impl Jump {
    /// (λ, score) of every candidate, in evaluation order.
    pub fn scores(&self) -> Vec<(f64, f64)> {
        self.candidates
            .iter()
            .map(|c| (c.lambda, c.score))
            .collect()
    }
}

/// Fits the predictor on the store at `store_dir`, predicts from `adapter`, chooses λ (scored
/// by `scorer` when the plan searches; λ = 0 is always a candidate), and writes the jumped
/// adapter with `extend.json` into `out` as one directory (`existing` says whether an old one
/// is replaced). `on_candidate` sees each (λ, score) as it is scored.
pub fn jump(
    store_dir: &Path,
    adapter: &Path,
    plan: &Plan,
    scorer: Option<&mut dyn Engine>,
    out: &Path,
    existing: Existing,
    on_candidate: &mut dyn FnMut(f64, f64),
) -> Result<Jump> {
    if existing == Existing::Refuse && out.exists() {
        return Err(Error::Config(format!(
            "{} already exists; choose a new --out",
            out.display()
        )));
    }
    let t = std::time::Instant::now();
    let store = Store::open(store_dir)?;
    if store.index.format == Format::Full {
        return Err(Error::Config(format!(
            "{}: extension writes LoRA adapters; this store was extracted from full weights",
            store_dir.display()
        )));
    }
    let trajectory = Trajectory::from_store(&store)?;
    let predictor = match &plan.predictor {
        Predictor::Fit { kind, window } => {
            let mut p = kind.build(*window);
            p.fit(&trajectory)?;
            p
        }
        Predictor::Fitted(dir) => next_predictor::load_fitted(dir, &trajectory)?,
    };
    let predictions = predictor.predict(&trajectory, plan.horizon, plan.rank)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let candidates = match (&plan.search, scorer) {
        (None, _) => vec![],
        (Some(_), None) => {
            return Err(Error::Config(
                "choosing λ needs a run of this project to score candidates with".into(),
            ))
        }
        (Some(how), Some(engine)) => search::run(how, &mut |lambdas: &[f64]| {
            let scores = engine.score_jumps(adapter, &predictions, plan.rank, lambdas)?;
            for (&l, (s, _)) in lambdas.iter().zip(&scores) {
                on_candidate(l, *s);
            }
            Ok::<_, Error>(scores)
        })?,
    };
    let best = search::best(&candidates);
    let lambda = best.map_or(plan.lambda, |c| c.lambda);
    let staging = Staging::new(out)?;
    let ext = write_extended_into(adapter, &predictions, lambda, plan.rank, staging.path())?;
    let record = Jump {
        predictor: predictor.name().to_string(),
        lambda,
        horizon: plan.horizon,
        rank: plan.rank,
        from_step: trajectory.last_step(),
        adapter: adapter.to_owned(),
        store: store_dir.to_owned(),
        state: predictor.state(),
        fit_seconds,
        search_seconds: candidates.iter().map(|c| c.seconds).sum(),
        search_tokens: candidates.iter().map(|c| c.tokens).sum(),
        score: best.map(|c| c.score),
        candidates,
        r: ext.r,
        lora_alpha: ext.lora_alpha,
    };
    next_files::json::write(&staging.path().join(RECORD), &record)?;
    staging.publish(existing)?;
    Ok(record)
}
