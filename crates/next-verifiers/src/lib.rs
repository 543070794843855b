//! `next-verifiers`: the reward functions of RLVR behind one trait — math answers, countdown,
//! exact match, and model-written code run in a sandbox — and a registry that picks one per
//! dataset row by its `data_source`.
//!
//! Architecture invariant: this crate never depends on tch or on the model; it sees strings and
//! JSON ground truths only, so verification can run on any thread or machine. It never prints.

pub mod code;
pub mod countdown;
pub mod exact;
pub mod math;
mod pool;
mod registry;
pub mod rows;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pool::{Job, Pool};
pub use registry::Registry;

/// What kind of outcome a verification had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Correct,
    Wrong,
    /// No answer could be extracted from the response.
    NoAnswer,
    /// The check ran out of time (code that hangs; a pathological expression).
    Timeout,
    /// The verifier could not judge (bad ground truth, sandbox failure): not the model's fault.
    Error,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Correct => "correct",
            VerdictKind::Wrong => "wrong",
            VerdictKind::NoAnswer => "no_answer",
            VerdictKind::Timeout => "timeout",
            VerdictKind::Error => "error",
        }
    }
}

/// The outcome of verifying one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub reward: f64,
    pub correct: bool,
    pub kind: VerdictKind,
    /// Human-readable explanation (extracted answer, failing test, ...).
    pub detail: String,
}

impl Verdict {
    pub fn correct(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 1.0,
            correct: true,
            kind: VerdictKind::Correct,
            detail: detail.into(),
        }
    }

    pub fn wrong(reward: f64, detail: impl Into<String>) -> Self {
        Verdict {
            reward,
            correct: false,
            kind: VerdictKind::Wrong,
            detail: detail.into(),
        }
    }

    pub fn no_answer(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            kind: VerdictKind::NoAnswer,
            detail: detail.into(),
        }
    }

    pub fn timeout(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            kind: VerdictKind::Timeout,
            detail: detail.into(),
        }
    }

    pub fn error(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            kind: VerdictKind::Error,
            detail: detail.into(),
        }
    }
}

/// A reward function: judges one response against its ground truth.
///
/// Implementations are cheap to share across threads and must return within their own time
/// bound whatever the input; they never panic on model output.
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// The registry name (`math`, `countdown`, `exact`, `code`).
    fn name(&self) -> &str;
    /// Judges `response` against `ground_truth` (a string, or JSON the verifier documents).
    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict;
}

/// Errors of this crate (configuration, not verdicts: a bad response is a verdict, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown verifier `{name}` (available: {available})")]
    UnknownVerifier { name: String, available: String },
    #[error("{0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The ground truth as text: strings as they are, numbers printed, other JSON compact.
pub fn ground_truth_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
