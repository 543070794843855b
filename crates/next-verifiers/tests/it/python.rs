//! Python reward functions: verl- and TRL-style files give the rewards that calling them
//! directly in Python gives; every way a reward function can misbehave ends as an `error`
//! verdict or a start-up error naming file and function, and the worker pool carries on.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use next_verifiers::python::{Options, PythonReward, RewardFn, Style};
use next_verifiers::{Context, Item, Job, Pool, Registry, Target, VerdictKind, Verifier};
use serde_json::{json, Value};

fn rewards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rewards")
}

fn options(style: Style, timeout_s: f64) -> Options {
    Options {
        python: next_testing::python(),
        style,
        workers: 2,
        timeout_s,
    }
}

fn start(
    file: &str,
    name: &str,
    style: Style,
    timeout_s: f64,
) -> next_verifiers::Result<PythonReward> {
    let f: RewardFn = format!("{}:{name}", rewards_dir().join(file).display())
        .parse()
        .unwrap();
    PythonReward::start(f, options(style, timeout_s))
}

/// A reward function `f` written as `code` into `file`, started in a pool.
fn start_written(file: &std::path::Path, code: &str) -> PythonReward {
    std::fs::write(file, code).unwrap();
    PythonReward::start(
        format!("{}:f", file.display()).parse().unwrap(),
        options(Style::Auto, 5.0),
    )
    .unwrap()
}

/// The rows of the conformance checks: (response, ground truth, prompt, extra_info).
fn rows() -> Vec<(String, Value, String, Value)> {
    let mut out = Vec::new();
    let responses = [
        "The answer is \\boxed{42}",
        "so 6*7 = 42",
        "I think it is 41",
        "",
        "no digits here at all, just a long rambling answer that goes on and on and on",
        "\\boxed{-3.5} after a lot of thought about the problem and its many sides",
    ];
    for (i, r) in responses.iter().enumerate() {
        for gt in ["42", "-3.5"] {
            out.push((
                r.to_string(),
                json!(gt),
                format!("Question {i}: what is it?"),
                json!({"index": i, "weight": 0.5 + i as f64}),
            ));
        }
    }
    out
}

/// What calling `file:name` directly in Python returns for `rows()` (verl: one call per row;
/// TRL: one batch call), as JSON.
fn direct(file: &str, name: &str, style: Style) -> Vec<Value> {
    let script = r#"
import importlib.util, json, sys
path, name, style = sys.argv[1:4]
sys.path.insert(0, __import__("os").path.dirname(path))
spec = importlib.util.spec_from_file_location("m", path)
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
fn = getattr(m, name)
rows = json.load(sys.stdin)
if style == "verl":
    out = [fn(data_source="acme", solution_str=r, ground_truth=g, extra_info=e) for r, g, p, e in rows]
else:
    out = fn(prompts=[p for r, g, p, e in rows], completions=[r for r, g, p, e in rows],
             ground_truth=[g for r, g, p, e in rows], data_source=["acme"] * len(rows),
             extra_info=[e for r, g, p, e in rows], index=[e["index"] for r, g, p, e in rows],
             weight=[e["weight"] for r, g, p, e in rows])
print(json.dumps(out))
"#;
    let mut child = Command::new(next_testing::python())
        .arg("-c")
        .arg(script)
        .arg(rewards_dir().join(file))
        .arg(name)
        .arg(match style {
            Style::Trl => "trl",
            _ => "verl",
        })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input: Vec<Value> = rows()
        .into_iter()
        .map(|(r, g, p, e)| json!([r, g, p, e]))
        .collect();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `rows()` through the verifier pool (batches of consecutive rows, two workers).
fn through_pool(v: Arc<dyn Verifier>) -> Vec<next_verifiers::Verdict> {
    let jobs = rows()
        .into_iter()
        .map(|(response, ground_truth, prompt, extra_info)| Job {
            verifier: v.clone(),
            response,
            ground_truth,
            context: Arc::new(Context {
                prompt,
                data_source: "acme".into(),
                extra_info,
            }),
        })
        .collect();
    Pool::new(2).unwrap().run(jobs, |_, _| {})
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

#[test]
fn verl_style_matches_direct_calls() {
    for name in ["compute_score", "plain_score"] {
        let v = start("verl_math.py", name, Style::Auto, 10.0).unwrap();
        assert_eq!(v.style(), Style::Verl);
        let want = direct("verl_math.py", name, Style::Verl);
        let got = through_pool(Arc::new(v));
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let score = w.get("score").unwrap_or(w).as_f64().unwrap();
            assert!(close(g.reward, score), "row {i}: {} vs {w}", g.reward);
            if let Some(acc) = w.get("acc") {
                assert_eq!(g.correct, acc.as_bool().unwrap(), "row {i}");
                // Numeric extras are metrics; all extras are in the detail.
                assert!(close(
                    g.extra["length_penalty"],
                    w["length_penalty"].as_f64().unwrap()
                ));
                assert_eq!(g.extra["acc"], if g.correct { 1.0 } else { 0.0 });
                assert!(!g.extra.contains_key("pred"), "strings are not metrics");
                assert!(g.detail.contains("\"pred\""), "{}", g.detail);
            }
        }
        assert!(got.iter().any(|v| v.correct) && got.iter().any(|v| !v.correct));
    }
}

#[test]
fn trl_style_matches_a_direct_batch_call() {
    for name in ["accuracy_reward", "weighted_reward"] {
        let v = start("trl_math.py", name, Style::Auto, 10.0).unwrap();
        assert_eq!(v.style(), Style::Trl);
        let want = direct("trl_math.py", name, Style::Trl);
        let got = through_pool(Arc::new(v));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_ne!(g.kind, VerdictKind::Error, "row {i}: {}", g.detail);
            assert!(
                close(g.reward, w.as_f64().unwrap()),
                "row {i}: {} vs {w}",
                g.reward
            );
        }
    }
}

/// Judges `responses` as one batch with `file:name`.
fn batch(v: &PythonReward, responses: &[&str]) -> Vec<next_verifiers::Verdict> {
    let ctx = Context::default();
    let gt = json!("1");
    let items: Vec<Item<'_>> = responses
        .iter()
        .map(|r| Item {
            response: r,
            ground_truth: &gt,
            context: &ctx,
        })
        .collect();
    v.verify_batch(&items)
}

/// (function, responses of one batch, expected (kind, reward, detail fragment) per row).
type Case = (
    &'static str,
    &'static [&'static str],
    &'static [(VerdictKind, f64, &'static str)],
);

#[test]
fn misbehaving_functions_become_error_verdicts() {
    use VerdictKind::{Correct, Error};
    let cases: &[Case] = &[
        (
            "raises",
            &["ok", "boom", "ok"],
            &[
                (Correct, 1.0, "score 1"),
                (
                    Error,
                    0.0,
                    "raised ValueError: cannot parse boom (at bad.py:",
                ),
                (Correct, 1.0, "score 1"),
            ],
        ),
        (
            "returns_string",
            &["x"],
            &[(Error, 0.0, "returned str '1.0', not a number")],
        ),
        (
            "returns_nan",
            &["nan", "fine"],
            &[
                (Error, 0.0, "returned nan, not a finite number"),
                (Correct, 0.5, "score 0.5"),
            ],
        ),
        (
            "prints",
            &["a", "b"],
            &[(Correct, 0.25, "score 0.25"), (Correct, 0.25, "score 0.25")],
        ),
        (
            "no_score",
            &["a"],
            &[(Error, 0.0, "returned a dict without `score` (keys: acc)")],
        ),
        (
            "sleeps",
            &["fast", "slow", "fast"],
            &[
                (Correct, 1.0, "score 1"),
                (Error, 0.0, "timed out after 1 s"),
                (Correct, 1.0, "score 1"),
            ],
        ),
        ("swallows", &["a"], &[(Error, 0.0, "timed out after 1 s")]),
        (
            "ignores_alarm",
            &["stuck"],
            &[(
                Error,
                0.0,
                "the worker overran its time (6 s for this batch) and was killed",
            )],
        ),
        (
            // The batch kills its worker twice, then is scored row by row: only the row that
            // exits fails, named; the rows around it keep their scores and order.
            "exits",
            &["fine", "exit", "fine"],
            &[
                (Correct, 1.0, "score 1"),
                (
                    Error,
                    0.0,
                    "the worker died on this row (row 2 of a batch of 3: exit status: 3)",
                ),
                (Correct, 1.0, "score 1"),
            ],
        ),
        (
            "exits",
            &["exit"],
            &[(
                Error,
                0.0,
                "the worker died on this row twice (exit status: 3)",
            )],
        ),
    ];
    for (name, responses, want) in cases {
        let v = start("bad.py", name, Style::Verl, 1.0).unwrap();
        let got = batch(&v, responses);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, (kind, reward, fragment))) in got.iter().zip(*want).enumerate() {
            assert_eq!(
                (g.kind, g.reward),
                (*kind, *reward),
                "{name} row {i}: {}",
                g.detail
            );
            assert!(
                g.detail.contains(fragment),
                "{name} row {i}: {:?} lacks {fragment:?}",
                g.detail
            );
            if *kind == Error {
                assert!(g.detail.contains(&format!("bad.py:{name}")), "{}", g.detail);
            }
        }
        // The worker (restarted where it died, killed where it overran) still serves the next
        // batch, for the functions that can succeed at all.
        if !["returns_string", "no_score", "swallows"].contains(name) {
            let after = batch(&v, &["fine"]);
            assert_ne!(after[0].kind, Error, "{name} after: {}", after[0].detail);
        }
    }
}

#[test]
fn a_dead_worker_is_restarted_and_its_batch_retried() {
    // The function kills its worker on its first call only (a marker file says it happened),
    // so the retry succeeds and no row is lost.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("once.py");
    let marker = dir.path().join("died");
    let v = start_written(
        &file,
        &format!(
            "import os\ndef f(data_source, solution_str, ground_truth, extra_info=None):\n    if not os.path.exists({m:?}):\n        open({m:?}, 'w').close()\n        os._exit(1)\n    return 0.75\n",
            m = marker.display().to_string()
        ),
    );
    let got = batch(&v, &["a", "b", "c"]);
    assert!(marker.exists());
    assert!(got.iter().all(|g| g.reward == 0.75), "{got:?}");
}

#[test]
fn a_batch_that_kills_its_worker_twice_starts_at_most_b_plus_2_workers() {
    // Every worker start imports the file, which counts it in `starts`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("counted.py");
    let starts = dir.path().join("starts");
    let v = start_written(
        &file,
        &format!(
            "import os\nopen({s:?}, 'a').write('x')\ndef f(data_source, solution_str, ground_truth, extra_info=None):\n    if solution_str.startswith('exit'):\n        os._exit(1)\n    return 0.5\n",
            s = starts.display().to_string()
        ),
    );
    let count = || std::fs::read_to_string(&starts).unwrap().len();
    assert_eq!(count(), 1);
    // One bad row of four: two restarts for the batch, one for the row; the others are scored.
    let got = batch(&v, &["a", "exit", "b", "c"]);
    let rewards: Vec<f64> = got.iter().map(|g| g.reward).collect();
    assert_eq!(rewards, vec![0.5, 0.0, 0.5, 0.5]);
    assert_eq!(got[1].kind, VerdictKind::Error);
    assert_eq!(count(), 1 + 3);
    // Every row bad: B + 2 = 5 starts, no more, and every row an error.
    let got = batch(&v, &["exit1", "exit2", "exit3"]);
    assert!(got.iter().all(|g| g.kind == VerdictKind::Error), "{got:?}");
    assert!(
        got[2].detail.contains("row 3 of a batch of 3"),
        "{}",
        got[2].detail
    );
    assert_eq!(count(), 1 + 3 + 5);
    // And the pool still serves.
    assert_eq!(batch(&v, &["d"])[0].reward, 0.5);
    assert_eq!(count(), 1 + 3 + 5);
}

#[test]
fn unloadable_functions_fail_at_start_naming_file_and_name() {
    let cases: &[(&str, &str, Style, &str)] = &[
        ("missing.py", "f", Style::Auto, "missing.py: no such file"),
        (
            "syntax_error.py",
            "compute_score",
            Style::Auto,
            "SyntaxError",
        ),
        (
            "bad.py",
            "nope",
            Style::Auto,
            "bad.py has no `nope` (its functions: ",
        ),
        (
            "bad.py",
            "NOT_A_FUNCTION",
            Style::Auto,
            "`NOT_A_FUNCTION` is a int, not a function",
        ),
        (
            "bad.py",
            "ambiguous",
            Style::Auto,
            "cannot tell its style from the signature (x, y)",
        ),
    ];
    for (file, name, style, fragment) in cases {
        let err = start(file, name, *style, 1.0).unwrap_err().to_string();
        assert!(err.contains(fragment), "{file}:{name}: {err}");
        assert!(
            err.contains(&format!("{file}:{name}")) || err.contains(file),
            "{err}"
        );
    }
    // A missing interpreter is an error too, not a panic.
    let err = PythonReward::start(
        "x.py:f".parse().unwrap(),
        Options {
            python: "/nonexistent/python".into(),
            ..options(Style::Auto, 1.0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/python"), "{err}");
}

#[test]
fn trl_batches_that_return_the_wrong_length_are_errors() {
    let v = start("trl_math.py", "short_list", Style::Trl, 1.0).unwrap();
    let got = batch(&v, &["a", "b"]);
    for g in &got {
        assert_eq!(g.kind, VerdictKind::Error);
        assert!(
            g.detail.contains("returned a list of 1 for a batch of 2"),
            "{}",
            g.detail
        );
    }
}

#[test]
fn reward_targets_parse_and_route_by_data_source() {
    for bad in ["f.py:", ":f", "f.py:1x", "f.py:a-b", ""] {
        assert!(bad.parse::<Target>().is_err(), "{bad:?}");
    }
    assert_eq!(
        "math".parse::<Target>().unwrap(),
        Target::Verifier("math".into())
    );
    let f = format!(
        "{}:compute_score",
        rewards_dir().join("verl_math.py").display()
    );
    let mut registry = Registry::default();
    let sources = [("acme/python".to_string(), f.parse::<Target>().unwrap())]
        .into_iter()
        .collect();
    registry
        .configure(None, &sources, &options(Style::Auto, 5.0))
        .unwrap();
    assert!(registry
        .for_source("acme/python")
        .unwrap()
        .name()
        .ends_with("verl_math.py:compute_score"));
    assert_eq!(registry.for_source("openai/gsm8k").unwrap().name(), "math");
    // `fn` for every other row.
    registry
        .configure(
            Some(&Target::Verifier("exact".into())),
            &Default::default(),
            &options(Style::Auto, 5.0),
        )
        .unwrap();
    assert_eq!(registry.for_source("openai/gsm8k").unwrap().name(), "exact");
    assert!(registry
        .for_source("acme/python")
        .unwrap()
        .name()
        .ends_with(":compute_score"));
    let err = registry
        .configure(
            Some(&Target::Verifier("nope".into())),
            &Default::default(),
            &options(Style::Auto, 5.0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("unknown verifier `nope`"), "{err}");
}
