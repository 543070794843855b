//! `next-verifiers`: the reward functions of RLVR behind one trait — math answers, countdown,
//! exact match, model-written code run in a sandbox, and a user's own Python reward function —
//! and a registry that picks one per dataset row by its `data_source`.
//!
//! Architecture invariant: this crate never depends on tch or on the model; it sees strings and
//! JSON ground truths only, so verification can run on any thread or machine. It never prints.
//! A response is never an error: whatever the model wrote (or a reward function did with it)
//! becomes a [`Verdict`]; [`Error`] is for configuration only.
//!
//! Entry points: [`Verifier`] (implement it in your own crate to add a task), [`Registry`]
//! (verifiers by name and `data_source`), [`Pool`] (concurrent verification, order kept),
//! [`rows::score`] (what `next verify` does to a JSONL file) and [`python::PythonReward`].
//!
//! ```
//! use std::sync::Arc;
//! use next_verifiers::{Registry, Verdict, Verifier};
//! use serde_json::{json, Value};
//!
//! /// A made-up task: the response must be the ground truth reversed.
//! #[derive(Debug)]
//! struct Reversed;
//!
//! impl Verifier for Reversed {
//!     fn name(&self) -> &str {
//!         "reversed"
//!     }
//!     fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
//!         let want: String = next_verifiers::ground_truth_text(ground_truth).chars().rev().collect();
//!         if response.trim() == want {
//!             Verdict::correct(format!("answer {want:?}"))
//!         } else {
//!             Verdict::wrong(0.0, format!("expected {want:?}"))
//!         }
//!     }
//! }
//!
//! let mut registry = Registry::default();
//! registry.register(Arc::new(Reversed));
//! registry.map_source("acme/reverse-v1", "reversed")?;
//! let v = registry.for_source("acme/reverse-v1")?;
//! assert!(v.verify("cba", &json!("abc")).correct);
//! // Built-in rules still pick ours for other rows.
//! assert_eq!(registry.for_source("openai/gsm8k")?.name(), "math");
//! # Ok::<(), next_verifiers::Error>(())
//! ```

pub mod code;
pub mod countdown;
pub mod exact;
pub mod math;
mod pool;
pub mod python;
mod registry;
pub mod rows;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pool::{Context, Job, Pool};
pub use registry::{Registry, Target};

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
    /// Numbers a reward function reported beside its score (a verl `compute_score` dict's other
    /// keys); the trainer logs their means as metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

impl Verdict {
    pub fn correct(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 1.0,
            correct: true,
            kind: VerdictKind::Correct,
            detail: detail.into(),
            extra: BTreeMap::new(),
        }
    }

    pub fn wrong(reward: f64, detail: impl Into<String>) -> Self {
        Verdict {
            reward,
            correct: false,
            kind: VerdictKind::Wrong,
            detail: detail.into(),
            extra: BTreeMap::new(),
        }
    }

    pub fn no_answer(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            kind: VerdictKind::NoAnswer,
            detail: detail.into(),
            extra: BTreeMap::new(),
        }
    }

    pub fn timeout(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            kind: VerdictKind::Timeout,
            detail: detail.into(),
            extra: BTreeMap::new(),
        }
    }

    pub fn error(detail: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            kind: VerdictKind::Error,
            detail: detail.into(),
            extra: BTreeMap::new(),
        }
    }
}

/// A reward function: judges one response against its ground truth.
///
/// Implementations are cheap to share across threads and must return within their own time
/// bound whatever the input; they never panic on model output.
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// The registry name (`math`, `countdown`, `exact`, `code`, or your own).
    fn name(&self) -> &str;
    /// Judges `response` against `ground_truth` (a string, or JSON the verifier documents).
    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict;
    /// Judges a batch of responses with the rows they answer (prompt, `data_source`,
    /// `extra_info`), one verdict per item in order. The default judges each alone with
    /// [`Verifier::verify`]; a verifier with a per-call cost (a Python worker round trip)
    /// overrides it.
    fn verify_batch(&self, items: &[Item<'_>]) -> Vec<Verdict> {
        items
            .iter()
            .map(|i| self.verify(i.response, i.ground_truth))
            .collect()
    }
}

/// One response to judge and the row it answers, as [`Verifier::verify_batch`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub response: &'a str,
    pub ground_truth: &'a Value,
    pub context: &'a Context,
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
