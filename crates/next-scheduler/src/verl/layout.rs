//! What verl 0.9 leaves in its checkpoint directory (`trainer.default_local_dir`), read without
//! verl: which checkpoints are complete, the step it last committed, and its file logger's
//! rows. verl writes `latest_checkpointed_iteration.txt` after everything else of a step, so
//! that file is the commit mark; a checkpoint it names must still have every rank's files.

use std::path::{Path, PathBuf};

use next_trainer::metrics;

use crate::{Error, Result};

/// verl's commit mark, in its checkpoint directory.
pub const LATEST: &str = "latest_checkpointed_iteration.txt";

/// Why a verl checkpoint cannot be used, naming the path at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{path}: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error("{path} lacks {missing} (a save interrupted, or files removed)")]
    Files { path: PathBuf, missing: String },
}

/// The files every rank writes with `save_contents = [model, optimizer, extra]`.
const PER_RANK: &[&str] = &["model", "optim", "extra_state"];

/// `dir/global_step_{step}/actor` if that checkpoint is complete: `fsdp_config.json` with its
/// world size W, the model, optimizer and extra-state file of each of the W ranks, and the
/// data loader's `data.pt`.
pub fn complete(dir: &Path, step: usize) -> Result<PathBuf, Incomplete> {
    let step_dir = dir.join(format!("global_step_{step}"));
    if !step_dir.is_dir() {
        return Err(Incomplete::Missing(step_dir));
    }
    let actor = step_dir.join("actor");
    let config = actor.join("fsdp_config.json");
    let text = std::fs::read_to_string(&config).map_err(|_| Incomplete::Missing(config.clone()))?;
    let malformed = |why: String| Incomplete::Malformed {
        path: config.clone(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let world = v["world_size"]
        .as_u64()
        .filter(|&w| w > 0)
        .ok_or_else(|| malformed("no positive integer `world_size`".into()))?;
    let mut missing = vec![];
    for rank in 0..world {
        for kind in PER_RANK {
            let name = format!("{kind}_world_size_{world}_rank_{rank}.pt");
            if !actor.join(&name).is_file() {
                missing.push(format!("actor/{name}"));
            }
        }
    }
    if !step_dir.join("data.pt").is_file() {
        missing.push("data.pt".into());
    }
    if !missing.is_empty() {
        let more = if missing.len() > 3 {
            format!(" and {} more", missing.len() - 3)
        } else {
            String::new()
        };
        missing.truncate(3);
        return Err(Incomplete::Files {
            path: step_dir,
            missing: format!("{}{more}", missing.join(", ")),
        });
    }
    Ok(actor)
}

/// The step verl last committed in `dir`, if any; an error if the mark is unreadable or names
/// a checkpoint that is not complete.
pub fn latest(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join(LATEST);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let step: usize = text
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{}: not a step number: {text:?}", path.display())))?;
    complete(dir, step).map_err(|e| {
        Error::Config(format!(
            "{} names step {step}, but that checkpoint is not usable: {e}",
            path.display()
        ))
    })?;
    Ok(Some(step))
}

/// The steps of `dir`'s checkpoint directories up to the committed one, in order (later ones
/// belong to a save that was interrupted and will be redone).
pub fn steps(dir: &Path) -> Result<Vec<usize>> {
    let Some(last) = latest(dir)? else {
        return Ok(vec![]);
    };
    let entries = std::fs::read_dir(dir).map_err(crate::io(dir))?;
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("global_step_")?
                .parse()
                .ok()
        })
        .filter(|&s| s <= last)
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// The per-launch metrics files of `dir`, in launch order.
fn metrics_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<(usize, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let n = name
                    .strip_prefix("metrics-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()?;
                Some((n, e.path()))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(crate::io(dir)(e)),
    };
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Where the next launch's file logger writes: `metrics-{L}.jsonl`, L one past the last.
pub fn next_metrics_file(dir: &Path) -> Result<PathBuf> {
    Ok(dir.join(format!("metrics-{}.jsonl", metrics_files(dir)?.len())))
}

/// verl's training rows of every launch up to step `until` (a step trained again after a
/// crash keeps its last launch's row), in step order.
pub fn metrics_rows(dir: &Path, until: usize) -> Result<Vec<metrics::Row>> {
    let mut by_step = std::collections::BTreeMap::new();
    for file in metrics_files(dir)? {
        for row in metrics::read_file(&file)? {
            if row.step <= until && row.seconds().is_some() {
                by_step.insert(row.step, row);
            }
        }
    }
    Ok(by_step.into_values().collect())
}
