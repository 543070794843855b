//! verl's generation dumps (`trainer.rollout_data_dir`, `trainer.validation_data_dir`): every
//! response of a step's rollout or of a validation, one JSON line each in `<dir>/<step>.jsonl`,
//! so a run's real outputs can be read, re-scored by another verifier, or diffed across runs.

use std::path::{Path, PathBuf};

use next_rollout::{Prompted, Sample};
use serde_json::{json, Map, Value};

use crate::Result;

/// Where a dump setting points: nowhere when empty, a relative path under the run directory
/// (never the current directory), an absolute one as it is.
pub(super) fn dir(setting: &str, run: &Path) -> Option<PathBuf> {
    (!setting.is_empty()).then(|| run.join(setting))
}

/// One line per sample: verl's fields (`input`, `output`, `gts`, `score`, `step`, and the reward
/// function's extra keys), then the verdict's kind and detail, the data source and `mode`
/// (`rollout`, `greedy` or `sampled`). The file is written whole and atomically: a crash never
/// leaves half a step, and a resumed run rewrites the steps it repeats.
pub(super) fn write(
    dir: &Path,
    step: usize,
    prompts: &[Prompted],
    groups: &[(&str, &[Sample])],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| next_files::Error::io(dir, e))?;
    let mut text = String::new();
    for (mode, samples) in groups {
        for s in *samples {
            let p = &prompts[s.prompt];
            let v = &s.verdict;
            let mut line = Map::new();
            line.insert("input".into(), p.context.prompt.clone().into());
            line.insert("output".into(), s.text.clone().into());
            line.insert("gts".into(), p.ground_truth.clone());
            line.insert("score".into(), json!(v.reward));
            line.insert("step".into(), step.into());
            for (k, x) in &v.extra {
                line.insert(k.clone(), json!(x));
            }
            line.insert("correct".into(), v.correct.into());
            line.insert("kind".into(), json!(v.kind));
            line.insert("detail".into(), v.detail.clone().into());
            line.insert("data_source".into(), p.data_source().into());
            line.insert("mode".into(), (*mode).into());
            text.push_str(&Value::Object(line).to_string());
            text.push('\n');
        }
    }
    next_files::atomic::write(&dir.join(format!("{step}.jsonl")), text.as_bytes())?;
    Ok(())
}
