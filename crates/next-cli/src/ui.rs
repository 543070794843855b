//! Console output shared by the subcommands: progress bars, lines printed above them, and the
//! base model's pretraining shown as it happens.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use next_trainer::TrainConfig;

/// A progress bar of `len` steps labelled `prefix`, with elapsed time and ETA.
pub fn bar(len: u64, prefix: &str) -> Result<ProgressBar> {
    Ok(
        ProgressBar::new(len).with_style(ProgressStyle::with_template(&format!(
            "{prefix} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed}}<{{eta}}]"
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
