//! Console output shared by the subcommands: progress bars, lines printed above them, and the
//! base model's pretraining shown as it happens.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use next_scheduler::TrainProgress;
use next_trainer::train::Event;
use next_trainer::TrainConfig;

/// A progress bar of `len` steps labelled `prefix`, with elapsed time and ETA.
pub fn bar(len: u64, prefix: &str) -> Result<ProgressBar> {
    Ok(
        ProgressBar::new(len).with_style(ProgressStyle::with_template(&format!(
            "{prefix} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed}}<{{eta}}]"
        ))?),
    )
}

/// A counter of `unit`s labelled `prefix`, for input of unknown length (a pipe).
pub fn counter(prefix: &str, unit: &str) -> Result<ProgressBar> {
    Ok(
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template(&format!(
            "{prefix} {{pos}} {unit} [{{elapsed}}] {{msg}}"
        ))?),
    )
}

/// Prints a line above the bar, or plainly when the bar is hidden (output not a terminal).
pub fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

/// Shows `line` as the bar's message; a log (output not a terminal) gets it as a line too.
pub fn stage(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    }
    pb.set_message(line);
}

/// Training progress onto `pb` as the RL steps of every run trained so far; a resumed run
/// starts past step 0, so each counts from where it started.
pub fn steps_across_runs(pb: &ProgressBar) -> TrainProgress<'static> {
    let pb = pb.clone();
    // The steps of the runs before, and where the current one started and stands.
    let (mut done, mut start, mut last) = (0u64, 0u64, 0u64);
    Box::new(move |_, e| match e {
        Event::Start { step, .. } => {
            done += last - start;
            (start, last) = (step as u64, step as u64);
        }
        Event::Step { step, .. } => {
            last = step as u64;
            pb.set_position(done + last - start);
        }
        _ => {}
    })
}

/// The config's base model, pretraining the embedded one first when the config names none
/// (with a progress bar); `cfg.model.path` names it afterwards.
pub fn ensure_base(cfg: &mut TrainConfig) -> Result<PathBuf> {
    let pb = bar(cfg.pretrain.steps as u64, "pretrain")?;
    let res = next_trainer::pretrain::ensure_base(cfg, &mut |p| {
        pb.set_position(p.step as u64);
        pb.set_message(format!("loss {:.3}", p.loss));
        if let Some(a) = p.val_accuracy {
            say(
                &pb,
                format!(
                    "pretrain step {}/{}: loss {:.4}, greedy val accuracy {:.3}",
                    p.step, p.steps, p.loss, a
                ),
            );
        }
    })?;
    pb.finish_and_clear();
    match res {
        Some(r) if r.reused => eprintln!(
            "base model: reusing {} (greedy val accuracy {:.3})",
            r.dir.display(),
            r.val_accuracy
        ),
        Some(r) => eprintln!(
            "base model: trained {} in {:.0}s (greedy val accuracy {:.3})",
            r.dir.display(),
            r.seconds,
            r.val_accuracy
        ),
        None => {}
    }
    Ok(PathBuf::from(&cfg.model.path))
}
