//! `next data gen --source reasoning-gym`: rows in our schema, deterministic per seed, and the
//! generator's own reference answers score 1 under the verifier each row's `data_source` names.

use std::path::Path;

use serde_json::Value;

use crate::next;

fn gen(task: &str, seed: &str, out: &Path) -> Vec<Value> {
    gen_with(task, seed, out, &[])
}

/// `next data gen --source reasoning-gym` of 25 rows with `extra` flags; the rows written.
fn gen_with(task: &str, seed: &str, out: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "data",
        "gen",
        "--source",
        "reasoning-gym",
        "--task",
        task,
        "--n",
        "25",
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let done = next(&args);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Generates `task` twice with one seed and once with another, then scores each row's reference
/// answer, written as `response_format` asks, with `next verify --verifier auto`.
fn check(task: &str, source: &str, response_format: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a.jsonl"),
        tmp.path().join("b.jsonl"),
        tmp.path().join("c.jsonl"),
    );
    let rows = gen(task, "3", &a);
    assert_eq!(rows.len(), 25);
    gen(task, "3", &b);
    gen(task, "4", &c);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());

    let mut scored = String::new();
    for mut row in rows {
        assert_eq!(row["data_source"], source);
        assert_eq!(row["prompt"][0]["role"], "user");
        let answer = row["extra_info"]["answer"].as_str().unwrap().to_owned();
        row["response"] = Value::String(response_format.replace("{}", &answer));
        scored.push_str(&serde_json::to_string(&row).unwrap());
        scored.push('\n');
    }
    let input = tmp.path().join("responses.jsonl");
    std::fs::write(&input, scored).unwrap();
    let out = next(&["verify", "--input", input.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["reward"], 1.0, "{r}");
    }
}

#[test]
fn gsm_symbolic_rows_verify_with_the_math_verifier() {
    check(
        "gsm_symbolic",
        "reasoning-gym/gsm_symbolic",
        "So the total is \\boxed{{}}.",
    );
}

#[test]
fn numeric_task_rows_verify_with_the_math_verifier() {
    for task in ["leg_counting", "basic_arithmetic", "gcd"] {
        check(
            task,
            &format!("reasoning-gym/{task}"),
            "Counting carefully, the answer is \\boxed{{}}.",
        );
    }
}

#[test]
fn countdown_rows_verify_with_the_countdown_verifier() {
    check(
        "countdown",
        "reasoning-gym/countdown",
        "I try a few. <answer>{}</answer>",
    );
}

#[test]
fn exclude_keeps_validation_problems_out_of_the_training_file() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = |rows: &[Value]| -> std::collections::HashSet<String> {
        rows.iter().map(|r| r["prompt"].to_string()).collect()
    };
    let train = tmp.path().join("train.jsonl");
    let train_rows = gen("gsm_symbolic", "3", &train);
    assert_eq!(
        prompts(&train_rows).len(),
        train_rows.len(),
        "repeats within a file"
    );
    // The same seed draws the very same problems first: every one must be replaced.
    let val = tmp.path().join("val.jsonl");
    let val_rows = gen_with(
        "gsm_symbolic",
        "3",
        &val,
        &["--exclude", train.to_str().unwrap()],
    );
    assert_eq!(val_rows.len(), 25);
    assert!(prompts(&train_rows).is_disjoint(&prompts(&val_rows)));
}

#[test]
fn unsupported_requests_fail_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.jsonl");
    let out = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--source", "reasoning-gym", "--task", "arc_1d"],
            "not supported (supported: gsm_symbolic, countdown, basic_arithmetic,",
        ),
        (
            vec![
                "--source",
                "reasoning-gym",
                "--task",
                "countdown",
                "--split",
                "val",
            ],
            "no splits",
        ),
        (
            vec!["--source", "hub", "--task", "countdown"],
            "invalid value 'hub' for '--source <SOURCE>'",
        ),
        (
            vec![
                "--source",
                "reasoning-gym",
                "--task",
                "countdown",
                "--python",
                "/nonexistent/python",
            ],
            "cannot run /nonexistent/python",
        ),
    ] {
        let mut full = vec!["data", "gen", "--n", "2", "--out", out];
        full.extend(args);
        let done = next(&full);
        let err = String::from_utf8_lossy(&done.stderr);
        // A flag clap refuses is a usage error (2); anything refused later, an error (1).
        let code = if needle.starts_with("invalid value") {
            2
        } else {
            1
        };
        assert_eq!(done.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
    assert!(!Path::new(out).exists());
}
