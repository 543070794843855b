//! The TRL engine end to end (`[engine] kind = "trl"`, `configs/engine-trl.toml` on the
//! embedded task): TRL's GRPOTrainer trains the segments, a jump grows the adapter by one rank
//! and training continues with the step count and learning rate of the whole run, in both
//! moment modes; a run stopped at a checkpoint and resumed equals an uninterrupted one bit for
//! bit; a stale optimizer state is refused before torch can crash.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{next, ok};

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/engine-trl.toml")
}

/// `next run` of the TRL config with `sets` into `out`.
fn run(out: &Path, sets: &[&str]) -> Output {
    let cfg = config();
    let mut args = vec![
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    next(&args)
}

fn adapter(run: &Path, segment: usize, step: usize) -> PathBuf {
    run.join(format!(
        "segment-{segment}/global_step_{step}/actor/lora_adapter"
    ))
}

fn rank(adapter: &Path) -> u64 {
    let text = std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["r"]
        .as_u64()
        .unwrap()
}

/// Runs Python code with the project's interpreter (the one the engine uses); its stdout.
fn python(code: &str, args: &[&Path]) -> String {
    let out = Command::new(next_files::python::interpreter(None))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap();
    ok(out).trim().to_string()
}

/// The metrics rows of a run directory: (step, data).
fn metrics(dir: &Path) -> Vec<(u64, serde_json::Value)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["data"].clone())
        })
        .collect()
}

/// Marks segment 0 of a one-segment run as stopped at `step` (what a kill after that
/// checkpoint leaves), so the next `next run` resumes it.
fn rewind(run: &Path, step: usize, last: usize) {
    let seg = run.join("segment-0");
    for s in step + 1..=last {
        let _ = std::fs::remove_dir_all(seg.join(format!("global_step_{s}")));
        let _ = std::fs::remove_dir_all(seg.join(format!("trl/checkpoint-{s}")));
    }
    std::fs::write(
        seg.join("latest_checkpointed_iteration.txt"),
        format!("{step}\n"),
    )
    .unwrap();
    let state = run.join("scheduler.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    s["phase"] = "train".into();
    std::fs::write(&state, s.to_string()).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

const OPTIMIZER: &str = "import sys, torch\n\
s = torch.load(sys.argv[1], weights_only=True)['state']\n\
print(len(s), tuple(s[0]['exp_avg'].shape) if s else None)";

#[test]
fn trl_segments_jump_and_continue_in_both_moment_modes() {
    for keep in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let keep_set = format!("scheduler.keep_moments={keep}");
        ok(run(
            &out,
            &[
                "trainer.steps=4",
                "trainer.save_every=1",
                "scheduler.segment_steps=2",
                "scheduler.horizon=1",
                "scheduler.search=none",
                "scheduler.lambda=1.0",
                &keep_set,
            ],
        ));
        // The jump adds one rank; TRL trains the grown adapter on to the end.
        assert_eq!(rank(&adapter(&out, 0, 2)), 8);
        for step in [2, 3, 4] {
            assert_eq!(rank(&adapter(&out, 1, step)), 9, "step {step}");
        }
        let seg1 = out.join("segment-1");
        let rows = metrics(&seg1);
        let trained: Vec<u64> = rows
            .iter()
            .filter(|(_, d)| d.get("actor/lr").is_some())
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(trained, [3, 4], "the step count continues");
        for (s, d) in &rows {
            if let Some(lr) = d.get("actor/lr") {
                assert!((lr.as_f64().unwrap() - 1e-3).abs() < 1e-12, "step {s}: {d}");
            }
        }
        assert!(rows.iter().any(|(s, d)| *s == 4
            && d.as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("val-core/"))));
        // Moments: zero-padded for the added rank, or cleared.
        let opt = python(OPTIMIZER, &[&seg1.join("trl/checkpoint-2/optimizer.pt")]);
        if keep {
            assert!(opt.ends_with("(9, 128)"), "{opt}");
        } else {
            assert_eq!(opt, "0 None");
        }
    }
}

#[test]
fn a_resumed_trl_segment_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    // With a KL term: a resumed segment must keep the base model as its reference.
    let sets = [
        "trainer.steps=4",
        "scheduler.rounds=0",
        "algorithm.kl_coef=0.05",
    ];
    ok(run(&whole, &sets));
    let resumed = dir.path().join("resumed");
    copy_tree(&whole, &resumed);
    rewind(&resumed, 2, 4);
    ok(run(&resumed, &sets));
    let weights =
        |run: &Path| std::fs::read(adapter(run, 0, 4).join("adapter_model.safetensors")).unwrap();
    assert!(weights(&whole) == weights(&resumed), "the adapters differ");
    let steps = |run: &Path| -> Vec<u64> {
        metrics(&run.join("segment-0"))
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    assert_eq!(steps(&whole), steps(&resumed));

    // A stale optimizer state (moments of another shape) is refused by name.
    rewind(&resumed, 2, 4);
    let opt = resumed.join("segment-0/trl/checkpoint-2/optimizer.pt");
    python(
        "import sys, torch\n\
         p = sys.argv[1]; s = torch.load(p, weights_only=True)\n\
         m = s['state'][0]\n\
         m['exp_avg'] = torch.zeros(m['exp_avg'].shape[0] + 1, m['exp_avg'].shape[1])\n\
         torch.save(s, p)",
        &[&opt],
    );
    let out = run(&resumed, &sets);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("stale optimizer state") && err.contains("refused its input"),
        "{err}"
    );

    // Unknown engine keys are refused by name, before anything runs.
    let out = run(&dir.path().join("bad"), &["engine.bogus=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bogus"), "{err}");
}
