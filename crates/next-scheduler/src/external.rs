//! What the engines that train out of process (TRL, verl) share: the arguments of the `next
//! verify` that scores their rewards, progress events from their metrics rows, and the
//! in-process validation of the checkpoints they saved.

use std::path::Path;

use next_trainer::checkpoint;
use next_trainer::config::TrainConfig;
use next_trainer::metrics;
use next_trainer::train::Event;
use next_verifiers::Target;

use crate::{Error, InProcess, Result, TrainProgress};

fn bad(why: String) -> Error {
    Error::Config(why)
}

/// `next verify`'s arguments for the config's rewards.
pub(crate) fn verify_args(cfg: &TrainConfig) -> Result<Vec<String>> {
    let r = &cfg.reward;
    if !r.sources.is_empty() {
        return Err(bad(
            "reward.sources is not supported by the TRL and verl engines yet: give one reward.fn for every row".into(),
        ));
    }
    if r.function.is_empty() {
        return Ok(vec!["--verifier".into(), "auto".into()]);
    }
    Ok(
        match r
            .function
            .parse::<Target>()
            .map_err(|e| bad(e.to_string()))?
        {
            Target::Verifier(name) => vec!["--verifier".into(), name],
            Target::Python(f) => {
                let style = serde_json::to_value(r.style).expect("an enum");
                let mut a = vec![
                    "--reward-fn".into(),
                    f.to_string(),
                    "--reward-fn-style".into(),
                    style.as_str().unwrap_or("auto").into(),
                    "--workers".into(),
                    r.workers.to_string(),
                    "--timeout".into(),
                    r.timeout_s.to_string(),
                ];
                if !r.python.is_empty() {
                    a.extend(["--python".into(), r.python.clone()]);
                }
                a
            }
        },
    )
}

/// Scores the validations `run` is due up to `until` (step 0 with the initial adapter,
/// every `trainer.val_every` steps, and `until`) that it has not recorded yet; a segment
/// that starts from a jump is not validated at its first step (the jump was scored).
pub(crate) fn validate_saved(
    inner: &mut InProcess,
    run: &Path,
    until: usize,
    trainer: &str,
) -> Result<()> {
    let t = &inner.cfg.trainer;
    let every = t.val_every.max(1);
    let initial = checkpoint::initial_adapter(run);
    let first = if initial.is_dir() {
        0
    } else {
        (1..=until)
            .find(|&s| checkpoint::adapter_dir(run, s).is_dir())
            .unwrap_or(until)
    };
    let done: Vec<usize> = metrics::read(run)
        .unwrap_or_default()
        .iter()
        .filter(|r| r.val().is_some())
        .map(|r| r.step)
        .collect();
    let mut values = vec![];
    for step in first..=until {
        let due = step == until || step.is_multiple_of(every);
        if !due || done.contains(&step) || (step == first && first > 0) {
            continue;
        }
        let adapter = if step == 0 {
            initial.clone()
        } else {
            checkpoint::adapter_dir(run, step)
        };
        if !adapter.is_dir() {
            return Err(bad(format!(
                "validation at step {step} needs the checkpoint {}, which the {trainer} did not write",
                adapter.display()
            )));
        }
        values.push((step, inner.validation_metrics(&adapter)?));
    }
    if !values.is_empty() {
        metrics::merge(run, values)?;
    }
    Ok(())
}

/// The start of a segment trained out of process, as the in-process trainer starts one: the
/// run directory with its resolved config (stopping at `step`), and an [`Event::Start`] from
/// its last checkpoint. Returns that checkpoint's step (0 for none).
pub(crate) fn begin_segment(inner: &mut InProcess, run: &Path, step: usize) -> Result<usize> {
    let mut cfg = inner.cfg.clone();
    cfg.trainer.stop_at = step;
    std::fs::create_dir_all(run).map_err(crate::io(run))?;
    next_files::resolved::write(&run.join(next_files::resolved::FILE), &cfg)?;
    let from = checkpoint::latest(run)?.unwrap_or(0);
    (inner.on_train)(
        run,
        Event::Start {
            step: from,
            steps: cfg.trainer.steps,
            resumed: from > 0,
        },
    );
    Ok(from)
}

/// Sends an [`Event::Step`] for every training row of `rows` (an external trainer's metrics)
/// after step `after`; returns the last step reported. A line still being written is read
/// next time.
pub(crate) fn report_rows(
    on_train: &mut TrainProgress,
    run: &Path,
    rows: Vec<metrics::Row>,
    after: usize,
) -> usize {
    let mut last = after;
    for r in rows {
        if r.step > last && r.seconds().is_some() {
            last = r.step;
            on_train(
                run,
                Event::Step {
                    step: r.step,
                    metrics: r.data,
                },
            );
        }
    }
    last
}
