//! Finding a run's checkpoint series on disk: this project's and verl's
//! `global_step_N/actor/lora_adapter`, TRL/PEFT's `checkpoint-N/`, full-weight HF directories,
//! or an explicit list; steps come from the directory names and must be evenly spaced.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where a series of checkpoints comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// This project's run directory (verl layout plus `latest_checkpointed_iteration.txt`).
    Next,
    /// verl: `global_step_N/actor/lora_adapter/`, or verl 0.9's exported
    /// `global_step_N/actor/huggingface/lora_adapter/`.
    Verl,
    /// TRL / PEFT Trainer: `checkpoint-N/` holding the adapter.
    Trl,
    /// Full weights (no LoRA): `checkpoint-N/` or `global_step_N/actor/huggingface/` holding
    /// HF safetensors.
    Full,
    /// Given explicitly as (step, directory) pairs.
    List,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "next" => Self::Next,
            "verl" => Self::Verl,
            "trl" => Self::Trl,
            "full" => Self::Full,
            other => {
                return Err(format!(
                    "unknown format {other:?}; expected auto, next, verl, trl or full"
                ))
            }
        })
    }
}

/// One checkpoint: its step and the directory holding the adapter (or the full weights).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub step: u64,
    pub dir: PathBuf,
}

/// The adapter of verl checkpoint `step_dir`: `actor/lora_adapter/` (verl before 0.9), else
/// where verl 0.9's model merger puts it when its `--target_dir` is `actor/huggingface`
/// (`python -m verl.model_merger merge --backend fsdp --local_dir global_step_N/actor
/// --target_dir global_step_N/actor/huggingface`).
fn verl_adapter(step_dir: &Path) -> PathBuf {
    let direct = step_dir.join("actor/lora_adapter");
    let exported = step_dir.join("actor/huggingface/lora_adapter");
    if !direct.is_dir() && exported.is_dir() {
        exported
    } else {
        direct
    }
}

/// The checkpoint series of `run` in `format` (None: detect). Returns the format found and
/// the checkpoints by ascending step.
pub fn discover(run: &Path, format: Option<Format>) -> Result<(Format, Vec<Checkpoint>)> {
    if !run.is_dir() {
        return Err(Error::Layout(format!(
            "{} is not a directory",
            run.display()
        )));
    }
    let verl = numbered(run, "global_step_")?;
    let trl = numbered(run, "checkpoint-")?;
    let is_adapter = |d: &Path| d.join(next_files::peft::CONFIG).is_file();
    let format = match format {
        Some(f) => f,
        None if !verl.is_empty() => {
            if run.join("latest_checkpointed_iteration.txt").is_file()
                && run.join(next_files::resolved::FILE).is_file()
            {
                Format::Next
            } else if verl.iter().any(|(_, d)| is_adapter(&verl_adapter(d))) {
                Format::Verl
            } else {
                Format::Full
            }
        }
        None if !trl.is_empty() => {
            if trl.iter().any(|(_, d)| is_adapter(d)) {
                Format::Trl
            } else {
                Format::Full
            }
        }
        None => {
            return Err(Error::Layout(format!(
                "{} holds no checkpoints: expected global_step_N/ (this project, verl) or checkpoint-N/ (TRL)",
                run.display()
            )))
        }
    };
    let mut cps: Vec<Checkpoint> = match format {
        Format::Next => verl
            .into_iter()
            .map(|(step, d)| Checkpoint {
                step,
                dir: d.join("actor/lora_adapter"),
            })
            .collect(),
        Format::Verl => verl
            .into_iter()
            .map(|(step, d)| Checkpoint {
                step,
                dir: verl_adapter(&d),
            })
            .collect(),
        Format::Trl => trl
            .into_iter()
            .map(|(step, dir)| Checkpoint { step, dir })
            .collect(),
        Format::Full => {
            let series = if verl.is_empty() { trl } else { verl };
            series
                .into_iter()
                .map(|(step, d)| {
                    let hf = d.join("actor/huggingface");
                    Checkpoint {
                        step,
                        dir: if hf.is_dir() { hf } else { d },
                    }
                })
                .collect()
        }
        Format::List => {
            return Err(Error::Layout(
                "the list format takes its checkpoints explicitly, not from a run directory".into(),
            ))
        }
    };
    if format == Format::Next {
        // Only checkpoints the trainer declared complete.
        let p = run.join("latest_checkpointed_iteration.txt");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let latest: u64 = text.trim().parse().map_err(|_| {
            Error::format(
                &p,
                format!("expected a step number, found {:?}", text.trim()),
            )
        })?;
        cps.retain(|c| c.step <= latest);
    }
    if cps.is_empty() {
        return Err(Error::Layout(format!(
            "{} holds no {format:?} checkpoints",
            run.display()
        )));
    }
    for c in &cps {
        let needed = if format == Format::Full {
            "config.json"
        } else {
            next_files::peft::CONFIG
        };
        if !c.dir.join(needed).is_file() {
            return Err(Error::Layout(format!(
                "checkpoint at step {}: {} has no {needed}",
                c.step,
                c.dir.display()
            )));
        }
    }
    check_spacing(&cps)?;
    Ok((format, cps))
}

/// Sorts an explicit list and checks it like a discovered one.
pub fn from_list(mut cps: Vec<Checkpoint>) -> Result<Vec<Checkpoint>> {
    cps.sort_by_key(|c| c.step);
    if cps.is_empty() {
        return Err(Error::Layout("the checkpoint list is empty".into()));
    }
    for w in cps.windows(2) {
        if w[0].step == w[1].step {
            return Err(Error::Layout(format!("step {} is listed twice", w[0].step)));
        }
    }
    check_spacing(&cps)?;
    Ok(cps)
}

/// The checkpoint interval: steps must be evenly spaced (a gap means a missing checkpoint).
pub fn interval(cps: &[Checkpoint]) -> u64 {
    let nonzero: Vec<u64> = cps.iter().map(|c| c.step).filter(|s| *s > 0).collect();
    match nonzero[..] {
        [] => 1,
        [only] => only,
        _ => nonzero[1] - nonzero[0],
    }
}

fn check_spacing(cps: &[Checkpoint]) -> Result<()> {
    let every = interval(cps);
    let nonzero: Vec<&Checkpoint> = cps.iter().filter(|c| c.step > 0).collect();
    for w in nonzero.windows(2) {
        if w[1].step - w[0].step != every {
            let missing = w[0].step + every;
            return Err(Error::Layout(format!(
                "checkpoint step {missing} is missing: steps go {} -> {} ({}) but the interval is {every}",
                w[0].step,
                w[1].step,
                w[1].dir.display()
            )));
        }
    }
    Ok(())
}

/// `prefix<N>` subdirectories of `dir`, by step.
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        // Temporary directories of an interrupted save (`global_step_8.tmp`) are not checkpoints.
        if let Ok(step) = rest.parse::<u64>() {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates `files` (paths under a temporary run) and checks what `discover` finds: the
    /// format and each checkpoint's directory relative to the run.
    fn check(files: &[&str], want: Format, dirs: &[&str]) {
        let tmp = tempfile::tempdir().unwrap();
        for f in files {
            let p = tmp.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{}").unwrap();
        }
        let (format, cps) = discover(tmp.path(), None).unwrap();
        let got: Vec<String> = cps
            .iter()
            .map(|c| {
                c.dir
                    .strip_prefix(tmp.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            (format, got),
            (want, dirs.iter().map(|d| d.to_string()).collect())
        );
    }

    #[test]
    fn each_trainers_layout_is_recognised() {
        check(
            &[
                "global_step_5/actor/lora_adapter/adapter_config.json",
                "global_step_10/actor/lora_adapter/adapter_config.json",
            ],
            Format::Verl,
            &[
                "global_step_5/actor/lora_adapter",
                "global_step_10/actor/lora_adapter",
            ],
        );
        // verl 0.9 writes no adapter while training; its model merger, pointed at
        // actor/huggingface, puts one there beside the base model's files.
        check(
            &[
                "global_step_5/actor/huggingface/config.json",
                "global_step_5/actor/huggingface/lora_adapter/adapter_config.json",
                "global_step_10/actor/huggingface/config.json",
                "global_step_10/actor/huggingface/lora_adapter/adapter_config.json",
            ],
            Format::Verl,
            &[
                "global_step_5/actor/huggingface/lora_adapter",
                "global_step_10/actor/huggingface/lora_adapter",
            ],
        );
        check(
            &[
                "checkpoint-2/adapter_config.json",
                "checkpoint-4/adapter_config.json",
            ],
            Format::Trl,
            &["checkpoint-2", "checkpoint-4"],
        );
        check(
            &[
                "global_step_5/actor/huggingface/config.json",
                "global_step_10/actor/huggingface/config.json",
            ],
            Format::Full,
            &[
                "global_step_5/actor/huggingface",
                "global_step_10/actor/huggingface",
            ],
        );
    }
}
