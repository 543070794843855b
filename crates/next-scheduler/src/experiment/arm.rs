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
use super::CONTROL;
use super::{accuracy_at, k_dir, reached, seed_dir, Arm, Baseline, Event, Overhead, Plan, Point};
use crate::jump::{self, Predictor};
use crate::{Engine, Error, Result};

/// What the arms of an experiment share: the engine, the plan, the directory, the progress
/// callback.
pub(super) struct Ctx<'a> {
    pub engine: &'a mut dyn Engine,
    pub plan: &'a Plan,
    pub out: &'a Path,
    pub on_event: &'a mut dyn FnMut(Event),
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
}

/// One segment of an arm: its run directory, where it starts (step, wall seconds so far),
/// where it ends, and the validation accuracy it starts with.
struct Segment<'a> {
    run: &'a Path,
    from: (usize, f64),
    end: usize,
    start_accuracy: f64,
}

impl Ctx<'_> {
    fn stage(&mut self, seed: u64, what: String) {
        (self.on_event)(Event::Stage { seed, what });
    }

    pub(super) fn baseline(&mut self, seed: u64) -> Result<Baseline> {
        let plan = self.plan;
        let dir = seed_dir(self.out, seed).join("baseline");
        self.stage(seed, format!("baseline: training to step {}", plan.steps));
        self.engine.train(&dir, plan.steps)?;
        let curve = curve(&read(&dir)?, 0, 0.0);
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
        let base = curve[0].accuracy;
        Ok(Baseline {
            seed,
            target,
            lower_target: base + plan.experiment.lower_target * (target - base),
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

    /// Fits `name` on `store`, chooses λ from the adapter `from`, and writes the jump to `out`
    /// (with `jump.json`, which a resumed experiment reuses).
    fn jump(
        &mut self,
        name: &str,
        store: &Path,
        extract_s: f64,
        from: &Path,
        out: &Path,
    ) -> Result<Jump> {
        let record = out.join("jump.json");
        if let Some(j) = next_files::json::read_opt::<Jump>(&record)? {
            return Ok(j);
        }
        let s = &self.plan.scheduler;
        let plan = jump::Plan {
            predictor: Predictor::Fit {
                kind: name.parse()?,
                window: s.window(),
            },
            horizon: s.horizon,
            rank: s.rank,
            search: s.search()?,
            lambda: s.lambda,
        };
        let on_event = &mut *self.on_event;
        let chosen = jump::jump(
            store,
            from,
            &plan,
            Some(&mut *self.engine),
            out,
            Existing::Replace,
            &mut |lambda, score| on_event(Event::Candidate { lambda, score }),
        )?;
        let accuracy = match chosen.score {
            Some(s) => s,
            None => self.engine.score(out)?.0,
        };
        let j = Jump {
            overhead: Overhead {
                extract: extract_s,
                fit: chosen.fit_seconds,
                search: chosen.search_seconds,
            },
            accuracy,
            chosen: Some(chosen),
            adapter: out.to_path_buf(),
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
        let base_dir = seed_dir(out, b.seed).join("baseline");
        let from = checkpoint::adapter_dir(&base_dir, k);
        let first = if name == CONTROL {
            Jump {
                chosen: None,
                overhead: Overhead::default(),
                adapter: from,
                accuracy: accuracy_at(&b.curve, k),
            }
        } else {
            let store = kd.join("trajectory");
            let ex = self.extract(&base_dir, k, &store, &kd.join("extract.json"))?;
            self.stage(b.seed, format!("k={k} {name}: fit, choose λ"));
            self.jump(name, &store, ex, &from, &kd.join(format!("{name}.adapter")))?
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
                start_accuracy: jumps[r].accuracy,
            };
            let (points_here, last, hit) = self.train_segment(b, k, name, &seg)?;
            points.extend(points_here);
            at = last;
            start = points.last().map_or(start, |p| p.seconds);
            if r + 1 == rounds || (plan.experiment.stop_at_target && hit) {
                break;
            }
            let ex = self.extract(
                &run,
                end,
                &run.join("trajectory"),
                &run.join("extract.json"),
            )?;
            self.stage(
                b.seed,
                format!("k={k} {name}: jump {} at step {end}", r + 2),
            );
            let j = self.jump(
                name,
                &run.join("trajectory"),
                ex,
                &checkpoint::adapter_dir(&run, end),
                &kd.join(format!("{name}.round-{}.adapter", r + 1)),
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
        let lambdas: Vec<f64> = jumps
            .iter()
            .filter_map(|j| j.chosen.as_ref().map(|c| c.lambda))
            .collect();
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
            curve: points,
        };
        next_files::json::write(&done, &arm)?;
        Ok(arm)
    }

    /// Trains a segment (or, with `stop_at_target`, until it reaches the target); returns its
    /// validation points after the start, the step it stopped at, and whether it reached the
    /// target (counting its start accuracy).
    fn train_segment(
        &mut self,
        b: &Baseline,
        k: usize,
        name: &str,
        seg: &Segment,
    ) -> Result<(Vec<Point>, usize, bool)> {
        let plan = self.plan;
        let (run, end, start_accuracy) = (seg.run, seg.end, seg.start_accuracy);
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
            let so_far = own(run)?;
            let last = so_far.last().map_or(seg_start, |p| p.step);
            let hit = start_accuracy >= b.target || reached(&so_far, b.target).is_some();
            if last >= end || (plan.experiment.stop_at_target && hit) {
                return Ok((so_far, last, hit));
            }
            let until = if plan.experiment.stop_at_target {
                (last + plan.val_every).min(end)
            } else {
                end
            };
            self.stage(b.seed, format!("k={k} {name}: training to step {until}"));
            self.engine.train(run, until)?;
        }
    }
}
