//! Running the experiment's runs: each seed's baseline, and each arm — a segment from its
//! jump at K (none for the control) and, with `experiment.rounds` > 1, further jumps each fitted
//! on the arm's own trajectory since its previous one. Every finished piece is on disk
//! (`arm.json`, `jump.json`, `extract.json`), so a resumed experiment redoes at most the piece
//! it was killed in and still counts what the finished ones cost.

use std::path::{Path, PathBuf};

use next_files::atomic::Existing;
use next_trainer::checkpoint;
use serde::{Deserialize, Serialize};

use super::metrics::{curve, read};
use super::{
    accuracy_at, baseline_dir, k_dir, Arm, Baseline, Diagnostics, Event, JumpCost, Overhead, Plan,
    Point,
};
use super::{stats, CONTROL};
use next_predictor::Method;

use crate::jump::{self, Predictor};
use crate::{Engine, Error, Result, ScoreSet};

/// What the arms of an experiment share: the engine, the plan, the directory, the progress
/// callback, and the accuracy at which an arm stops (`experiment.stop_at_target`).
pub(super) struct Ctx<'a> {
    pub engine: &'a mut dyn Engine,
    pub plan: &'a Plan,
    pub out: &'a Path,
    pub on_event: &'a mut dyn FnMut(Event),
    pub stop: Option<f64>,
}

/// A jump an arm starts a segment from, and what it cost (`jump.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Jump {
    /// What was chosen (None for the control, which does not jump).
    chosen: Option<jump::Jump>,
    overhead: Overhead,
    adapter: PathBuf,
    /// Validation accuracy of `adapter`.
    accuracy: f64,
    /// (h, cosine of the predicted change with the baseline's change over h steps).
    #[serde(default)]
    cosine: Vec<(u64, f64)>,
}

/// The mean of `key` over the metrics rows of `run` with steps in `(from, to]`; NaN when there
/// are none (an arm that reached the stop level at its jump never trained).
fn window_mean(run: &Path, key: &str, from: usize, to: usize) -> Result<f64> {
    if !run.join(next_trainer::metrics::METRICS).is_file() {
        return Ok(f64::NAN);
    }
    let v: Vec<f64> = read(run)?
        .iter()
        .filter(|r| r.step > from && r.step <= to)
        .filter_map(|r| r.get(key))
        .collect();
    Ok(if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    })
}

/// One segment of an arm: its run directory, where it starts (step, wall seconds so far),
/// where it ends, and the arm's curve before it (ending with the accuracy it starts with).
struct Segment<'a> {
    run: &'a Path,
    from: (usize, f64),
    end: usize,
    before: &'a [Point],
}

impl Ctx<'_> {
    fn stage(&mut self, seed: u64, what: String) {
        (self.on_event)(Event::Stage { seed, what });
    }

    /// The baseline of `seed` at learning-rate multiple `scale` (trained if not yet).
    pub(super) fn baseline(&mut self, seed: u64, scale: f64) -> Result<Baseline> {
        let plan = self.plan;
        let dir = baseline_dir(self.out, seed, scale);
        let what = if scale == 1.0 {
            "baseline".to_string()
        } else {
            format!("baseline at {scale} x lr")
        };
        self.stage(seed, format!("{what}: training to step {}", plan.steps));
        self.engine.set_lr_scale(scale);
        let trained = self.engine.train(&dir, plan.steps);
        self.engine.set_lr_scale(1.0);
        trained?;
        let rows = read(&dir)?;
        let mut seconds: Vec<f64> = rows.iter().filter_map(|r| r.seconds()).collect();
        seconds.sort_by(f64::total_cmp);
        let step_seconds = seconds.get(seconds.len() / 2).copied().unwrap_or(0.0);
        let curve = curve(&rows, 0, 0.0);
        let n = plan.experiment.final_window;
        if curve.len() < n + 1 || curve.last().map(|p| p.step) != Some(plan.steps) {
            return Err(Error::Config(format!(
                "{}: the baseline has {} validations, not through step {}; was it trained with another trainer.val_every?",
                dir.display(),
                curve.len(),
                plan.steps
            )));
        }
        let target = curve[curve.len() - n..]
            .iter()
            .map(|p| p.accuracy)
            .sum::<f64>()
            / n as f64;
        Ok(Baseline {
            seed,
            lr_scale: scale,
            target,
            step_seconds,
            curve,
        })
    }

    /// Extracts the rank-1 store of `run`'s checkpoints up to `step` into `store`; returns the
    /// seconds it took (kept in `record`, so a resumed experiment still counts them).
    fn extract(&self, run: &Path, step: usize, store: &Path, record: &Path) -> Result<f64> {
        if let Some(s) = next_files::json::read_opt::<f64>(record)? {
            return Ok(s);
        }
        let s = jump::extract_run(run, Some(step), self.plan.scheduler.horizon, store)?;
        next_files::json::write(record, &s)?;
        Ok(s)
    }

    /// Fits `name` on `source`, chooses λ from the adapter `from`, and writes the jump to `out`
    /// (with `jump.json`, which a resumed experiment reuses). With `realised` (the baseline's
    /// run directory and the step jumped at), also the cosines between the predicted change and
    /// the baseline's change over each diagnostic horizon.
    fn jump(
        &mut self,
        name: &str,
        source: &jump::Source,
        extract_s: f64,
        from: &Path,
        out: &Path,
        realised: Option<(&Path, usize)>,
    ) -> Result<Jump> {
        let record = out.join("jump.json");
        if let Some(j) = next_files::json::read_opt::<Jump>(&record)? {
            return Ok(j);
        }
        let s = &self.plan.scheduler;
        let plan = jump::Plan {
            predictor: Predictor::Fit {
                method: name.parse()?,
                window: s.window(),
            },
            horizon: s.horizon,
            rank: s.rank,
            search: s.search()?,
            lambda: s.lambda,
        };
        let on_event = &mut *self.on_event;
        let (chosen, predicted) = jump::jump(jump::Ctx {
            source,
            adapter: from,
            plan: &plan,
            scorer: Some(&mut *self.engine),
            out,
            existing: Existing::Replace,
            on_candidate: &mut |lambda, score| on_event(Event::Candidate { lambda, score }),
        })?;
        // Reported on the validation split; λ was chosen on the selection split.
        let accuracy = self.engine.score(out, ScoreSet::Validation)?.0;
        let mut cosine = vec![];
        if let Some((run, k)) = realised {
            let change = predicted.change();
            for &h in &self.plan.experiment.diag_horizons {
                let to = checkpoint::adapter_dir(run, k + h as usize);
                if !to.is_dir() {
                    continue;
                }
                // A diagnostic never fails an arm: an undefined cosine (no change on one side)
                // or one that cannot be computed is left out of the report's means.
                match next_predictor::diagnostics::cosine(&change, from, &to) {
                    Ok(c) if c.is_finite() => cosine.push((h, c)),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cosine at horizon {h}: {e}"),
                }
            }
        }
        let j = Jump {
            overhead: Overhead {
                extract: extract_s,
                fit: chosen.fit_seconds,
                search: chosen.search_seconds,
            },
            accuracy,
            chosen: Some(chosen),
            adapter: out.to_path_buf(),
            cosine,
        };
        next_files::json::write(&record, &j)?;
        Ok(j)
    }

    /// Runs one arm: a segment from its first jump at `k` (none for the control), and for
    /// `experiment.rounds` > 1 further jumps every `experiment.every` steps, each from the
    /// previous segment's own trajectory (the adapter grows by `scheduler.rank` per jump, so
    /// each segment is its own run directory).
    pub(super) fn arm(&mut self, b: &Baseline, k: usize, name: &str) -> Result<Arm> {
        let (plan, out) = (self.plan, self.out);
        let kd = k_dir(out, b.seed, k);
        let dir = kd.join(name);
        let done = dir.join("arm.json");
        if let Some(a) = next_files::json::read_opt::<Arm>(&done)? {
            return Ok(a);
        }
        let base_dir = baseline_dir(out, b.seed, b.lr_scale);
        let from = checkpoint::adapter_dir(&base_dir, k);
        if name == CONTROL && plan.scheduler.keep_moments {
            // Restarted at K with the same adapter, moments, data cursor and seed, the control
            // repeats the baseline's computation exactly: its curve is the baseline's.
            let arm = Arm {
                seed: b.seed,
                jump_at: k,
                name: name.to_string(),
                lambda: None,
                later_lambdas: vec![],
                candidates: vec![],
                overhead: Overhead::default(),
                jumps: vec![],
                curve: b.curve.clone(),
                diagnostics: None,
            };
            next_files::json::write(&done, &arm)?;
            return Ok(arm);
        }
        // Factor-space methods read the checkpoints themselves (counted in their fit time);
        // only the rank-1 predictors need the store, and only they pay for extracting it.
        let reads_store = name != CONTROL && matches!(name.parse::<Method>()?, Method::Merged(_));
        let first = if name == CONTROL {
            Jump {
                chosen: None,
                overhead: Overhead::default(),
                adapter: from,
                accuracy: accuracy_at(&b.curve, k),
                cosine: vec![],
            }
        } else {
            let store = kd.join("trajectory");
            let ex = if reads_store {
                self.extract(&base_dir, k, &store, &kd.join("extract.json"))?
            } else {
                0.0
            };
            self.stage(b.seed, format!("k={k} {name}: fit, choose λ"));
            let source = jump::Source::of_run(&base_dir, Some(k), &store)?;
            self.jump(
                name,
                &source,
                ex,
                &from,
                &kd.join(format!("{name}.adapter")),
                Some((&base_dir, k)),
            )?
        };
        let rounds = if name == CONTROL {
            1
        } else {
            plan.experiment.rounds
        };
        let segment = |r: usize| {
            if r == 0 {
                dir.clone()
            } else {
                kd.join(format!("{name}.round-{r}"))
            }
        };
        // K is a validation step, so the baseline's curve has the wall clock of its prefix.
        let prefix = b
            .curve
            .iter()
            .find(|p| p.step == k)
            .map_or(0.0, |p| p.seconds);
        let mut start = prefix + first.overhead.total();
        let mut points: Vec<Point> = b.curve.iter().copied().filter(|p| p.step < k).collect();
        points.push(Point {
            step: k,
            accuracy: first.accuracy,
            seconds: start,
        });
        let mut jumps = vec![first];
        let mut at = k;
        // The arm trains at its baseline's rate (each baseline sets its own before training).
        self.engine.set_lr_scale(b.lr_scale);
        for r in 0..rounds {
            let run = segment(r);
            let end = if r + 1 < rounds {
                k + (r + 1) * plan.experiment.every
            } else {
                plan.steps
            };
            if !run.join(checkpoint::LATEST).is_file() {
                let prev = if r == 0 {
                    base_dir.clone()
                } else {
                    segment(r - 1)
                };
                self.engine.start_from(
                    &run,
                    &prev,
                    at,
                    &jumps[r].adapter,
                    plan.scheduler.keep_moments,
                )?;
            }
            let seg = Segment {
                run: &run,
                from: (at, start),
                end,
                before: &points,
            };
            let (points_here, last, hit) = self.train_segment(b, k, name, &seg)?;
            points.extend(points_here);
            at = last;
            start = points.last().map_or(start, |p| p.seconds);
            if r + 1 == rounds || hit {
                break;
            }
            let ex = if reads_store {
                self.extract(
                    &run,
                    end,
                    &run.join("trajectory"),
                    &run.join("extract.json"),
                )?
            } else {
                0.0
            };
            self.stage(
                b.seed,
                format!("k={k} {name}: jump {} at step {end}", r + 2),
            );
            let source = jump::Source::of_run(&run, Some(end), &run.join("trajectory"))?;
            let j = self.jump(
                name,
                &source,
                ex,
                &checkpoint::adapter_dir(&run, end),
                &kd.join(format!("{name}.round-{}.adapter", r + 1)),
                None,
            )?;
            // The validation at `end` was before the jump; the arm goes on from after it.
            if points.last().is_some_and(|p| p.step == end) {
                points.pop();
            }
            start += j.overhead.total();
            points.push(Point {
                step: end,
                accuracy: j.accuracy,
                seconds: start,
            });
            jumps.push(j);
        }
        self.engine.set_lr_scale(1.0);
        let lambdas: Vec<f64> = jumps
            .iter()
            .filter_map(|j| j.chosen.as_ref().map(|c| c.lambda))
            .collect();
        let costs: Vec<JumpCost> = jumps
            .iter()
            .filter_map(|j| {
                j.chosen.as_ref().map(|c| JumpCost {
                    step: c.from_step as usize,
                    seconds: j.overhead.total(),
                })
            })
            .collect();
        let diagnostics = (name != CONTROL)
            .then(|| self.diagnostics(b, k, &dir, &points, jumps[0].cosine.clone()))
            .transpose()?;
        let arm = Arm {
            seed: b.seed,
            jump_at: k,
            name: name.to_string(),
            lambda: lambdas.first().copied(),
            later_lambdas: lambdas.iter().skip(1).copied().collect(),
            candidates: jumps[0]
                .chosen
                .as_ref()
                .map(|c| c.scores())
                .unwrap_or_default(),
            overhead: jumps.iter().fold(Overhead::default(), |o, j| Overhead {
                extract: o.extract + j.overhead.extract,
                fit: o.fit + j.overhead.fit,
                search: o.search + j.overhead.search,
            }),
            jumps: costs,
            curve: points,
            diagnostics,
        };
        next_files::json::write(&done, &arm)?;
        Ok(arm)
    }

    /// What happened around the jump at `k`: the cosines (measured at the jump), and mixed groups
    /// and entropy before and after it against the baseline at the arm's accuracy.
    fn diagnostics(
        &self,
        b: &Baseline,
        k: usize,
        arm_run: &Path,
        points: &[Point],
        cosine: Vec<(u64, f64)>,
    ) -> Result<Diagnostics> {
        let w = self.plan.experiment.diag_window;
        let base = baseline_dir(self.out, b.seed, b.lr_scale);
        let mixed = |run: &Path, from: usize| -> Result<f64> {
            Ok(1.0 - window_mean(run, "batch/zero_variance_group_frac", from, from + w)?)
        };
        let entropy = |run: &Path, from: usize| window_mean(run, "actor/entropy", from, from + w);
        let after = accuracy_at(points, k);
        // Where the baseline first reaches the accuracy the jump reached at once.
        let at = b.curve.iter().find(|p| p.accuracy >= after).map(|p| p.step);
        let (mixed_control, entropy_control) = match at {
            Some(c) => (mixed(&base, c)?, entropy(&base, c)?),
            None => (f64::NAN, f64::NAN),
        };
        Ok(Diagnostics {
            cosine,
            mixed_before: mixed(&base, k.saturating_sub(w))?,
            mixed_after: mixed(arm_run, k)?,
            mixed_control,
            entropy_before: entropy(&base, k.saturating_sub(w))?,
            entropy_after: entropy(arm_run, k)?,
            entropy_control,
        })
    }

    /// Trains a segment (or, with `stop_at_target`, until the arm's smoothed curve reaches the
    /// stop level); returns its validation points after the start, the step it stopped at, and
    /// whether it stopped at the level.
    fn train_segment(
        &mut self,
        b: &Baseline,
        k: usize,
        name: &str,
        seg: &Segment,
    ) -> Result<(Vec<Point>, usize, bool)> {
        let plan = self.plan;
        let (run, end) = (seg.run, seg.end);
        let (seg_start, seg_secs) = seg.from;
        let own = |run: &Path| -> Result<Vec<Point>> {
            if !run.join(next_trainer::metrics::METRICS).is_file() {
                return Ok(vec![]);
            }
            Ok(curve(&read(run)?, seg_start, seg_secs)
                .into_iter()
                .filter(|p| p.step > seg_start)
                .collect())
        };
        loop {
            // Progress is the last checkpoint, not the last metrics row: the trainer writes a
            // step's row before its checkpoint, and a run killed between the two resumes from
            // the checkpoint (dropping the row), so the row alone must not end a segment.
            let saved = checkpoint::latest(run)?.unwrap_or(seg_start);
            let so_far: Vec<Point> = own(run)?.into_iter().filter(|p| p.step <= saved).collect();
            let last = so_far.last().map_or(seg_start, |p| p.step);
            let hit = self.stop.is_some_and(|level| {
                let all: Vec<Point> = seg.before.iter().chain(&so_far).copied().collect();
                stats::smoothed(&all, plan.experiment.smooth)
                    .iter()
                    .any(|p| p.step >= seg_start && p.accuracy >= level)
            });
            if last >= end || hit {
                return Ok((so_far, last, hit));
            }
            let until = if self.stop.is_some() {
                (last + plan.val_every).min(end)
            } else {
                end
            };
            self.stage(b.seed, format!("k={k} {name}: training to step {until}"));
            self.engine.train(run, until)?;
        }
    }
}
