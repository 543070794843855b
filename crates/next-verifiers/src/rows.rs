//! Scoring a stream of JSONL rows `{"response", "ground_truth", ["data_source"], ...}`: each row
//! judged by a fixed verifier or by the one its `data_source` picks, in chunks through the
//! pool, and written back in order with `reward`, `correct`, `kind` and `detail` added.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::{
    ground_truth_text, Context, Error, Job, Pool, Registry, Result, VerdictKind, Verifier,
};

/// Rows verified per batch: bounds memory on long inputs while keeping the pool busy.
const CHUNK: usize = 4096;

/// Which verifier judges a row.
#[derive(Debug, Clone)]
pub enum Choice {
    /// This one for every row.
    Fixed(Arc<dyn Verifier>),
    /// The registry's verifier for the row's `data_source`.
    BySource,
}

/// Error verdicts a [`Summary`] keeps the line and detail of.
const ERRORS_KEPT: usize = 5;

/// What was scored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub rows: usize,
    pub by_kind: BTreeMap<VerdictKind, usize>,
    pub reward_sum: f64,
    /// The first few `error` verdicts: input line and detail.
    pub first_errors: Vec<(usize, String)>,
}

impl Summary {
    pub fn mean_reward(&self) -> f64 {
        self.reward_sum / self.rows.max(1) as f64
    }

    /// One line: rows, verdicts per kind and the mean reward (`next verify`'s last line).
    pub fn line(&self) -> String {
        let by_kind: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, c)| format!("{} {c}", k.as_str()))
            .collect();
        format!(
            "verified {} rows: {}; mean reward {:.4}",
            self.rows,
            by_kind.join(", "),
            self.mean_reward()
        )
    }
}

fn parse_row(line: &str, name: &Path, lineno: usize) -> Result<Map<String, Value>> {
    let at = || format!("{}:{lineno}", name.display());
    let v: Value = serde_json::from_str(line)
        .map_err(|e| Error::Config(format!("{}: not valid JSON: {e}", at())))?;
    let Value::Object(row) = v else {
        return Err(Error::Config(format!("{}: expected a JSON object", at())));
    };
    if !row.get("response").is_some_and(Value::is_string) {
        return Err(Error::Config(format!(
            "{}: missing string field `response`",
            at()
        )));
    }
    if !row.contains_key("ground_truth") {
        return Err(Error::Config(format!(
            "{}: missing field `ground_truth`",
            at()
        )));
    }
    Ok(row)
}

/// What a reward function sees of a row beside its response: `prompt` (a string as it is, chat
/// messages as JSON text), `data_source` and `extra_info`.
fn context(row: &Map<String, Value>) -> Context {
    Context {
        prompt: row.get("prompt").map(ground_truth_text).unwrap_or_default(),
        data_source: row
            .get("data_source")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        extra_info: row.get("extra_info").cloned().unwrap_or(Value::Null),
    }
}

/// The verification of `row` (line `lineno` of `name`) by the verifier `choice` picks.
fn job(
    row: &Map<String, Value>,
    choice: &Choice,
    registry: &Registry,
    name: &Path,
    lineno: usize,
) -> Result<Job> {
    let verifier = match choice {
        Choice::Fixed(v) => v.clone(),
        Choice::BySource => {
            let source = row
                .get("data_source")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}:{lineno}: no `data_source` to pick a verifier (or pass --verifier)",
                        name.display()
                    ))
                })?;
            registry
                .for_source(source)
                .map_err(|e| Error::Config(format!("{}:{lineno}: {e}", name.display())))?
        }
    };
    Ok(Job {
        verifier,
        response: row["response"].as_str().unwrap_or_default().to_string(),
        ground_truth: row["ground_truth"].clone(),
        context: Arc::new(context(row)),
    })
}

/// `row` with its verdict's `reward`, `correct`, `kind`, `detail` and, when there are any, `extra`.
fn annotate(row: &mut Map<String, Value>, v: crate::Verdict) {
    row.insert("reward".into(), v.reward.into());
    row.insert("correct".into(), v.correct.into());
    row.insert("kind".into(), v.kind.as_str().into());
    row.insert("detail".into(), v.detail.into());
    // A reward function's numbers beside its score, for whoever reads the rows (the verl
    // engine's reward shim hands them to verl as reward_extra_info).
    if !v.extra.is_empty() {
        row.insert("extra".into(), v.extra.into_iter().collect());
    }
}

/// Progress of [`score`], for a progress bar.
#[derive(Debug)]
pub enum Progress<'a> {
    /// One more row verified (in any order within a chunk).
    Verified,
    /// A chunk was written; the summary so far.
    Written(&'a Summary),
}

/// Scores every row of `input` (named `name` in errors, which give its line) and writes them to
/// `out` in order.
pub fn score(
    input: impl BufRead,
    name: &Path,
    out: &mut dyn Write,
    registry: &Registry,
    choice: &Choice,
    pool: &Pool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    let io = |lineno: usize| {
        move |source| Error::Io {
            context: format!("{}:{lineno}", name.display()),
            source,
        }
    };
    let mut summary = Summary::default();
    let mut lines = input.lines().enumerate();
    loop {
        let mut rows = Vec::new();
        let mut jobs = Vec::new();
        for (i, line) in lines.by_ref() {
            let line = line.map_err(io(i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let row = parse_row(&line, name, i + 1)?;
            jobs.push(job(&row, choice, registry, name, i + 1)?);
            rows.push((i + 1, row));
            if rows.len() == CHUNK {
                break;
            }
        }
        if rows.is_empty() {
            return Ok(summary);
        }
        let verdicts = pool.run(jobs, |_, _| on_progress(Progress::Verified));
        for ((lineno, mut row), v) in rows.into_iter().zip(verdicts) {
            *summary.by_kind.entry(v.kind).or_default() += 1;
            if v.kind == VerdictKind::Error && summary.first_errors.len() < ERRORS_KEPT {
                summary.first_errors.push((lineno, v.detail.clone()));
            }
            summary.reward_sum += v.reward;
            summary.rows += 1;
            annotate(&mut row, v);
            writeln!(out, "{}", Value::Object(row)).map_err(|source| Error::Io {
                context: "writing scored rows".into(),
                source,
            })?;
        }
        on_progress(Progress::Written(&summary));
    }
}

/// A long-lived scorer for trainers that call it once per batch (the TRL and verl engines'
/// reward functions): each input line is a row or a JSON array of rows, and gets one output
/// line (the row, or the array, with verdicts added), flushed at once. A line that cannot be
/// scored gets `{"error": "..."}` naming its line, and the next line is served; only a failure
/// to read or write ends it. Returns at the end of the input.
pub fn serve(
    input: impl BufRead,
    name: &Path,
    out: &mut dyn Write,
    registry: &Registry,
    choice: &Choice,
    pool: &Pool,
) -> Result<()> {
    let write = |out: &mut dyn Write, v: Value| {
        writeln!(out, "{v}")
            .and_then(|()| out.flush())
            .map_err(|source| Error::Io {
                context: "writing scored rows".into(),
                source,
            })
    };
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            context: format!("{}:{}", name.display(), i + 1),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serve_line(&line, name, i + 1, registry, choice, pool) {
            Ok(v) => write(out, v)?,
            Err(e) => write(out, serde_json::json!({ "error": e.to_string() }))?,
        }
    }
    Ok(())
}

/// One line of [`serve`]: a row or an array of rows, scored.
fn serve_line(
    line: &str,
    name: &Path,
    lineno: usize,
    registry: &Registry,
    choice: &Choice,
    pool: &Pool,
) -> Result<Value> {
    let batch = line.trim_start().starts_with('[');
    let texts: Vec<String> = if batch {
        let items: Vec<Value> = serde_json::from_str(line).map_err(|e| {
            Error::Config(format!("{}:{lineno}: not valid JSON: {e}", name.display()))
        })?;
        items.iter().map(Value::to_string).collect()
    } else {
        vec![line.to_string()]
    };
    let mut rows = Vec::with_capacity(texts.len());
    let mut jobs = Vec::with_capacity(texts.len());
    for (k, text) in texts.iter().enumerate() {
        let at = |e: Error| {
            if batch {
                Error::Config(format!("row {k} of the batch: {e}"))
            } else {
                e
            }
        };
        let row = parse_row(text, name, lineno).map_err(at)?;
        jobs.push(job(&row, choice, registry, name, lineno).map_err(at)?);
        rows.push(row);
    }
    let verdicts = pool.run(jobs, |_, _| {});
    let scored: Vec<Value> = rows
        .into_iter()
        .zip(verdicts)
        .map(|(mut row, v)| {
            annotate(&mut row, v);
            Value::Object(row)
        })
        .collect();
    Ok(if batch {
        Value::Array(scored)
    } else {
        scored.into_iter().next().expect("one row")
    })
}
