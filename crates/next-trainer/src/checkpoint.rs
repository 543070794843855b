//! Checkpoints in verl's layout, written atomically, every one kept:
//!
//! ```text
//! <run>/latest_checkpointed_iteration.txt
//! <run>/global_step_N/actor/lora_adapter/{adapter_config.json, adapter_model.safetensors}
//! <run>/global_step_N/actor/optimizer.safetensors     AdamW moments and step
//! <run>/global_step_N/actor/trainer_state.json        step, seed, data cursor
//! ```
//!
//! A checkpoint is built in a staging directory beside it and renamed into place; the
//! latest-step file is replaced last. A run killed at any moment resumes from the last complete
//! one.

use std::path::{Path, PathBuf};

use next_model::{Model, Tensor};
use serde::{Deserialize, Serialize};

use crate::optim::AdamW;
use crate::{Error, Result};

pub const LATEST: &str = "latest_checkpointed_iteration.txt";

/// Where the data loader stands, and what else resuming needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub seed: u64,
    /// Data cursor: epoch of the shuffled training set and position in it.
    pub data_epoch: usize,
    pub data_index: usize,
}

/// The adapter a run started from before its first step (θ_0 of factor-space methods).
pub const INITIAL: &str = "initial_adapter";

/// Where a run keeps its initial adapter (written once, when it starts from scratch).
pub fn initial_adapter(run: &Path) -> PathBuf {
    run.join(INITIAL)
}

pub fn step_dir(run: &Path, step: usize) -> PathBuf {
    run.join(format!("global_step_{step}"))
}

pub fn adapter_dir(run: &Path, step: usize) -> PathBuf {
    step_dir(run, step).join("actor/lora_adapter")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| next_files::Error::io(path, source).into()
}

/// `trainer_state.json` of checkpoint `step`.
fn state_file(run: &Path, step: usize) -> PathBuf {
    step_dir(run, step).join("actor/trainer_state.json")
}

/// Writes checkpoint `state.step` of `model`'s adapter and `opt`'s moments.
pub fn save(
    run: &Path,
    model: &Model,
    opt: &AdamW,
    state: &TrainerState,
    base_model: &str,
) -> Result<()> {
    publish(run, state, |actor| {
        model.save_adapter(&actor.join("lora_adapter"), Some(base_model))?;
        save_moments(actor, model, opt)
    })
}

/// Checkpoint `state.step` of a run trained by another trainer (the TRL engine): the adapter
/// files of `adapter` and the trainer state, without optimizer moments (that trainer keeps
/// its own).
pub fn save_adapter_files(run: &Path, adapter: &Path, state: &TrainerState) -> Result<()> {
    publish(run, state, |actor| {
        Ok(next_files::atomic::copy_files(
            adapter,
            &actor.join("lora_adapter"),
        )?)
    })
}

/// Builds `global_step_N/` under a temporary name (`fill` writes `actor/`'s contents), adds the
/// trainer state, publishes it whole and points `latest_checkpointed_iteration.txt` at it.
fn publish(run: &Path, state: &TrainerState, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let staging = next_files::atomic::Staging::new(&step_dir(run, state.step))?;
    let actor = staging.path().join("actor");
    fill(&actor)?;
    next_files::json::write(&actor.join("trainer_state.json"), state)?;
    staging.publish(next_files::atomic::Existing::Replace)?;
    next_files::atomic::write(&run.join(LATEST), format!("{}\n", state.step).as_bytes())?;
    Ok(())
}

/// `optimizer.safetensors`: AdamW's moments by parameter name, and its step count.
fn save_moments(actor: &Path, model: &Model, opt: &AdamW) -> Result<()> {
    let names: Vec<String> = model
        .lora_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(2 * names.len() + 1);
    for ((n, m), v) in names.iter().zip(&opt.exp_avg).zip(&opt.exp_avg_sq) {
        tensors.push((format!("{n}.exp_avg"), m.shallow_clone()));
        tensors.push((format!("{n}.exp_avg_sq"), v.shallow_clone()));
    }
    tensors.push(("step".into(), Tensor::from_slice(&[opt.step])));
    next_model::io::write_safetensors(&actor.join("optimizer.safetensors"), &tensors)?;
    Ok(())
}

/// The step of the last complete checkpoint, if any.
pub fn latest(run: &Path) -> Result<Option<usize>> {
    let path = run.join(LATEST);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let step: usize = text.trim().parse().map_err(|_| {
        Error::Checkpoint(format!("{}: not a step number: {text:?}", path.display()))
    })?;
    if !state_file(run, step).exists() {
        return Err(Error::Checkpoint(format!(
            "{} names step {step}, but {} is incomplete",
            path.display(),
            step_dir(run, step).display()
        )));
    }
    Ok(Some(step))
}

/// Removes leftovers of checkpoints that were being written when a run was killed.
pub fn clean_partial(run: &Path) -> Result<()> {
    Ok(next_files::atomic::clean(run)?)
}

/// Restores the optimizer moments and the trainer state of checkpoint `step` (the adapter is
/// loaded with `Model::load_adapter(adapter_dir(run, step))`).
pub fn load_state(run: &Path, step: usize, model: &Model, opt: &mut AdamW) -> Result<TrainerState> {
    let state: TrainerState = next_files::json::read(&state_file(run, step))?;
    read_moments(&optimizer_file(run, step), model, opt, false)?;
    Ok(state)
}

/// Reads the AdamW moments and step count in `path` into `opt`, one pair per LoRA factor of
/// `model`. With `pad`, a saved moment may be smaller than its factor (a jump appended columns
/// of B and rows of A): it fills the leading block and the rest stays zero.
fn read_moments(path: &Path, model: &Model, opt: &mut AdamW, pad: bool) -> Result<()> {
    let mut saved = next_model::io::read_safetensors(path)?;
    let bad = |m: String| Error::Checkpoint(format!("{}: {m}", path.display()));
    for (i, (name, p)) in model.lora_parameters().into_iter().enumerate() {
        for (suffix, slot) in [
            ("exp_avg", &mut opt.exp_avg[i]),
            ("exp_avg_sq", &mut opt.exp_avg_sq[i]),
        ] {
            let key = format!("{name}.{suffix}");
            let t = saved
                .remove(&key)
                .ok_or_else(|| bad(format!("tensor `{key}` is missing")))?
                .tensor
                .to_device(p.device());
            let (have, want) = (t.size(), p.size());
            if have == want {
                *slot = t;
                continue;
            }
            if !pad {
                return Err(bad(format!(
                    "tensor `{key}` has shape {have:?}, expected {want:?}"
                )));
            }
            if have.len() != want.len() || have.iter().zip(&want).any(|(h, w)| h > w) {
                return Err(bad(format!(
                    "tensor `{key}` has shape {have:?}, which does not fit the new factor {want:?}"
                )));
            }
            let mut view = slot.shallow_clone();
            for (d, &n) in have.iter().enumerate() {
                view = view.narrow(d as i64, 0, n);
            }
            tch::no_grad(|| view.copy_(&t));
        }
    }
    opt.step = saved
        .remove("step")
        .ok_or_else(|| bad("tensor `step` is missing".into()))?
        .tensor
        .int64_value(&[0]);
    Ok(())
}

/// The AdamW moments a run started from an adapter begins with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moments {
    /// Zero moments and a restarted bias correction: the first update has the size of a first
    /// update.
    Fresh,
    /// The moments (and step count) saved with the source checkpoint, this
    /// `optimizer.safetensors`; factors the adapter gained since (a jump appends columns of B
    /// and rows of A) start at zero.
    Carry(PathBuf),
}

/// Starts `run` at the checkpoint step `state.step` of another run, with `adapter` (for
/// instance that checkpoint's adapter plus a predicted jump, of rank r + k) and the AdamW
/// `moments` asked for: `train` then resumes from it. The learning-rate schedule continues
/// from the step either way.
pub fn start_from(
    run: &Path,
    base_dir: &Path,
    opts: next_model::LoadOptions,
    adapter: &Path,
    state: &TrainerState,
    moments: &Moments,
) -> Result<()> {
    std::fs::create_dir_all(run).map_err(io(run))?;
    let mut model = Model::load(base_dir, opts)?;
    model.load_adapter(adapter)?;
    let params: Vec<Tensor> = model
        .lora_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut opt = AdamW::new(&params, &crate::config::OptimSection::default());
    if let Moments::Carry(path) = moments {
        read_moments(path, &model, &mut opt, true)?;
    }
    save(run, &model, &opt, state, &base_dir.display().to_string())
}

/// The `optimizer.safetensors` of checkpoint `step` of `run`.
pub fn optimizer_file(run: &Path, step: usize) -> PathBuf {
    step_dir(run, step).join("actor/optimizer.safetensors")
}

/// Whether checkpoint `step` of `run` was published (its trainer state is written last).
pub fn state_exists(run: &Path, step: usize) -> bool {
    state_file(run, step).is_file()
}

/// The trainer state saved with checkpoint `step` of `run`.
pub fn state(run: &Path, step: usize) -> Result<TrainerState> {
    Ok(next_files::json::read(&state_file(run, step))?)
}
