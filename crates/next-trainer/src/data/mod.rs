//! Datasets: JSONL rows in verl's schema (`data_source`, `prompt` as text or chat messages,
//! `ground_truth`, `extra_info`), with errors that name the file and line; the training and
//! validation splits a config asks for; prompts tokenized for the sampler. `gym.rs` makes rows
//! from reasoning-gym's generators.

use std::io::BufRead;
use std::path::Path;

use next_model::{ChatMessage, Tokenizer};
use next_rollout::Prompted;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::DataSection;
use crate::tasks::{self, Split};
use crate::{Error, Result};

pub mod gym;

/// A prompt: plain text, or chat messages rendered with the model's chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// One dataset row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub data_source: String,
    pub prompt: Prompt,
    #[serde(alias = "reward_model")]
    pub ground_truth: Value,
    #[serde(default)]
    pub extra_info: Value,
}

impl Row {
    /// The text fed to the model: chat prompts go through the chat template (with the
    /// generation prompt); text prompts are used as they are.
    pub fn render(&self, tok: &Tokenizer) -> next_model::Result<String> {
        match &self.prompt {
            Prompt::Text(t) => Ok(t.clone()),
            Prompt::Chat(m) => tok.apply_chat_template(m, true),
        }
    }
}

/// One row of a dataset from its JSON value; verl nests the answer as
/// `reward_model.ground_truth`. The error names the field at fault.
fn row_of(v: Value) -> std::result::Result<Row, String> {
    let v = match v {
        Value::Object(mut m) => {
            if !m.contains_key("ground_truth") {
                if let Some(gt) = m
                    .get("reward_model")
                    .and_then(|r| r.get("ground_truth"))
                    .cloned()
                {
                    m.insert("ground_truth".into(), gt);
                }
            }
            m.remove("reward_model");
            Value::Object(m)
        }
        other => other,
    };
    serde_path_to_error::deserialize::<_, Row>(v)
        .map_err(|e| format!("field `{}`: {}", e.path(), e.inner()))
}

/// Collects parsed rows: a malformed one is an error naming `path` and its place (appended
/// to the path: `:3` for a line, ` row 3` for a Parquet row), or, with `skip_bad`, skipped and
/// counted.
fn collect(
    path: &Path,
    parsed: impl Iterator<Item = (String, std::result::Result<Row, String>)>,
    skip_bad: bool,
) -> Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (place, r) in parsed {
        match r {
            Ok(r) => rows.push(r),
            Err(_) if skip_bad => skipped += 1,
            Err(msg) => return Err(Error::Data(format!("{}{place}: {msg}", path.display()))),
        }
    }
    if rows.is_empty() {
        return Err(Error::Data(format!("{}: no rows", path.display())));
    }
    Ok((rows, skipped))
}

/// Reads a dataset: JSONL, or Parquet when the name ends in `.parquet` (verl's and TRL's
/// datasets as they are, same schema). A malformed row is an error naming the file and its
/// line or row, or, with `skip_bad`, skipped and counted (the count is returned).
pub fn load_rows(path: &Path, skip_bad: bool) -> Result<(Vec<Row>, usize)> {
    if path.extension().is_some_and(|e| e == "parquet") {
        load_parquet(path, skip_bad)
    } else {
        load_jsonl(path, skip_bad)
    }
}

/// Reads a JSONL dataset (see [`load_rows`]).
pub fn load_jsonl(path: &Path, skip_bad: bool) -> Result<(Vec<Row>, usize)> {
    let file = std::fs::File::open(path).map_err(|e| next_files::Error::io(path, e))?;
    let mut lines = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| next_files::Error::io(path, e))?;
        if !line.trim().is_empty() {
            lines.push((i + 1, line));
        }
    }
    let parsed = lines.into_iter().map(|(n, line)| {
        let r = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(row_of);
        (format!(":{n}"), r)
    });
    collect(path, parsed, skip_bad)
}

/// Reads a Parquet dataset row by row (nested columns such as chat prompts and verl's
/// `reward_model` struct become JSON, then the same row rule as JSONL).
pub fn load_parquet(path: &Path, skip_bad: bool) -> Result<(Vec<Row>, usize)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(|e| next_files::Error::io(path, e))?;
    let bad = |e: parquet::errors::ParquetError| {
        Error::Data(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    };
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let parsed: Vec<(String, std::result::Result<Row, String>)> = reader
        .get_row_iter(None)
        .map_err(bad)?
        .enumerate()
        .map(|(i, r)| {
            let row = r
                .map_err(|e| e.to_string())
                .and_then(|r| row_of(r.to_json_value()));
            (format!(" row {}", i + 1), row)
        })
        .collect();
    collect(path, parsed.into_iter(), skip_bad)
}

/// The training and validation rows of a config (files, or the embedded task generated by
/// seed), with the count of malformed rows skipped.
pub fn load_splits(d: &DataSection) -> Result<(Vec<Row>, Vec<Row>, usize)> {
    let mut skipped = 0;
    let mut load = |file: &str, split: Split, size: usize| -> Result<Vec<Row>> {
        if file.is_empty() {
            return tasks::generate(d.task, split, size, d.seed);
        }
        let (rows, s) = load_rows(Path::new(file), d.skip_bad_rows)?;
        skipped += s;
        Ok(rows)
    };
    let train = load(&d.train, Split::Train, d.train_size)?;
    let mut val = load(&d.val, Split::Val, d.val_size)?;
    val.truncate(d.val_size.max(1));
    Ok((train, val, skipped))
}

/// The selection split predict-extend chooses λ on (see `DataSection::select`).
pub fn load_select(d: &DataSection) -> Result<Vec<Row>> {
    let mut rows = if !d.select.is_empty() {
        load_rows(Path::new(&d.select), d.skip_bad_rows)?.0
    } else if d.train.is_empty() && d.val.is_empty() {
        tasks::generate(d.task, Split::Test, d.select_size, d.seed)?
    } else {
        tracing::warn!(
            "no data.select: λ is chosen on the validation file, so the accuracy reported right after a jump is biased upwards"
        );
        load_splits(d)?.1
    };
    rows.truncate(d.select_size.max(1));
    Ok(rows)
}

/// Renders and tokenizes rows as the sampler's prompts; a prompt longer than `max_len` tokens
/// (or empty) is an error naming the `what` split and row.
pub fn tokenize(
    rows: &[Row],
    tok: &Tokenizer,
    max_len: usize,
    what: &str,
) -> Result<Vec<Prompted>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let text = r.render(tok)?;
            let ids = tok.encode(&text, false)?;
            if ids.is_empty() || ids.len() > max_len {
                return Err(Error::Data(format!(
                    "{what} row {}: prompt has {} tokens (allowed 1..={max_len})",
                    i + 1,
                    ids.len()
                )));
            }
            Ok(Prompted {
                ids,
                ground_truth: r.ground_truth.clone(),
                context: std::sync::Arc::new(next_verifiers::Context {
                    prompt: text,
                    data_source: r.data_source.clone(),
                    extra_info: r.extra_info.clone(),
                }),
            })
        })
        .collect()
}
