//! `metrics.jsonl`: one `{"step": N, "data": {...}}` line per step with verl's metric names,
//! appended and synced as the run goes, truncated back to a checkpoint on resume; and the rule
//! that reads a validation accuracy out of a row.

use std::io::{BufRead, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// The file, in a run directory.
pub const METRICS: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub step: usize,
    pub data: Map<String, Value>,
}

impl Row {
    /// The greedy validation accuracy of this row, if it validated (see [`greedy_val_mean`]).
    pub fn val(&self) -> Option<f64> {
        greedy_val_mean(&self.data)
    }

    /// `timing_s/step`, if this row is a training step.
    pub fn seconds(&self) -> Option<f64> {
        self.data.get("timing_s/step").and_then(Value::as_f64)
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.data.get(key).and_then(Value::as_f64)
    }
}

/// The greedy validation accuracy in a metrics row: the mean over data sources of its
/// `val-core/<source>/reward/mean@1` values (`None` when it has none). Training, the
/// experiment and the reports all read validation accuracy through this one rule.
pub fn greedy_val_mean(m: &Map<String, Value>) -> Option<f64> {
    let v: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("val-core/") && k.ends_with("/reward/mean@1"))
        .filter_map(|(_, v)| v.as_f64())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Reads a run's `metrics.jsonl`; a malformed line is an error naming the file and line.
pub fn read(run: &Path) -> Result<Vec<Row>> {
    read_file(&run.join(METRICS))
}

/// Reads rows `{"step", "data"}` from `path` (a run's `metrics.jsonl`, or another trainer's
/// JSONL log in the same format).
pub fn read_file(path: &Path) -> Result<Vec<Row>> {
    let path = path.to_path_buf();
    let file = std::fs::File::open(&path).map_err(|e| next_files::Error::io(&path, e))?;
    let mut rows = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| next_files::Error::io(&path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::Data(format!("{} line {}: {why}", path.display(), i + 1));
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let step = v["step"]
            .as_u64()
            .ok_or_else(|| bad("no integer \"step\"".into()))? as usize;
        let data = v["data"]
            .as_object()
            .ok_or_else(|| bad("no \"data\" object".into()))?
            .clone();
        rows.push(Row { step, data });
    }
    Ok(rows)
}

/// Removes rows after `step` (they belong to steps a resumed run will redo).
pub(crate) fn truncate(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    next_files::atomic::write(path, out.as_bytes())?;
    Ok(())
}

/// Appends one row and syncs it, so a killed run loses at most the step in progress.
pub(crate) fn append(path: &Path, step: usize, data: &Map<String, Value>) -> Result<()> {
    let line = json!({"step": step, "data": data}).to_string();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| next_files::Error::io(path, e))?;
    writeln!(f, "{line}")
        .and_then(|_| f.sync_data())
        .map_err(|e| next_files::Error::io(path, e).into())
}

/// The key of a validation mean: `val-core/<source>/reward/mean@<n>` (verl's).
pub fn val_key(source: &str, n: usize) -> String {
    format!("val-core/{source}/reward/mean@{n}")
}

/// Adds `values` to the rows of their steps (a row is made where a step has none) and rewrites
/// the file in step order, atomically: how an engine whose trainer cannot validate in-process
/// (TRL) records the validations scored here afterwards.
pub fn merge(run: &Path, values: Vec<(usize, Map<String, Value>)>) -> Result<()> {
    let path = run.join(METRICS);
    let mut rows = if path.exists() { read(run)? } else { vec![] };
    for (step, data) in values {
        match rows.iter_mut().find(|r| r.step == step) {
            Some(r) => r.data.extend(data),
            None => rows.push(Row { step, data }),
        }
    }
    rows.sort_by_key(|r| r.step);
    let mut text = String::new();
    for r in &rows {
        text.push_str(&json!({"step": r.step, "data": r.data}).to_string());
        text.push('\n');
    }
    next_files::atomic::write(&path, text.as_bytes())?;
    Ok(())
}
