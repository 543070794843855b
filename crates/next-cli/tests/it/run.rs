//! `next run` end to end on a tiny pretrained base: the [scheduler] table is read (unknown keys
//! refused by name), the loop jumps once and trains to the end, and a second call resumes a
//! finished run without redoing anything.

use crate::next;

#[test]
fn run_jumps_once_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let base = crate::tiny_base(dir.path());
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
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
train_size = 100
val_size = 32
[rollout]
n = 4
max_new_tokens = 4
[trainer]
steps = 8
prompts_per_step = 2
micro_batch = 8
save_every = 2
val_every = 100
[scheduler]
segment_steps = 4
horizon = 2
predictor = "linear-alpharl"
search = "golden"
lambda_max = 8.0
evals = 3
"#,
            base.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let args = [
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let first = next(&args);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(
        err.contains("jumped from step 4 with linear-alpharl"),
        "{err}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scheduler.json")).unwrap())
            .unwrap();
    assert_eq!(state["phase"], "done");
    assert_eq!(
        state["decisions"][0]["candidates"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "λ = 0 and 3 evaluations"
    );
    assert!(out
        .join("segment-1/global_step_8/actor/lora_adapter/adapter_config.json")
        .is_file());
    let resolved = std::fs::read_to_string(out.join("config.resolved.toml")).unwrap();
    assert!(
        resolved.contains("[scheduler]") && resolved.contains("linear-alpharl"),
        "{resolved}"
    );
    // Finished: running it again does nothing but report.
    let again = next(&args);
    assert!(again.status.success());
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains("-> selection accuracy"),
        "no candidate is re-scored"
    );

    let bad = next(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "scheduler.jumps=3",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("jumps"), "{e}");
    // Typed values are refused when the config is read, with the key named.
    for (set, key) in [
        ("scheduler.search=random", "scheduler.search"),
        ("scheduler.predictor=oracle", "scheduler.predictor"),
        ("model.dtype=f8", "model.dtype"),
        ("model.device=tpu", "model.device"),
        ("data.task=add9", "data.task"),
    ] {
        let bad = next(&[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            set,
        ]);
        let e = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{set}: {e}");
        assert!(e.contains(&format!("key `{key}`")), "{set}: {e}");
    }
}

#[test]
fn a_python_reward_function_drives_both_segments_of_a_run_with_a_jump() {
    // `[reward] fn` reaches the trainer of every segment, the one a jump starts included: its
    // numeric extras are metrics before and after the jump.
    let dir = tempfile::tempdir().unwrap();
    let base = crate::tiny_base(dir.path());
    let reward = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../next-verifiers/tests/data/rewards/verl_math.py")
        .canonicalize()
        .unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
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
train_size = 40
val_size = 8
[rollout]
n = 4
max_new_tokens = 4
[trainer]
steps = 4
prompts_per_step = 2
micro_batch = 8
save_every = 1
val_every = 100
log_every = 1
[reward]
fn = "{}:compute_score"
[scheduler]
segment_steps = 2
rounds = 1
horizon = 2
predictor = "linear-relex"
search = "none"
lambda = 1.0
"#,
            base.display(),
            reward.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let run = next(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("jumped from step 2"), "{err}");
    for (segment, steps) in [("segment-0", [1, 2]), ("segment-1", [3, 4])] {
        let rows: Vec<serde_json::Value> =
            std::fs::read_to_string(out.join(segment).join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        for step in steps {
            let row = rows
                .iter()
                .find(|r| r["step"] == step && r["data"].get("reward/error_frac").is_some())
                .unwrap_or_else(|| panic!("{segment}: no training row for step {step}"));
            for key in ["reward_extra/length_penalty/mean", "reward_extra/acc/mean"] {
                assert!(
                    row["data"].get(key).is_some(),
                    "{segment}: {key} missing: {row}"
                );
            }
            assert_eq!(row["data"]["reward/error_frac"], 0.0, "{segment}: {row}");
        }
    }
}
