//! `next verify` as users call it: scores JSONL in order, writes atomically, names bad rows.

use std::process::Command;

use crate::next;

const ROWS: &str = r#"{"id": 1, "response": "so \\boxed{\\frac{1}{2}}", "ground_truth": "0.5", "data_source": "openai/gsm8k"}
{"id": 2, "response": "<answer>3*8</answer>", "ground_truth": {"target": 24, "numbers": [3, 8]}, "data_source": "countdown"}

{"id": 3, "response": "<answer>3+8</answer>", "ground_truth": {"target": 24, "numbers": [3, 8]}, "data_source": "countdown"}
{"id": 4, "response": "```python\ndef f():\n    return 3\n```", "ground_truth": {"assert": "assert f() == 4"}, "data_source": "humaneval"}
{"id": 5, "response": "no idea", "ground_truth": "7", "data_source": "math"}
"#;

#[test]
fn reads_rows_from_a_pipe() {
    use std::io::Write;
    // A pipe can be read once: every row must be scored, not consumed by a line count.
    let mut child = Command::new(env!("CARGO_BIN_EXE_next"))
        .args(["verify", "--input", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ROWS.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("verified 5 rows"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
}

#[test]
fn serve_answers_each_line_while_the_caller_waits() {
    use std::io::{BufRead, BufReader, Write};
    // As a trainer's reward function uses it: one line in, one line out, the pipe kept open.
    let mut child = Command::new(env!("CARGO_BIN_EXE_next"))
        .args(["verify", "--serve"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |line: &str| -> serde_json::Value {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    let rows: Vec<&str> = ROWS.lines().filter(|l| !l.trim().is_empty()).collect();
    // One row: the row back with its verdict.
    let one = ask(rows[0]);
    assert_eq!(
        (one["id"].clone(), one["correct"].clone()),
        (1.into(), true.into())
    );
    // A batch: an array back, in order.
    let batch = ask(&format!("[{}]", rows[1..].join(",")));
    let got: Vec<(i64, bool, &str)> = batch
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["correct"].as_bool().unwrap(),
                r["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, true, "correct"),
            (3, false, "wrong"),
            (4, false, "wrong"),
            (5, false, "no_answer")
        ]
    );
    // A bad line is answered with an error naming what is wrong, and the next line is served.
    let bad = ask(r#"{"response": "1"}"#);
    assert!(
        bad["error"].as_str().unwrap().contains("ground_truth"),
        "{bad}"
    );
    let bad_batch = ask(&format!("[{}, {{\"response\": 3}}]", rows[0]));
    assert!(
        bad_batch["error"]
            .as_str()
            .unwrap()
            .contains("row 1 of the batch"),
        "{bad_batch}"
    );
    assert_eq!(ask(rows[0])["correct"], true);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn scores_rows_in_order_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, ROWS).unwrap();
    let out = next(&[
        "verify",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("verified 5 rows") && err.contains("correct 2") && err.contains("no_answer 1"),
        "{err}"
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(i64, f64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["reward"].as_f64().unwrap(),
                r["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 1.0, "correct"),
            (2, 1.0, "correct"),
            (3, 0.1, "wrong"),
            (4, 0.0, "wrong"),
            (5, 0.0, "no_answer")
        ]
    );
}

#[test]
fn bad_input_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let output = dir.path().join("out.jsonl");
    for (content, args, expected) in [
        (
            "{\"response\": \"1\", \"ground_truth\": \"1\"}\n{\"response\": 2}\n",
            vec!["--verifier", "math"],
            "bad.jsonl:2",
        ),
        (
            "{\"response\": \"1\", \"ground_truth\": \"1\"}\nnot json\n",
            vec!["--verifier", "math"],
            "bad.jsonl:2",
        ),
        (
            "{\"response\": \"1\", \"ground_truth\": \"1\"}\n",
            vec!["--verifier", "poetry"],
            "poetry",
        ),
        (
            "{\"response\": \"1\", \"ground_truth\": \"1\"}\n",
            vec![],
            "data_source",
        ),
        (
            "{\"response\": \"1\", \"ground_truth\": \"1\", \"data_source\": \"weather\"}\n",
            vec![],
            "weather",
        ),
    ] {
        std::fs::write(&input, content).unwrap();
        let mut a = vec![
            "verify",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        a.extend(args);
        let out = next(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected) && !err.contains("panicked"),
            "{content:?}: {err}"
        );
        assert!(!output.exists(), "half-written output left behind");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "partial file left behind"
        );
    }
    let out = next(&["verify", "--input", "/nonexistent.jsonl"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/nonexistent.jsonl")
    );
}

/// The reward files the verifier crate's tests use.
fn reward_file(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../next-verifiers/tests/data/rewards")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn python_reward_functions_score_rows_and_name_failures() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        r#"{"response": "so \\boxed{7}", "ground_truth": "7", "data_source": "acme", "extra_info": {"weight": 2.0}}
{"response": "it is 8", "ground_truth": "7", "data_source": "acme", "extra_info": {"weight": 1.0}}
"#,
    )
    .unwrap();
    let run = |f: &str, extra: &[&str]| {
        let mut a = vec![
            "verify",
            "--input",
            input.to_str().unwrap(),
            "--reward-fn",
            f,
        ];
        a.extend(extra);
        next(&a)
    };
    // verl style (detected from the signature): a dict with extra keys.
    let out = run(
        &format!("{}:compute_score", reward_file("verl_math.py")),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["reward"], 1.0);
    assert_eq!(rows[0]["correct"], true);
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .contains("\"pred\":\"7\""),
        "{}",
        rows[0]
    );
    assert_eq!(
        (rows[1]["reward"].as_f64(), rows[1]["kind"].as_str()),
        (Some(0.0), Some("wrong"))
    );
    // TRL style, named explicitly, with an extra_info key as a column.
    let out = run(
        &format!("{}:weighted_reward", reward_file("trl_math.py")),
        &["--reward-fn-style", "trl"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rewards: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reward"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(rewards, vec![2.0, 0.0]);
    // A function that raises on a row: the run finishes, the row is an error named by line.
    let out = run(&format!("{}:returns_string", reward_file("bad.py")), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("error 2") && err.contains("in.jsonl:1: ") && err.contains("not a number"),
        "{err}"
    );
    // Unloadable functions stop at start-up, naming file and function.
    for (f, fragment) in [
        ("missing.py:f".to_string(), "missing.py: no such file"),
        (format!("{}:nope", reward_file("bad.py")), "has no `nope`"),
        (
            format!("{}:compute_score", reward_file("syntax_error.py")),
            "SyntaxError",
        ),
        ("no_colon".to_string(), "expected FILE:NAME"),
    ] {
        let out = run(&f, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(fragment) && !err.contains("panicked"),
            "{f}: {err}"
        );
    }
    let out = run("x.py:f", &["--reward-fn-style", "tensorflow"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected auto, verl or trl"));
}
