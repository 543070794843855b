//! Datasets: JSONL rows in verl's schema (`data_source`, `prompt` as text or chat messages,
//! `ground_truth`, `extra_info`), with errors that name the file and line.

use std::io::BufRead;
use std::path::Path;

use next_model::{ChatMessage, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

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

/// Reads a JSONL dataset. A malformed row is an error naming the file and line, or, with
/// `skip_bad`, skipped and counted (the count is returned).
pub fn load_jsonl(path: &Path, skip_bad: bool) -> Result<(Vec<Row>, usize)> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                // verl nests the answer as reward_model.ground_truth.
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
            });
        match parsed {
            Ok(r) => rows.push(r),
            Err(_) if skip_bad => skipped += 1,
            Err(msg) => return Err(Error::Data(format!("{}:{}: {msg}", path.display(), i + 1))),
        }
    }
    if rows.is_empty() {
        return Err(Error::Data(format!("{}: no rows", path.display())));
    }
    Ok((rows, skipped))
}
