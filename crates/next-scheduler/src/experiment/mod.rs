//! `next experiment`: every predict-extend method side by side on the same seeds. Per seed a
//! baseline GRPO run; from its checkpoint at each jump step K a control arm (restarted there
//! with no jump, as every arm is) and one arm per method (extract, fit, choose λ with the
//! verifier, jump, continue). Every cost is counted; every arm is resumable on its own.
//!
//! Layout under the experiment directory:
//! `seed-S/baseline/` (a training run), `seed-S/k-K/trajectory/` (the rank-1 store of the
//! baseline's checkpoints up to K: arms never see past their jump), `seed-S/k-K/<arm>/` (the
//! arm's run; `arm.json` once finished), `seed-S/k-K/<arm>.adapter/` (the adapter it starts
//! from, with `jump.json`), with `experiment.rounds` > 1 also `<arm>.round-R/` and
//! `<arm>.round-R.adapter/` per further jump, and `experiment.json` (every finished baseline
//! and arm).
//!
//! Architecture invariant: knows nothing of models or tasks; it sequences the [`Engine`], the
//! trajectory store and the predictors, and reads the trainer's `metrics.jsonl`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use next_predictor::by_name;
use next_trajectory::extract::{extract, Input, Options};
use next_trajectory::layout::{discover, Format};
use serde::{Deserialize, Serialize};

use next_trainer::checkpoint;

use crate::{choose, io, Chosen, Engine, Error, Result, SchedulerConfig};

/// The `[experiment]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Seeds (trainer seeds `first_seed`, `first_seed + 1`, ...); every arm runs on each.
    pub seeds: usize,
    pub first_seed: u64,
    /// Steps at which the arms branch off the baseline (a sweep when several); multiples of
    /// `trainer.save_every` and `trainer.val_every`.
    pub jump_at: Vec<usize>,
    /// Predictors compared (`next-scheduler`'s names); the control arm is always added.
    pub methods: Vec<String>,
    /// The lower target: this fraction of the way from the base accuracy to the baseline's
    /// final accuracy.
    pub lower_target: f64,
    /// Last validations of the baseline averaged into its final accuracy (the target).
    pub final_window: usize,
    /// Stop an arm once its validation accuracy reaches the target (saves time; then
    /// accuracy at equal step budgets is only known up to there).
    pub stop_at_target: bool,
    /// Jumps per method arm: the first at K, then one every `every` steps, each fitted on
    /// the arm's own trajectory since its last jump.
    pub rounds: usize,
    pub every: usize,
    /// Bootstrap resamples of the seeds for the confidence intervals.
    pub resamples: usize,
    /// Confidence level of the intervals.
    pub confidence: f64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            seeds: 5,
            first_seed: 0,
            jump_at: vec![50],
            methods: [
                "next-reference",
                "next",
                "linear-relex",
                "linear-alpharl",
                "two-point",
            ]
            .map(String::from)
            .to_vec(),
            lower_target: 0.9,
            final_window: 1,
            stop_at_target: false,
            rounds: 1,
            every: 20,
            resamples: 2000,
            confidence: 0.95,
        }
    }
}

/// The name of the arm that branches at K with no jump.
pub const CONTROL: &str = "control";

/// One validation of a run: the step, the accuracy, and the wall clock spent to get there
/// (RL steps of the run and of the baseline prefix it branched from, plus its jump's
/// overhead; validation itself is not counted, every arm does the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub step: usize,
    pub accuracy: f64,
    pub seconds: f64,
}

/// What a jump cost, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    pub extract: f64,
    pub fit: f64,
    pub search: f64,
}

impl Overhead {
    pub fn total(&self) -> f64 {
        self.extract + self.fit + self.search
    }
}

/// The baseline run of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub seed: u64,
    pub curve: Vec<Point>,
    /// The final accuracy (mean of the last `final_window` validations): the target.
    pub target: f64,
    pub lower_target: f64,
}

/// One arm of one seed at one jump step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub seed: u64,
    pub jump_at: usize,
    pub name: String,
    /// The jump chosen at K (None for the control).
    pub lambda: Option<f64>,
    /// The λ of each further jump (`experiment.rounds` > 1).
    #[serde(default)]
    pub later_lambdas: Vec<f64>,
    /// (λ, validation accuracy) scored by the search.
    pub candidates: Vec<(f64, f64)>,
    pub overhead: Overhead,
    /// Baseline validations before K, the accuracy right after the jump at K, then the arm's.
    pub curve: Vec<Point>,
}

impl Arm {
    /// Validation accuracy right after the jump.
    pub fn jump_accuracy(&self) -> f64 {
        accuracy_at(&self.curve, self.jump_at)
    }
}

/// The validation accuracy at `step` (NaN if the curve has no validation there).
pub fn accuracy_at(curve: &[Point], step: usize) -> f64 {
    curve
        .iter()
        .find(|p| p.step == step)
        .map_or(f64::NAN, |p| p.accuracy)
}

/// The first validation at or above `target`, if any.
pub fn reached(curve: &[Point], target: f64) -> Option<Point> {
    curve.iter().copied().find(|p| p.accuracy >= target)
}

/// Everything the experiment measured; `experiment.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub baselines: Vec<Baseline>,
    pub arms: Vec<Arm>,
    /// The run whose trajectory the report analyses (the first seed's baseline).
    pub analysed: Option<PathBuf>,
}

pub const RESULTS: &str = "experiment.json";

/// Progress, for the CLI.
#[derive(Debug, Clone)]
pub enum Event {
    /// What runs now (seed, what).
    Stage {
        seed: u64,
        what: String,
    },
    Candidate {
        lambda: f64,
        score: f64,
    },
    ArmDone(Arm),
}

/// One metrics.jsonl line, reduced to what the experiment reads.
#[derive(Debug, Clone, Copy)]
struct Row {
    step: usize,
    /// Mean over data sources of the greedy validation accuracy, if validated here.
    val: Option<f64>,
    /// `timing_s/step`, if this line is a training step.
    seconds: Option<f64>,
}

fn read_metrics(run: &Path) -> Result<Vec<Row>> {
    let path = run.join(next_trainer::train::METRICS);
    let file = std::fs::File::open(&path).map_err(io(&path))?;
    let mut rows = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(&path))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::Config(format!("{} line {}: {why}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let step = v["step"]
            .as_u64()
            .ok_or_else(|| bad("no integer \"step\"".into()))? as usize;
        let data = v["data"]
            .as_object()
            .ok_or_else(|| bad("no \"data\" object".into()))?;
        let vals: Vec<f64> = data
            .iter()
            .filter(|(k, _)| k.starts_with("val-core/") && k.ends_with("/reward/mean@1"))
            .filter_map(|(_, x)| x.as_f64())
            .collect();
        rows.push(Row {
            step,
            val: (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
            seconds: data.get("timing_s/step").and_then(|x| x.as_f64()),
        });
    }
    Ok(rows)
}

/// Validation points of a run, with wall clock from `start` seconds at step `from` (rows
/// before `from` are ignored).
fn curve(rows: &[Row], from: usize, start: f64) -> Vec<Point> {
    let mut t = start;
    let mut out = vec![];
    for r in rows.iter().filter(|r| r.step >= from) {
        if r.step > from {
            t += r.seconds.unwrap_or(0.0);
        }
        if let Some(a) = r.val {
            out.push(Point {
                step: r.step,
                accuracy: a,
                seconds: t,
            });
        }
    }
    out
}

/// The experiment's plan and settings, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: ExperimentConfig,
    pub scheduler: SchedulerConfig,
    pub steps: usize,
    pub save_every: usize,
    pub val_every: usize,
}

impl Plan {
    /// Checks that the settings fit together before anything runs.
    pub fn new(
        experiment: ExperimentConfig,
        scheduler: SchedulerConfig,
        steps: usize,
        save_every: usize,
        val_every: usize,
    ) -> Result<Self> {
        let bad = |m: String| Err(Error::Config(m));
        let e = &experiment;
        if e.seeds == 0 {
            return bad("experiment.seeds must be at least 1".into());
        }
        if e.jump_at.is_empty() {
            return bad("experiment.jump_at is empty".into());
        }
        if save_every == 0 || val_every == 0 {
            return bad("trainer.save_every and trainer.val_every must be positive".into());
        }
        if !steps.is_multiple_of(val_every) {
            return bad(format!(
                "trainer.steps ({steps}) must be a multiple of trainer.val_every ({val_every}) so the baseline ends on a validation"
            ));
        }
        for &k in &e.jump_at {
            if k == 0 || k >= steps || !k.is_multiple_of(save_every) || !k.is_multiple_of(val_every)
            {
                return bad(format!(
                    "experiment.jump_at has {k}: each must be below trainer.steps ({steps}) and a positive multiple of trainer.save_every ({save_every}) and trainer.val_every ({val_every})"
                ));
            }
            if (scheduler.horizon as usize) > k {
                return bad(format!(
                    "scheduler.horizon ({}) is beyond experiment.jump_at {k}: no checkpoint pair that far apart exists before the jump",
                    scheduler.horizon
                ));
            }
        }
        if scheduler.horizon == 0 || !scheduler.horizon.is_multiple_of(save_every as u64) {
            return bad(format!(
                "scheduler.horizon ({}) must be a positive multiple of trainer.save_every ({save_every})",
                scheduler.horizon
            ));
        }
        for m in &e.methods {
            by_name(m, None).map_err(|err| Error::Config(format!("experiment.methods: {err}")))?;
        }
        if !(e.lower_target > 0.0 && e.lower_target <= 1.0) {
            return bad(format!(
                "experiment.lower_target is {}; expected a fraction in (0, 1]",
                e.lower_target
            ));
        }
        if !(e.confidence > 0.0 && e.confidence < 1.0) {
            return bad(format!(
                "experiment.confidence is {}; expected a level in (0, 1)",
                e.confidence
            ));
        }
        if e.final_window == 0 || e.final_window * val_every > steps {
            return bad(format!(
                "experiment.final_window ({}) must be between 1 and the number of validations",
                e.final_window
            ));
        }
        if e.rounds == 0 {
            return bad("experiment.rounds must be at least 1".into());
        }
        if e.rounds > 1 {
            let ev = e.every;
            if ev < 2 * save_every
                || (ev as u64) < scheduler.horizon
                || !ev.is_multiple_of(save_every)
                || !ev.is_multiple_of(val_every)
            {
                return bad(format!(
                    "experiment.every ({ev}) must be a multiple of trainer.save_every ({save_every}) and trainer.val_every ({val_every}), at least two checkpoints and at least scheduler.horizon ({}) apart",
                    scheduler.horizon
                ));
            }
            if let Some(k) = e
                .jump_at
                .iter()
                .find(|&&k| k + (e.rounds - 1) * ev >= steps)
            {
                return bad(format!(
                    "experiment.rounds ({}) jumps every {ev} steps from {k} do not fit before trainer.steps ({steps})",
                    e.rounds
                ));
            }
        }
        scheduler.search()?;
        Ok(Self {
            experiment,
            scheduler,
            steps,
            save_every,
            val_every,
        })
    }

    /// Arms per seed and jump step: the control, then the methods.
    pub fn arms(&self) -> Vec<String> {
        std::iter::once(CONTROL.to_string())
            .chain(self.experiment.methods.iter().cloned())
            .collect()
    }

    pub fn seeds(&self) -> Vec<u64> {
        (0..self.experiment.seeds as u64)
            .map(|i| self.experiment.first_seed + i)
            .collect()
    }
}

pub fn seed_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

fn k_dir(out: &Path, seed: u64, k: usize) -> PathBuf {
    seed_dir(out, seed).join(format!("k-{k}"))
}

fn read_or<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    next_model::io::read_json(path)
        .map(Some)
        .map_err(|e| Error::Config(e.to_string()))
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    next_model::io::write_json(path, value).map_err(|e| Error::Config(e.to_string()))
}

/// Runs (or resumes) the whole experiment in `out`; returns every measurement.
pub fn run(
    engine: &mut dyn Engine,
    plan: &Plan,
    out: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Results> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut results = Results::default();
    for seed in plan.seeds() {
        engine.set_seed(seed);
        let baseline = baseline(engine, plan, out, seed, on_event)?;
        if results.analysed.is_none() {
            results.analysed = Some(seed_dir(out, seed).join("baseline"));
        }
        for &k in &plan.experiment.jump_at {
            for name in plan.arms() {
                let arm = arm(engine, plan, out, &baseline, k, &name, on_event)?;
                on_event(Event::ArmDone(arm.clone()));
                results.arms.push(arm);
                write(&out.join(RESULTS), &results)?;
            }
        }
        results.baselines.push(baseline);
        write(&out.join(RESULTS), &results)?;
    }
    Ok(results)
}

fn baseline(
    engine: &mut dyn Engine,
    plan: &Plan,
    out: &Path,
    seed: u64,
    on_event: &mut dyn FnMut(Event),
) -> Result<Baseline> {
    let dir = seed_dir(out, seed).join("baseline");
    on_event(Event::Stage {
        seed,
        what: format!("baseline: training to step {}", plan.steps),
    });
    engine.train(&dir, plan.steps)?;
    let rows = read_metrics(&dir)?;
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
    let base = curve[0].accuracy;
    Ok(Baseline {
        seed,
        target,
        lower_target: base + plan.experiment.lower_target * (target - base),
        curve,
    })
}

/// Extracts the rank-1 store of `run`'s checkpoints up to `step` into `store`, and returns the
/// seconds it took (kept in `record`, so a resumed experiment still counts them).
fn extract_timed(plan: &Plan, run: &Path, step: usize, store: &Path, record: &Path) -> Result<f64> {
    if let Some(s) = read_or::<f64>(record)? {
        return Ok(s);
    }
    let t = std::time::Instant::now();
    let (_, cps) = discover(run, Some(Format::Next))?;
    let cps: Vec<_> = cps
        .into_iter()
        .filter(|c| c.step as usize <= step)
        .collect();
    extract(
        &Input::List(cps),
        store,
        &Options {
            target_gap: Some(plan.scheduler.horizon),
            ..Options::default()
        },
        &|_, _| {},
    )?;
    let s = t.elapsed().as_secs_f64();
    write(record, &s)?;
    Ok(s)
}

/// A jump an arm starts a segment from, and what it cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Jump {
    chosen: Option<Chosen>,
    overhead: Overhead,
    adapter: PathBuf,
    /// Validation accuracy of `adapter`.
    accuracy: f64,
}

/// Fits `name` on `store`, chooses λ from the adapter `from`, and writes the jump to `out`
/// (with `jump.json`, which a resumed experiment reuses).
#[allow(clippy::too_many_arguments)]
fn jump(
    engine: &mut dyn Engine,
    plan: &Plan,
    name: &str,
    store: &Path,
    extract_s: f64,
    from: &Path,
    out: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<Jump> {
    let record = out.join("jump.json");
    if let Some(j) = read_or::<Jump>(&record)? {
        return Ok(j);
    }
    let search = plan.scheduler.search()?;
    let mut chosen = choose(
        engine,
        &plan.scheduler,
        name,
        search.as_ref(),
        store,
        from,
        out,
        &mut |lambda, score| on_event(Event::Candidate { lambda, score }),
    )?;
    if chosen.score.is_nan() {
        chosen.score = engine.score(out)?.0;
    }
    let j = Jump {
        overhead: Overhead {
            extract: extract_s,
            fit: chosen.fit_seconds,
            search: chosen.search_seconds,
        },
        accuracy: chosen.score,
        chosen: Some(chosen),
        adapter: out.to_path_buf(),
    };
    write(&record, &j)?;
    Ok(j)
}

/// Runs one arm: a segment from its first jump at `k` (none for the control), and for
/// `experiment.rounds` > 1 further jumps every `experiment.every` steps, each from the
/// previous segment's own trajectory (the adapter grows by `scheduler.rank` per jump, so each
/// segment is its own run directory).
#[allow(clippy::too_many_arguments)]
fn arm(
    engine: &mut dyn Engine,
    plan: &Plan,
    out: &Path,
    b: &Baseline,
    k: usize,
    name: &str,
    on_event: &mut dyn FnMut(Event),
) -> Result<Arm> {
    let kd = k_dir(out, b.seed, k);
    let dir = kd.join(name);
    let done = dir.join("arm.json");
    if let Some(a) = read_or::<Arm>(&done)? {
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
        let ex = extract_timed(plan, &base_dir, k, &store, &kd.join("extract.json"))?;
        on_event(Event::Stage {
            seed: b.seed,
            what: format!("k={k} {name}: fit, choose λ"),
        });
        jump(
            engine,
            plan,
            name,
            &store,
            ex,
            &from,
            &kd.join(format!("{name}.adapter")),
            on_event,
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
            engine.start_from(
                &run,
                &prev,
                at,
                &jumps[r].adapter,
                plan.scheduler.keep_moments,
            )?;
        }
        let (seg_start, seg_secs) = (at, start);
        let own = |run: &Path| -> Result<Vec<Point>> {
            if !run.join(next_trainer::train::METRICS).is_file() {
                return Ok(vec![]);
            }
            Ok(curve(&read_metrics(run)?, seg_start, seg_secs)
                .into_iter()
                .filter(|p| p.step > seg_start)
                .collect())
        };
        let hit;
        loop {
            let so_far = own(&run)?;
            let last = so_far.last().map_or(seg_start, |p| p.step);
            let reached_here =
                jumps[r].accuracy >= b.target || reached(&so_far, b.target).is_some();
            if last >= end || (plan.experiment.stop_at_target && reached_here) {
                points.extend(so_far);
                at = last;
                hit = reached_here;
                break;
            }
            let until = if plan.experiment.stop_at_target {
                (last + plan.val_every).min(end)
            } else {
                end
            };
            on_event(Event::Stage {
                seed: b.seed,
                what: format!("k={k} {name}: training to step {until}"),
            });
            engine.train(&run, until)?;
        }
        start = points.last().map_or(start, |p| p.seconds);
        if r + 1 == rounds || (plan.experiment.stop_at_target && hit) {
            break;
        }
        let ex = extract_timed(
            plan,
            &run,
            end,
            &run.join("trajectory"),
            &run.join("extract.json"),
        )?;
        on_event(Event::Stage {
            seed: b.seed,
            what: format!("k={k} {name}: jump {} at step {end}", r + 2),
        });
        let j = jump(
            engine,
            plan,
            name,
            &run.join("trajectory"),
            ex,
            &checkpoint::adapter_dir(&run, end),
            &kd.join(format!("{name}.round-{}.adapter", r + 1)),
            on_event,
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
            .map(|c| c.candidates.clone())
            .unwrap_or_default(),
        overhead: jumps.iter().fold(Overhead::default(), |o, j| Overhead {
            extract: o.extract + j.overhead.extract,
            fit: o.fit + j.overhead.fit,
            search: o.search + j.overhead.search,
        }),
        curve: points,
    };
    write(&done, &arm)?;
    Ok(arm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[(usize, Option<f64>, Option<f64>)]) -> Vec<Row> {
        v.iter()
            .map(|&(step, val, seconds)| Row { step, val, seconds })
            .collect()
    }

    #[test]
    fn curves_count_only_the_steps_after_their_start() {
        let r = rows(&[
            (0, Some(0.2), None),
            (1, None, Some(1.0)),
            (2, Some(0.5), Some(2.0)),
            (3, None, Some(4.0)),
            (4, Some(0.7), Some(8.0)),
        ]);
        let c = curve(&r, 0, 0.0);
        let got: Vec<(usize, f64, f64)> =
            c.iter().map(|p| (p.step, p.accuracy, p.seconds)).collect();
        assert_eq!(got, vec![(0, 0.2, 0.0), (2, 0.5, 3.0), (4, 0.7, 15.0)]);
        let c = curve(&r, 2, 10.0);
        assert_eq!(c.last().unwrap().seconds, 22.0);
        assert_eq!(reached(&curve(&r, 0, 0.0), 0.6).unwrap().step, 4);
        assert!(reached(&curve(&r, 0, 0.0), 0.9).is_none());
    }
}
