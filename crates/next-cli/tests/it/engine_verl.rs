//! The verl engine end to end against a stand-in for verl (`fake_verl.py`: verl trains only on
//! GPUs; the stand-in reads the generated overrides and leaves verl 0.9.1's checkpoint layout,
//! commit mark and file-logger rows, and scores through the shipped `reward.py`). `next run`
//! with `[engine] kind = "verl"` trains a segment, survives a crash mid-segment by resuming
//! verl's own checkpoint, exports every checkpoint's adapter with the true alpha, jumps, and
//! starts the next segment from the jumped adapter with only the extra state of the checkpoint
//! it jumped from.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::ok;

const FAKE: &str = include_str!("fake_verl.py");

/// A tiny base with a chat template that renders the user's message as it is, so that the
/// embedded task's prompts work as chat prompts.
fn base(dir: &Path) -> PathBuf {
    let base = crate::tiny_base(dir);
    std::fs::write(
        base.join("chat_template.jinja"),
        "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    )
    .unwrap();
    base
}

/// The embedded task's rows of `split` with each prompt as one user message.
fn chat_rows(dir: &Path, split: &str, n: usize) -> PathBuf {
    let text_rows = dir.join(format!("{split}-text.jsonl"));
    crate::add2_rows(&text_rows, split, n);
    let mut out = String::new();
    for line in std::fs::read_to_string(&text_rows).unwrap().lines() {
        let mut row: Value = serde_json::from_str(line).unwrap();
        row["prompt"] = serde_json::json!([{"role": "user", "content": row["prompt"]}]);
        out.push_str(&row.to_string());
        out.push('\n');
    }
    let path = dir.join(format!("{split}.jsonl"));
    std::fs::write(&path, out).unwrap();
    path
}

fn fake_python(dir: &Path) -> PathBuf {
    let real = next_files::python::interpreter(None);
    let path = dir.join("fake-verl-python");
    std::fs::write(&path, format!("#!{}\n{FAKE}", real.display())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config(dir: &Path) -> PathBuf {
    let base = base(dir);
    let (train, val) = (chat_rows(dir, "train", 64), chat_rows(dir, "test", 32));
    let text = format!(
        r#"
[model]
path = "{}"
threads = 1
[lora]
r = 4
alpha = 7.5
[data]
train = "{}"
val = "{}"
select = "{}"
[rollout]
n = 4
max_new_tokens = 4
[trainer]
steps = 8
prompts_per_step = 2
save_every = 2
val_every = 2
[engine]
kind = "verl"
python = "{}"
[scheduler]
segment_steps = 4
rounds = 1
predictor = "linear-relex"
horizon = 2
search = "none"
lambda = 1.0
keep_moments = false
"#,
        base.display(),
        train.display(),
        val.display(),
        val.display(),
        fake_python(dir).display()
    );
    let path = dir.join("verl.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `next run` of `cfg` into `out` with the fake's switches `fake` (e.g. `FAKE_VERL_CRASH_AT`)
/// set and the others unset.
fn run(cfg: &Path, out: &Path, fake: &[(&str, usize)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_next"));
    cmd.args([
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .env(
        "FAKE_VERL_REAL_PYTHON",
        next_files::python::interpreter(None),
    );
    for key in ["FAKE_VERL_CRASH_AT", "FAKE_VERL_EXIT_AT"] {
        cmd.env_remove(key);
    }
    for (key, step) in fake {
        cmd.env(key, step.to_string());
    }
    cmd.output().unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn verl_segments_resume_after_a_crash_export_adapters_and_continue_from_a_jump() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = dir.path().join("run");
    // verl dies before step 3: the run stops with the end of verl's log in the error.
    let crashed = run(&cfg, &out, &[("FAKE_VERL_CRASH_AT", 3)]);
    let err = String::from_utf8_lossy(&crashed.stderr);
    assert!(!crashed.status.success());
    assert!(
        err.contains("main_ppo failed") && err.contains("crashed before step 3"),
        "{err}"
    );
    // Started again, it resumes verl's checkpoint at step 2 and finishes the run.
    ok(run(&cfg, &out, &[]));
    let seg0 = out.join("segment-0");
    let seg1 = out.join("segment-1");
    let launches0 = lines(&seg0.join("verl/launches.jsonl"));
    let modes: Vec<(&str, u64, u64)> = launches0
        .iter()
        .map(|l| {
            (
                l["mode"].as_str().unwrap(),
                l["start"].as_u64().unwrap(),
                l["stop"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(modes, vec![("disable", 0, 4), ("auto", 2, 4)]);
    // Every checkpoint's adapter, exported with the true alpha (verl's meta says 7).
    for step in [2, 4] {
        let a = seg0.join(format!(
            "global_step_{step}/actor/lora_adapter/adapter_config.json"
        ));
        assert_eq!(
            (json(&a)["r"].clone(), json(&a)["lora_alpha"].clone()),
            (4.into(), 7.5.into())
        );
    }
    // The next segment: verl resumed from segment 0's step 4 with only the extra state, from
    // the jumped adapter (λ = 1, rank 4 + 1), and trained to the end at that rank.
    let launches1 = lines(&seg1.join("verl/launches.jsonl"));
    assert_eq!(launches1.len(), 1, "{launches1:?}");
    assert_eq!(launches1[0]["mode"], "resume_path");
    assert_eq!(launches1[0]["load_contents"], "[extra]");
    assert_eq!(launches1[0]["start"], 4);
    let from = launches1[0]["from"].as_str().unwrap();
    assert!(from.ends_with("segment-0/verl/global_step_4"), "{from}");
    let start = json(&seg1.join("global_step_4/actor/lora_adapter/adapter_config.json"));
    assert_eq!(launches1[0]["rank"], start["r"]);
    for step in [6, 8] {
        let a = seg1.join(format!(
            "global_step_{step}/actor/lora_adapter/adapter_config.json"
        ));
        assert_eq!(json(&a)["r"], start["r"]);
    }
    // verl's rows (scored through reward.py and next verify --serve: one right, one wrong) and
    // the in-process validations, in one metrics.jsonl per segment.
    let rows = lines(&seg0.join("metrics.jsonl"));
    let steps: Vec<u64> = rows
        .iter()
        .filter(|r| r["data"].get("critic/score/mean").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert!(rows
        .iter()
        .all(|r| r["data"].get("critic/score/mean").is_none_or(|v| v == 0.5)));
    let validated: Vec<u64> = rows
        .iter()
        .filter(|r| {
            r["data"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("val-core/"))
        })
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(validated, vec![0, 2, 4]);
    // Started once more, a finished run launches nothing.
    ok(run(&cfg, &out, &[]));
    assert_eq!(lines(&seg1.join("verl/launches.jsonl")).len(), 1);
}

#[test]
fn a_verl_that_exits_cleanly_short_of_the_stop_step_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = dir.path().join("run");
    // verl exits with status 0 before step 3 of a segment that stops at 4: its latest
    // checkpoint is step 2, and the run stops there instead of exporting or jumping.
    let early = run(&cfg, &out, &[("FAKE_VERL_EXIT_AT", 3)]);
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success());
    assert!(
        err.contains("verl exited without a checkpoint at step 4")
            && err.contains("(its latest: Some(2))")
            && err.contains("launch.log"),
        "{err}"
    );
    assert!(!out.join("segment-1").exists());
}
