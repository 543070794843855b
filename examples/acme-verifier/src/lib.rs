//! An example of a verifier that lives in a team's own crate: ACME's made-up "reverse" task
//! (the answer is the prompt's word spelled backwards), registered by name and `data_source`
//! next to the built-in verifiers, without a change to `next-verifiers`.
//!
//! Use it from a binary of your own (`src/main.rs` scores JSONL rows like `next verify`), or
//! hand [`registry`] to the trainer: `next_trainer::train::train_with(&cfg, run, base,
//! &cfg.reward.apply(acme_verifier::registry()?)?, ...)`, or to the scheduler's engine with
//! `InProcess::with_verifiers`.
//!
//! ```
//! let registry = acme_verifier::registry()?;
//! let v = registry.for_source("acme/reverse")?;
//! assert_eq!(v.name(), "acme-reverse");
//! assert!(v.verify("Answer: olleh", &serde_json::json!("hello")).correct);
//! # Ok::<(), next_verifiers::Error>(())
//! ```

use std::sync::Arc;

use next_verifiers::{ground_truth_text, Registry, Verdict, Verifier};
use serde_json::Value;

/// The `data_source` of ACME's rows.
pub const DATA_SOURCE: &str = "acme/reverse";

/// Full reward for the exact reversal after the last `Answer:`; a tenth for the right letters in
/// the wrong order (a shaped reward, which is why ACME needs its own verifier).
#[derive(Debug, Default)]
pub struct Reverse;

impl Verifier for Reverse {
    fn name(&self) -> &str {
        "acme-reverse"
    }

    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
        let Some((_, answer)) = response.rsplit_once("Answer:") else {
            return Verdict::no_answer("no `Answer:` line");
        };
        let answer = answer.trim();
        let word = ground_truth_text(ground_truth);
        let want: String = word.chars().rev().collect();
        if answer == want {
            return Verdict::correct(format!("answer {answer:?}"));
        }
        let mut got: Vec<char> = answer.chars().collect();
        let mut letters: Vec<char> = word.chars().collect();
        got.sort_unstable();
        letters.sort_unstable();
        let reward = if got == letters { 0.1 } else { 0.0 };
        Verdict::wrong(reward, format!("answer {answer:?}, expected {want:?}"))
    }
}

/// Ours plus ACME's verifier, which judges every `acme/reverse` row.
pub fn registry() -> next_verifiers::Result<Registry> {
    let mut r = Registry::default();
    r.register(Arc::new(Reverse));
    r.map_source(DATA_SOURCE, "acme-reverse")?;
    Ok(r)
}
