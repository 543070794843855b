//! `next-scheduler`: the predict-extend loop as a persisted state machine. A run trains in
//! segments; after each of the first `rounds` segments it extracts the rank-1 trajectory, fits
//! a predictor, scores jump candidates with the task's verifier (always against no jump),
//! writes the chosen adapter, and the next segment resumes from it. `scheduler.json` records
//! the phase and every decision, so a run killed in any phase resumes in that phase.
//!
//! Layout: `<run>/segment-N/` (an ordinary training run directory per segment),
//! `<run>/extend/round-N/` (the chosen adapter with `extend.json`), `<run>/scheduler.json`.
//!
//! The [`Engine`] seam is what the loop needs from a trainer: train a run directory up to a
//! step, score an adapter, and start a run directory from an adapter at a step. [`InProcess`]
//! is this project's trainer; an external trainer launched as a process and resumed from an
//! adapter directory fits the same three calls.
//!
//! Architecture invariant: decides nothing about models or losses; it sequences the trainer,
//! the trajectory store and the predictors, and owns only `scheduler.json` and the layout.

use std::path::{Path, PathBuf};

use next_predictor::extend::write_extended;
use next_predictor::search::{self, Candidate, Search};
use next_predictor::{by_name, Trajectory};
use next_trajectory::extract::{extract, Input, Options};
use next_trajectory::layout::Format;
use next_trajectory::store::Store;
use serde::{Deserialize, Serialize};

mod engine;
pub mod experiment;
pub mod report;
pub mod stats;
pub use engine::InProcess;

/// Errors of the loop; each names the phase and file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Trainer(#[from] next_trainer::Error),
    #[error(transparent)]
    Trajectory(#[from] next_trajectory::Error),
    #[error(transparent)]
    Predictor(#[from] next_predictor::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The `[scheduler]` section of `next run`'s config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Steps trained between jumps.
    pub segment_steps: usize,
    /// Jumps (predict-extend rounds); the last segment trains to `trainer.steps`.
    pub rounds: usize,
    /// two-point, linear-alpharl, linear-relex, next-reference or next.
    pub predictor: String,
    /// Steps each jump predicts ahead (also the store's target gap); a multiple of
    /// `trainer.save_every`.
    pub horizon: u64,
    /// grid, golden or none (then `lambda` is used).
    pub search: String,
    pub grid: Vec<f64>,
    pub lambda: f64,
    pub lambda_max: f64,
    pub evals: usize,
    /// Rank-1 terms per jump (the adapter grows by this much each round).
    pub rank: usize,
    /// Latest checkpoints the linear fits use (0: all).
    pub window: usize,
    /// Continue after a jump with the AdamW moments of the checkpoint jumped from (the
    /// factors the jump adds start at zero) instead of fresh ones.
    pub keep_moments: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            segment_steps: 100,
            rounds: 1,
            predictor: "linear-relex".into(),
            horizon: 50,
            search: "grid".into(),
            grid: (1..=8).map(|i| i as f64 * 0.5).collect(),
            lambda: 1.0,
            lambda_max: 4.0,
            evals: 6,
            rank: 1,
            window: 0,
            keep_moments: false,
        }
    }
}

impl SchedulerConfig {
    /// The λ search the config asks for (None: use `lambda` as is).
    pub fn search(&self) -> Result<Option<Search>> {
        Ok(match self.search.as_str() {
            "grid" if self.grid.is_empty() => {
                return Err(Error::Config("scheduler.grid is empty".into()))
            }
            "grid" => Some(Search::Grid(self.grid.clone())),
            "golden" => Some(Search::Golden {
                lo: 0.0,
                hi: self.lambda_max,
                evals: self.evals,
            }),
            "none" => None,
            other => {
                return Err(Error::Config(format!(
                    "scheduler.search is {other:?}; expected grid, golden or none"
                )))
            }
        })
    }
}

/// What the loop needs from a trainer.
pub trait Engine {
    /// Trains `run` (resuming from its last checkpoint) until `step`; checkpoints at `step`.
    fn train(&mut self, run: &Path, step: usize) -> Result<()>;
    /// Validation reward of the base with `adapter`, and the tokens generated to score it.
    fn score(&mut self, adapter: &Path) -> Result<(f64, u64)>;
    /// Makes `run` start at `from`'s checkpoint `step` (data cursor, seed) with `adapter`,
    /// and that checkpoint's optimizer moments if `keep_moments` (else fresh ones).
    fn start_from(
        &mut self,
        run: &Path,
        from: &Path,
        step: usize,
        adapter: &Path,
        keep_moments: bool,
    ) -> Result<()>;
    /// The trainer seed (sampling, data order) of the runs trained from now on.
    fn set_seed(&mut self, seed: u64);
}

/// Where the loop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Train,
    Extend,
    Done,
}

/// One jump: what was predicted, the candidates scored, and the λ chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub round: usize,
    pub from_step: usize,
    pub predictor: String,
    pub horizon: u64,
    /// (λ, validation reward) in evaluation order; λ = 0 is no jump.
    pub candidates: Vec<(f64, f64)>,
    pub lambda: f64,
    pub search_seconds: f64,
    pub search_tokens: u64,
    pub adapter: PathBuf,
}

/// `scheduler.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub round: usize,
    pub phase: Phase,
    pub decisions: Vec<Decision>,
}

/// Progress, for the CLI.
#[derive(Debug, Clone)]
pub enum Event {
    Phase {
        round: usize,
        phase: Phase,
        until: usize,
    },
    Candidate {
        round: usize,
        lambda: f64,
        score: f64,
    },
    Decided(Decision),
}

pub const STATE: &str = "scheduler.json";

pub fn segment_dir(run: &Path, round: usize) -> PathBuf {
    run.join(format!("segment-{round}"))
}

fn write_state(run: &Path, state: &State) -> Result<()> {
    let path = run.join(STATE);
    next_model::io::write_json(&path, state).map_err(|e| Error::Config(e.to_string()))
}

/// Runs (or resumes) the loop in `run` for `total` steps with checkpoints every `save_every`.
pub fn run(
    engine: &mut dyn Engine,
    cfg: &SchedulerConfig,
    run: &Path,
    total: usize,
    save_every: usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<State> {
    if cfg.segment_steps == 0 || !cfg.segment_steps.is_multiple_of(save_every.max(1)) {
        return Err(Error::Config(format!(
            "scheduler.segment_steps ({}) must be a positive multiple of trainer.save_every ({save_every})",
            cfg.segment_steps
        )));
    }
    if cfg.horizon == 0 || !cfg.horizon.is_multiple_of(save_every.max(1) as u64) {
        return Err(Error::Config(format!(
            "scheduler.horizon ({}) must be a positive multiple of trainer.save_every ({save_every})",
            cfg.horizon
        )));
    }
    if cfg.rounds * cfg.segment_steps >= total {
        return Err(Error::Config(format!(
            "{} rounds of {} steps leave no steps to continue within trainer.steps = {total}",
            cfg.rounds, cfg.segment_steps
        )));
    }
    let search = cfg.search()?;
    by_name(&cfg.predictor, None)?;
    std::fs::create_dir_all(run).map_err(io(run))?;
    let state_path = run.join(STATE);
    let mut state: State = if state_path.is_file() {
        next_model::io::read_json(&state_path).map_err(|e| Error::Config(e.to_string()))?
    } else {
        State {
            round: 0,
            phase: Phase::Train,
            decisions: vec![],
        }
    };
    loop {
        let r = state.round;
        let until = if r < cfg.rounds {
            (r + 1) * cfg.segment_steps
        } else {
            total
        };
        on_event(Event::Phase {
            round: r,
            phase: state.phase,
            until,
        });
        match state.phase {
            Phase::Train => {
                engine.train(&segment_dir(run, r), until)?;
                state.phase = if r < cfg.rounds {
                    Phase::Extend
                } else {
                    Phase::Done
                };
            }
            Phase::Extend => {
                let d = extend(engine, cfg, search.as_ref(), run, r, until, on_event)?;
                on_event(Event::Decided(d.clone()));
                state.decisions.retain(|x| x.round != r);
                state.decisions.push(d);
                state.round += 1;
                state.phase = Phase::Train;
            }
            Phase::Done => return Ok(state),
        }
        write_state(run, &state)?;
    }
}

/// One predict-extend round from segment `r` at step `step`; idempotent, so a round killed
/// midway is simply redone.
fn extend(
    engine: &mut dyn Engine,
    cfg: &SchedulerConfig,
    search: Option<&Search>,
    run: &Path,
    r: usize,
    step: usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<Decision> {
    let seg = segment_dir(run, r);
    let store_dir = seg.join("trajectory");
    extract(
        &Input::Run {
            dir: seg.clone(),
            format: Some(Format::Next),
        },
        &store_dir,
        &Options {
            target_gap: Some(cfg.horizon),
            ..Options::default()
        },
        &|_, _| {},
    )?;
    let adapter = next_trainer::checkpoint::adapter_dir(&seg, step);
    let round_dir = run.join("extend").join(format!("round-{r}"));
    let chosen = choose(
        engine,
        cfg,
        &cfg.predictor,
        search,
        &store_dir,
        &adapter,
        &round_dir,
        &mut |lambda, score| {
            on_event(Event::Candidate {
                round: r,
                lambda,
                score,
            })
        },
    )?;
    let decision = Decision {
        round: r,
        from_step: step,
        predictor: cfg.predictor.clone(),
        horizon: cfg.horizon,
        candidates: chosen.candidates,
        lambda: chosen.lambda,
        search_seconds: chosen.search_seconds,
        search_tokens: chosen.search_tokens,
        adapter: round_dir.clone(),
    };
    next_model::io::write_json(&round_dir.join("extend.json"), &decision)
        .map_err(|e| Error::Config(e.to_string()))?;
    engine.start_from(
        &segment_dir(run, r + 1),
        &seg,
        step,
        &round_dir,
        cfg.keep_moments,
    )?;
    Ok(decision)
}

/// A jump chosen by [`choose`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    pub lambda: f64,
    /// (λ, validation reward) in evaluation order; λ = 0 is no jump.
    pub candidates: Vec<(f64, f64)>,
    /// Fitting the predictor and predicting.
    pub fit_seconds: f64,
    /// Writing and scoring the candidates.
    pub search_seconds: f64,
    pub search_tokens: u64,
    /// The validation reward of the chosen adapter (NaN without a search).
    pub score: f64,
}

/// Fits `predictor` on the store in `store_dir`, scores the jump candidates from `adapter`
/// (always against no jump), and writes the chosen one to `out` (replaced if present).
#[allow(clippy::too_many_arguments)]
pub fn choose(
    engine: &mut dyn Engine,
    cfg: &SchedulerConfig,
    predictor: &str,
    search: Option<&Search>,
    store_dir: &Path,
    adapter: &Path,
    out: &Path,
    on_candidate: &mut dyn FnMut(f64, f64),
) -> Result<Chosen> {
    let t = std::time::Instant::now();
    let store = Store::open(store_dir)?;
    let trajectory = Trajectory::from_store(&store)?;
    let window = (cfg.window > 0).then_some(cfg.window);
    let mut p = by_name(predictor, window)?;
    p.fit(&trajectory)?;
    let predictions = p.predict(&trajectory, cfg.horizon, cfg.rank)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    let name = out
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let scratch = out.with_file_name(format!(".{name}-candidates"));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io(&scratch))?;
    }
    let candidates: Vec<Candidate> = match search {
        None => vec![],
        Some(how) => {
            let mut n = 0;
            let c = search::run(how, &mut |lambda| {
                let dir = if lambda == 0.0 {
                    adapter.to_path_buf()
                } else {
                    n += 1;
                    let d = scratch.join(format!("candidate-{n}"));
                    write_extended(adapter, &predictions, lambda, cfg.rank, &d)?;
                    d
                };
                let (s, tokens) = engine.score(&dir).map_err(|e| {
                    next_predictor::Error::Invalid(format!("scoring λ = {lambda}: {e}"))
                })?;
                on_candidate(lambda, s);
                Ok((s, tokens))
            })?;
            let _ = std::fs::remove_dir_all(&scratch);
            c
        }
    };
    let best = search::best(&candidates);
    let lambda = best.map_or(cfg.lambda, |c| c.lambda);
    write_extended(adapter, &predictions, lambda, cfg.rank, out)?;
    Ok(Chosen {
        lambda,
        candidates: candidates.iter().map(|c| (c.lambda, c.score)).collect(),
        fit_seconds,
        search_seconds: candidates.iter().map(|c| c.seconds).sum(),
        search_tokens: candidates.iter().map(|c| c.tokens).sum(),
        score: best.map_or(f64::NAN, |c| c.score),
    })
}
