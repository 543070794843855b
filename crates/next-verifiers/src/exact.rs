//! `exact`: normalised exact match of the final answer (the procedurally generated tasks).

use serde_json::Value;

use crate::{ground_truth_text, Verdict, Verifier};

/// Exact match after trimming, whitespace folding, a trailing period and case.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exact;

/// The final answer of a response: after the last `####` or `Answer:` marker, else the whole
/// text; then normalised.
pub fn final_answer(response: &str) -> String {
    let mut s = response;
    for marker in ["####", "Answer:", "answer:"] {
        if let Some(i) = s.rfind(marker) {
            s = &s[i + marker.len()..];
        }
    }
    normalize(s)
}

pub fn normalize(s: &str) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    folded.trim_end_matches('.').trim().to_lowercase()
}

impl Verifier for Exact {
    fn name(&self) -> &str {
        "exact"
    }

    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
        let got = final_answer(response);
        let want = normalize(&ground_truth_text(ground_truth));
        if got.is_empty() {
            Verdict::no_answer("empty response")
        } else if got == want {
            Verdict::correct(format!("answer {got:?}"))
        } else {
            Verdict::wrong(0.0, format!("answer {got:?}, expected {want:?}"))
        }
    }
}
