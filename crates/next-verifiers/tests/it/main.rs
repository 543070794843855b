//! The verifiers against their references (math-verify, HumanEval) and on adversarial input. One test binary per crate: each module is one area.

mod code;
mod countdown_exact;
mod math;
mod python;
