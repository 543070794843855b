//! ACME's verifier, registered from this crate, judges the `acme/reverse` rows of a mixed file
//! while ours judge the rest; the binary does the same end to end.

use serde_json::{json, Value};

const ROWS: &str = r#"{"response": "Answer: olleh", "ground_truth": "hello", "data_source": "acme/reverse"}
{"response": "Answer: hello", "ground_truth": "hello", "data_source": "acme/reverse"}
{"response": "no idea", "ground_truth": "hello", "data_source": "acme/reverse"}
{"response": "The answer is \\boxed{4}", "ground_truth": "4", "data_source": "openai/gsm8k"}
"#;

fn check(out: &str) {
    let got: Vec<(f64, String)> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["reward"].as_f64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(f64, String)> = [
        (1.0, "correct"),
        (0.1, "wrong"),
        (0.0, "no_answer"),
        (1.0, "correct"),
    ]
    .iter()
    .map(|(r, k)| (*r, k.to_string()))
    .collect();
    assert_eq!(got, want, "{out}");
}

#[test]
fn library_call() {
    let registry = acme_verifier::registry().unwrap();
    let mut out = Vec::new();
    next_verifiers::rows::score(
        ROWS.as_bytes(),
        std::path::Path::new("rows.jsonl"),
        &mut out,
        &registry,
        &next_verifiers::rows::Choice::BySource,
        &next_verifiers::Pool::new(2).unwrap(),
        &mut |_| {},
    )
    .unwrap();
    check(&String::from_utf8(out).unwrap());
    // A source nobody maps is still an error naming it, not a silent zero.
    let v = registry.for_source("acme/unknown-task").unwrap_err();
    assert!(v.to_string().contains("acme/unknown-task"), "{v}");
    assert_eq!(
        json!(registry.names().contains(&"acme-reverse")),
        json!(true)
    );
}

#[test]
fn binary_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    let output = dir.path().join("scored.jsonl");
    std::fs::write(&input, ROWS).unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_acme-verify"))
        .arg(&input)
        .arg(&output)
        .status()
        .unwrap();
    assert!(st.success());
    check(&std::fs::read_to_string(&output).unwrap());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_acme-verify"))
        .arg(dir.path().join("missing.jsonl"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing.jsonl"));
}
