//! The countdown (TinyZero rule) and exact-match verifiers, case by case.

use next_verifiers::countdown::Countdown;
use next_verifiers::exact::Exact;
use next_verifiers::{VerdictKind, Verifier};
use serde_json::json;

fn check(
    v: &dyn Verifier,
    response: &str,
    truth: serde_json::Value,
    reward: f64,
    kind: VerdictKind,
) {
    let got = v.verify(response, &truth);
    assert_eq!(
        (got.reward, got.kind),
        (reward, kind),
        "{} on {response:?} vs {truth}: {}",
        v.name(),
        got.detail
    );
}

#[test]
fn countdown_rule() {
    let t = json!({"target": 24, "numbers": [2, 3, 4, 1]});
    let cases: &[(&str, f64, VerdictKind)] = &[
        (
            "<answer>(2 + 4) * (3 + 1)</answer>",
            1.0,
            VerdictKind::Correct,
        ),
        (
            "think... <answer>2*3*4*1</answer>",
            1.0,
            VerdictKind::Correct,
        ),
        (
            "<answer>1 * 2 * 3 * 4 = 24</answer>",
            1.0,
            VerdictKind::Correct,
        ),
        (
            "<answer>wrong</answer> then <answer>4 * 3 * 2 / 1</answer>",
            1.0,
            VerdictKind::Correct,
        ),
        ("<answer>2 + 3 + 4 + 1</answer>", 0.1, VerdictKind::Wrong),
        ("<answer>4 * 3 * 2</answer>", 0.1, VerdictKind::Wrong),
        (
            "<answer>4 * 3 * 2 * 1 * 1</answer>",
            0.1,
            VerdictKind::Wrong,
        ),
        ("<answer>24</answer>", 0.1, VerdictKind::Wrong),
        ("<answer>import os</answer>", 0.1, VerdictKind::Wrong),
        (
            "<answer>(2 + 3 + 1) / (4 - 4)</answer>",
            0.1,
            VerdictKind::Wrong,
        ),
        ("the answer is 2*3*4*1", 0.0, VerdictKind::NoAnswer),
        ("<answer>2*3*4*1", 0.0, VerdictKind::NoAnswer),
    ];
    for (r, reward, kind) in cases {
        check(&Countdown, r, t.clone(), *reward, *kind);
    }
    check(
        &Countdown,
        "<answer>8/3*9</answer>",
        json!({"target": 24, "nums": [8, 3, 9]}),
        1.0,
        VerdictKind::Correct,
    );
    check(
        &Countdown,
        "<answer>1</answer>",
        json!("24"),
        0.0,
        VerdictKind::Error,
    );
}

#[test]
fn exact_match() {
    let cases: &[(&str, &str, f64, VerdictKind)] = &[
        ("0579", "0579", 1.0, VerdictKind::Correct),
        ("  0579 \n", "0579", 1.0, VerdictKind::Correct),
        ("work...\n#### 0579", "0579", 1.0, VerdictKind::Correct),
        ("Answer: Paris.", "paris", 1.0, VerdictKind::Correct),
        ("579", "0579", 0.0, VerdictKind::Wrong),
        ("", "0579", 0.0, VerdictKind::NoAnswer),
    ];
    for (r, gold, reward, kind) in cases {
        check(&Exact, r, json!(gold), *reward, *kind);
    }
}

#[test]
fn registry_picks_by_data_source() {
    let mut reg = next_verifiers::Registry::default();
    for (source, name) in [
        ("openai/gsm8k", "math"),
        ("countdown", "countdown"),
        ("openai_humaneval", "code"),
        ("arith3", "exact"),
        ("math", "math"),
    ] {
        assert_eq!(reg.for_source(source).unwrap().name(), name, "{source}");
    }
    assert!(reg
        .for_source("mystery")
        .unwrap_err()
        .to_string()
        .contains("mystery"));
    reg.map_source("mystery", "exact").unwrap();
    assert_eq!(reg.for_source("mystery").unwrap().name(), "exact");
    assert!(reg
        .map_source("x", "nope")
        .unwrap_err()
        .to_string()
        .contains("nope"));
}
