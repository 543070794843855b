//! `next verify` as users call it: scores JSONL in order, writes atomically, names bad rows.

use std::process::Command;

use serde_json::Value;

use crate::{next, python};

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

fn close(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

/// What calling `FILE:NAME` directly in Python (the interpreter `next verify` uses) returns for
/// the JSONL rows of `input`: verl's `compute_score` once per row, a TRL function once for all,
/// with the columns `next verify` passes (an absent prompt is empty; extra_info's keys are
/// columns too).
fn direct(f: &str, style: &str, input: &std::path::Path) -> Vec<Value> {
    let script = r#"
import importlib.util, json, os, sys
f, style, input = sys.argv[1:4]
path, name = f.rsplit(":", 1)
sys.path.insert(0, os.path.dirname(path))
spec = importlib.util.spec_from_file_location("m", path)
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
fn = getattr(m, name)
rows = [json.loads(l) for l in open(input) if l.strip()]
if style == "verl":
    out = [fn(data_source=r["data_source"], solution_str=r["response"], ground_truth=r["ground_truth"],
              extra_info=r["extra_info"]) for r in rows]
else:
    columns = {k: [r["extra_info"][k] for r in rows] for k in rows[0]["extra_info"]}
    out = fn(prompts=[r.get("prompt", "") for r in rows], completions=[r["response"] for r in rows],
             ground_truth=[r["ground_truth"] for r in rows], data_source=[r["data_source"] for r in rows],
             extra_info=[r["extra_info"] for r in rows], **columns)
print(json.dumps(out))
"#;
    serde_json::from_str(&python(script, &[f, style, input.to_str().unwrap()])).unwrap()
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
    let scored = |out: std::process::Output| -> Vec<Value> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // verl style (detected from the signature): a dict with extra keys. The reference is the
    // same function called directly on the same rows.
    let f = format!("{}:compute_score", reward_file("verl_math.py"));
    let want = direct(&f, "verl", &input);
    let rows = scored(run(&f, &[]));
    assert_eq!(rows.len(), want.len());
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert!(
            close(&got["reward"], &want["score"]),
            "row {i}: {got} vs {want}"
        );
        assert_eq!(got["correct"], want["acc"], "row {i}: {got} vs {want}");
        let kind = if want["acc"] == true {
            "correct"
        } else {
            "wrong"
        };
        assert_eq!(got["kind"], kind, "row {i}: {got}");
        let pred = format!("\"pred\":{}", want["pred"]);
        assert!(
            got["detail"].as_str().unwrap().contains(&pred),
            "row {i}: {got}"
        );
    }
    // The rows tell right from wrong (one each), so agreeing is not trivial.
    assert_eq!(
        (want[0]["acc"].clone(), want[1]["acc"].clone()),
        (true.into(), false.into())
    );
    // TRL style, named explicitly, with an extra_info key as a column.
    let f = format!("{}:weighted_reward", reward_file("trl_math.py"));
    let want = direct(&f, "trl", &input);
    let rows = scored(run(&f, &["--reward-fn-style", "trl"]));
    assert_eq!(rows.len(), want.len());
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert!(close(&got["reward"], want), "row {i}: {got} vs {want}");
    }
    assert_ne!(want[0], want[1]);
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

#[test]
fn the_verl_engines_reward_shim_returns_a_reward_functions_numeric_extras() {
    // The verl engine's `reward.py` (what verl calls) with its `next verify --serve` client and
    // settings, as the engine writes them, scoring with a Python reward function: the verl
    // reward file's compute_score, except that it raises on "boom".
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../next-scheduler/src");
    for (from, to) in [
        ("verl/reward.py", "reward.py"),
        ("next_verify.py", "next_verify.py"),
    ] {
        std::fs::copy(src.join(from), dir.path().join(to)).unwrap();
    }
    let file = dir.path().join("fn.py");
    std::fs::write(
        &file,
        format!(
            "import sys\nsys.path.insert(0, {d:?})\nfrom verl_math import compute_score as inner\n\
             def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    \
             if solution_str == 'boom':\n        raise ValueError('boom')\n    \
             return inner(data_source, solution_str, ground_truth, extra_info)\n",
            d = std::path::Path::new(&reward_file("verl_math.py"))
                .parent()
                .unwrap()
                .display()
                .to_string()
        ),
    )
    .unwrap();
    let settings = serde_json::json!({
        "next": env!("CARGO_BIN_EXE_next"),
        "verify_args": ["--reward-fn", format!("{}:compute_score", file.display()),
                        "--workers", "1", "--timeout", "10"],
        "log": dir.path().join("verify.log"),
    });
    std::fs::write(dir.path().join("reward.json"), settings.to_string()).unwrap();
    let responses = [
        "so \\boxed{7}",
        "boom",
        "it is 8, after a long and winding explanation",
    ];
    // verl passes the ground truth as the engine wrote it: JSON text.
    let script = r#"
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("reward", sys.argv[1])
shim = importlib.util.module_from_spec(spec); spec.loader.exec_module(shim)
sys.path.insert(0, sys.argv[2])
from verl_math import compute_score
responses = json.loads(sys.argv[3])
print(json.dumps({
    "shim": [shim.compute_score("acme", r, json.dumps("7"), {"weight": 1.0}) for r in responses],
    "direct": [compute_score("acme", r, "7", {"weight": 1.0}) for r in responses],
}))
"#;
    let rewards = reward_file("verl_math.py");
    let out = python(
        script,
        &[
            dir.path().join("reward.py").to_str().unwrap(),
            std::path::Path::new(&rewards)
                .parent()
                .unwrap()
                .to_str()
                .unwrap(),
            &serde_json::to_string(&responses).unwrap(),
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let (shim, direct) = (
        v["shim"].as_array().unwrap(),
        v["direct"].as_array().unwrap(),
    );
    for i in [0, 2] {
        let (s, d) = (&shim[i], &direct[i]);
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        // `pred` is a string: not a number verl could log.
        assert_eq!(
            keys,
            ["acc", "correct", "length_penalty", "score"],
            "row {i}: {s}"
        );
        assert!(close(&s["score"], &d["score"]), "row {i}: {s} vs {d}");
        assert!(
            close(&s["length_penalty"], &d["length_penalty"]),
            "row {i}: {s} vs {d}"
        );
        let acc = if d["acc"] == true { 1.0 } else { 0.0 };
        assert_eq!(
            (s["acc"].as_f64(), s["correct"].as_f64()),
            (Some(acc), Some(acc)),
            "row {i}"
        );
    }
    assert_ne!(shim[0]["acc"], shim[2]["acc"]);
    assert!(direct[2]["length_penalty"].as_f64().unwrap() > 0.0);
    // The row that raised has the same keys (verl needs one value per row), all 0.
    assert_eq!(
        shim[1],
        serde_json::json!({"acc": 0.0, "correct": 0.0, "length_penalty": 0.0, "score": 0.0})
    );
}
