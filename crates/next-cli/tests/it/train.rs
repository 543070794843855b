//! `next train` reliability: exact resume after SIGKILL at several moments, and clear errors
//! for bad config and data (the trainer's own tests cover NaN losses and PEFT checkpoints).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use next_model::testing::rust_model;
use serde_json::Value;

use crate::next;

/// `next train --config cfg --out run --set s...`
fn train(cfg: &str, run: &Path, sets: &[&str]) -> Output {
    let mut args = vec!["train", "--config", cfg, "--out", run.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s]);
    }
    next(&args)
}

/// A small, fast training config on the fixture model (add2 prompts fit its alphabet).
fn config(model: &Path, extra: &str) -> String {
    format!(
        r#"
[model]
path = "{}"
threads = 1
[lora]
r = 4
alpha = 8.0
[data]
task = "add2"
train_size = 200
val_size = 24
[rollout]
n = 4
max_new_tokens = 4
[trainer]
steps = 8
prompts_per_step = 4
micro_batch = 8
save_every = 2
val_every = 3
log_every = 1
seed = 3
{extra}
"#,
        model.display()
    )
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("train.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// metrics.jsonl without wall-clock-dependent values.
fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["data"]
                .as_object_mut()
                .unwrap()
                .retain(|k, _| !k.starts_with("timing_s/") && !k.starts_with("perf/"));
            v
        })
        .collect()
}

/// The step of the last complete line of a run's metrics.jsonl, if any.
fn last_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    let complete = &text[..text.rfind('\n')? + 1];
    complete
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .next_back()
}

fn adapter_bytes(run: &Path, step: usize) -> Vec<u8> {
    std::fs::read(run.join(format!(
        "global_step_{step}/actor/lora_adapter/adapter_model.safetensors"
    )))
    .unwrap()
}

#[test]
fn killed_and_resumed_run_equals_uninterrupted_run() {
    let model = rust_model(31);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &config(model.path(), "").replace("steps = 8", "steps = 24"),
    );
    let a = dir.path().join("a");
    let out = train(&cfg, &a, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = metrics(&a);
    assert_eq!(expected.first().unwrap()["step"], 0);
    assert!(expected
        .iter()
        .any(|m| m["data"].get("val-core/arith_add2/reward/mean@1").is_some()));
    assert_eq!(
        std::fs::read_to_string(a.join("latest_checkpointed_iteration.txt"))
            .unwrap()
            .trim(),
        "24"
    );
    let resolved = std::fs::read_to_string(a.join("config.resolved.toml")).unwrap();
    assert!(
        resolved.contains(&format!("path = \"{}\"", model.path().display())),
        "{resolved}"
    );

    // Kill the same run several times, each once it has passed a given step plus a jitter so
    // the kill lands at different phases (rollout, update, checkpoint write), resuming each time.
    // Progress-driven rather than wall-clock-driven so a fast machine cannot finish first.
    let b = dir.path().join("b");
    let plan = [(3u64, 0u64), (7, 15), (12, 40), (17, 5), (21, 25)];
    let mut kills = 0;
    for (step, jitter_ms) in plan {
        let mut child = Command::new(env!("CARGO_BIN_EXE_next"))
            .args(["train", "--config", &cfg, "--out", b.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut finished = false;
        while last_step(&b) < Some(step) {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "no progress past step {step}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!finished, "the run ended before step {step}");
        std::thread::sleep(Duration::from_millis(jitter_ms));
        if child.try_wait().unwrap().is_some() {
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // Whatever the moment, no checkpoint is half-written: the latest one is complete.
        if let Ok(latest) = std::fs::read_to_string(b.join("latest_checkpointed_iteration.txt")) {
            let step = latest.trim();
            assert!(b
                .join(format!("global_step_{step}/actor/trainer_state.json"))
                .exists());
            assert!(b
                .join(format!("global_step_{step}/actor/optimizer.safetensors"))
                .exists());
        }
    }
    let out = train(&cfg, &b, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("killed {kills} times before the run completed");
    assert!(kills >= 4, "only {kills} kills landed before the run ended");
    assert_eq!(metrics(&b), expected, "metrics differ after {kills} kills");
    for step in (2..=24).step_by(2) {
        assert_eq!(
            adapter_bytes(&b, step),
            adapter_bytes(&a, step),
            "adapter at step {step} differs"
        );
    }
}

#[test]
fn bad_config_and_data_are_refused_with_the_key_or_line() {
    let model = rust_model(32);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let base = config(model.path(), "");
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (
            base.replace("[trainer]", "[trainer]\nstepz = 3"),
            vec![],
            vec!["trainer", "stepz"],
        ),
        (
            base.replace("steps = 8", "steps = \"eight\""),
            vec![],
            vec!["trainer.steps"],
        ),
        (
            base.clone(),
            vec!["--set", "rollout.temperature=hot"],
            vec!["rollout.temperature"],
        ),
        (
            base.replace("task = \"add2\"", "task = \"poetry\""),
            vec![],
            vec!["poetry"],
        ),
    ];
    for (text, extra, expected) in cases {
        let cfg = write_config(dir.path(), &text);
        let mut args = vec!["train", "--config", &cfg, "--out", run.to_str().unwrap()];
        args.extend(extra);
        let out = next(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !err.contains("panicked"),
            "{expected:?}: {err}"
        );
        for e in &expected {
            assert!(err.contains(e), "stderr {err:?} does not mention {e:?}");
        }
    }
    let data = dir.path().join("train.jsonl");
    std::fs::write(&data, "{\"data_source\": \"arith\", \"prompt\": \"12+34=\", \"ground_truth\": \"046\"}\n{\"data_source\": \"arith\", \"prompt\": \"1+1=\", \"ground_truth\": \"02\"}\n{\"prompt\": 3}\n").unwrap();
    let with_data = config(model.path(), "").replace(
        "train_size = 200",
        &format!("train = \"{}\"\ntrain_size = 200", data.display()),
    );
    let cfg = write_config(dir.path(), &with_data);
    let out = train(&cfg, &run, &["trainer.steps=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("train.jsonl:3"),
        "{err}"
    );
    let out = train(&cfg, &run, &["trainer.steps=1", "data.skip_bad_rows=true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_reward_function_drives_training_and_its_extras_are_metrics() {
    let model = rust_model(31);
    let dir = tempfile::tempdir().unwrap();
    let reward = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../next-verifiers/tests/data/rewards/verl_math.py")
        .canonicalize()
        .unwrap();
    let cfg = write_config(
        dir.path(),
        &config(
            model.path(),
            &format!("[reward]\nfn = \"{}:compute_score\"\n", reward.display()),
        )
        .replace("steps = 8", "steps = 2"),
    );
    let run = dir.path().join("run");
    let out = train(&cfg, &run, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = metrics(&run);
    let step = m.iter().find(|r| r["step"] == 1).unwrap();
    for key in [
        "reward_extra/length_penalty/mean",
        "reward_extra/acc/mean",
        "reward/error_frac",
    ] {
        assert!(step["data"].get(key).is_some(), "{key} missing: {step}");
    }
    assert_eq!(step["data"]["reward/error_frac"], 0.0);
    // A function that cannot be loaded stops the run before training, naming it.
    let bad = write_config(
        dir.path(),
        &config(
            model.path(),
            "[reward]\nfn = \"nowhere.py:compute_score\"\n",
        ),
    );
    let out = train(&bad, &dir.path().join("bad"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nowhere.py: no such file"),
        "{err}"
    );
    assert!(!dir.path().join("bad/global_step_1").exists());
}
