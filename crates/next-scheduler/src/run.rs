//! The predict-extend loop as a persisted state machine. A run trains in segments; after each
//! of the first `rounds` segments it extracts the rank-1 trajectory, fits a predictor, scores
//! jump candidates with the task's verifier (always against no jump), writes the chosen adapter,
//! and the next segment resumes from it. `scheduler.json` records the phase and every decision,
//! so a run killed in any phase resumes in that phase (each phase is idempotent).

use std::path::{Path, PathBuf};

use next_files::atomic::Existing;
use serde::{Deserialize, Serialize};

use crate::jump::{self, Predictor};
use crate::{io, Engine, Error, Result, SchedulerSection};

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
    Ok(next_files::json::write(&run.join(STATE), state)?)
}

/// Runs (or resumes) the loop in `run` for `total` steps with checkpoints every `save_every`.
pub fn run(
    engine: &mut dyn Engine,
    cfg: &SchedulerSection,
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
    cfg.check(save_every)?;
    if cfg.rounds * cfg.segment_steps >= total {
        return Err(Error::Config(format!(
            "{} rounds of {} steps leave no steps to continue within trainer.steps = {total}",
            cfg.rounds, cfg.segment_steps
        )));
    }
    std::fs::create_dir_all(run).map_err(io(run))?;
    let mut state: State = next_files::json::read_opt(&run.join(STATE))?.unwrap_or(State {
        round: 0,
        phase: Phase::Train,
        decisions: vec![],
    });
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
                let d = extend(engine, cfg, run, r, until, on_event)?;
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
    cfg: &SchedulerSection,
    run: &Path,
    r: usize,
    step: usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<Decision> {
    let seg = segment_dir(run, r);
    let store_dir = seg.join("trajectory");
    jump::extract_run(&seg, None, cfg.horizon, &store_dir)?;
    let adapter = next_trainer::checkpoint::adapter_dir(&seg, step);
    let round_dir = run.join("extend").join(format!("round-{r}"));
    let plan = jump::Plan {
        predictor: Predictor::Fit {
            method: cfg.predictor,
            window: cfg.window(),
        },
        horizon: cfg.horizon,
        rank: cfg.rank,
        search: cfg.search()?,
        lambda: cfg.lambda,
    };
    let (j, _) = jump::jump(jump::Ctx {
        source: &jump::Source::of_run(&seg, Some(step), &store_dir)?,
        adapter: &adapter,
        plan: &plan,
        scorer: Some(&mut *engine),
        out: &round_dir,
        existing: Existing::Replace,
        on_candidate: &mut |lambda, score| {
            on_event(Event::Candidate {
                round: r,
                lambda,
                score,
            })
        },
    })?;
    let decision = Decision {
        round: r,
        from_step: step,
        predictor: cfg.predictor.to_string(),
        horizon: cfg.horizon,
        candidates: j.scores(),
        lambda: j.lambda,
        search_seconds: j.search_seconds,
        search_tokens: j.search_tokens,
        adapter: round_dir.clone(),
    };
    engine.start_from(
        &segment_dir(run, r + 1),
        &seg,
        step,
        &round_dir,
        cfg.keep_moments,
    )?;
    Ok(decision)
}
