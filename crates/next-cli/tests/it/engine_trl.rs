//! The TRL engine end to end (`[engine] kind = "trl"`, `configs/engine-trl.toml` on the
//! embedded task): TRL's GRPOTrainer trains the segments, a jump grows the adapter by one rank
//! and training continues with the step count and learning rate of the whole run, in both
//! moment modes (on a cosine schedule, whose learning rates continue); a run stopped at a
//! checkpoint and resumed, or jumped with λ = 0, equals an uninterrupted one bit for bit; a
//! stale optimizer state and a missing checkpoint are refused by path; one step takes
//! `prompts_per_step` x `n` completions however many processes share it.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::{next, ok, python};

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

/// The learning rate TRL logs at `step` (1-based) of a `steps`-step run with
/// `optim.schedule=cosine`, `optim.warmup_steps=1` and the config's lr (1e-3) and
/// `min_lr_ratio` (0.1): the rate that step trained with, transformers' `cosine_with_min_lr` at
/// scheduler step `step - 1`.
fn cosine_lr(step: u64, steps: u64) -> f64 {
    let (lr, min, warmup) = (1e-3, 0.1, 1.0);
    let s = (step - 1) as f64;
    if s < warmup {
        return lr * s / warmup;
    }
    let progress = (s - warmup) / (steps as f64 - warmup);
    lr * (min + (1.0 - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
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
                "optim.schedule=cosine",
                "optim.warmup_steps=1",
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
        // The learning rate is the whole run's schedule at that step, not a restarted one.
        for (s, d) in &rows {
            if let Some(lr) = d.get("actor/lr") {
                let want = cosine_lr(*s, 4);
                assert!(
                    (lr.as_f64().unwrap() - want).abs() < 1e-12,
                    "step {s}: {want} {d}"
                );
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

    // A latest-checkpoint record naming a TRL checkpoint that is gone is refused with its path.
    rewind(&resumed, 2, 4);
    let gone = resumed.join("segment-0/trl/checkpoint-2");
    std::fs::remove_dir_all(&gone).unwrap();
    let out = run(&resumed, &sets);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("says step 2, but {} is missing", gone.display()))
            && err.contains("refused its input"),
        "{err}"
    );

    // Unknown engine keys are refused by name, before anything runs.
    let out = run(&dir.path().join("bad"), &["engine.bogus=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bogus"), "{err}");
}

#[test]
fn a_trl_jump_with_lambda_zero_continues_as_if_there_had_been_none() {
    let dir = tempfile::tempdir().unwrap();
    // A cosine schedule with warmup: the jumped segment must continue the whole run's rates.
    let common = [
        "trainer.steps=4",
        "trainer.save_every=1",
        "optim.schedule=cosine",
        "optim.warmup_steps=1",
    ];
    let whole = dir.path().join("whole");
    ok(run(
        &whole,
        &[&common[..], &["scheduler.rounds=0"]].concat(),
    ));
    let jumped = dir.path().join("jumped");
    let jump = [
        "scheduler.rounds=1",
        "scheduler.segment_steps=2",
        "scheduler.horizon=1",
        "scheduler.search=none",
        "scheduler.lambda=0.0",
        "scheduler.keep_moments=true",
    ];
    ok(run(&jumped, &[&common[..], &jump[..]].concat()));
    // λ = 0 is no jump: the segment after it starts from the same adapter, without an added rank.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jumped.join("scheduler.json")).unwrap())
            .unwrap();
    assert_eq!(state["decisions"][0]["lambda"], 0.0, "{state}");
    assert_eq!(rank(&adapter(&jumped, 1, 4)), 8);
    let weights = |a: PathBuf| std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    for step in [3, 4] {
        assert!(
            weights(adapter(&whole, 0, step)) == weights(adapter(&jumped, 1, step)),
            "the adapters at step {step} differ"
        );
    }
    // The same training rows at steps 3 and 4: learning rate, loss, rewards.
    let trained = |seg: PathBuf| -> Vec<(u64, Vec<serde_json::Value>)> {
        metrics(&seg)
            .into_iter()
            .filter(|(s, d)| *s > 2 && d.get("actor/lr").is_some())
            .map(|(s, d)| {
                let keys = ["actor/lr", "actor/pg_loss", "critic/score/mean"];
                (s, keys.iter().map(|k| d[k].clone()).collect())
            })
            .collect()
    };
    let after = trained(jumped.join("segment-1"));
    assert_eq!(after.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(after, trained(whole.join("segment-0")));
    for (s, row) in &after {
        assert!(
            (row[0].as_f64().unwrap() - cosine_lr(*s, 4)).abs() < 1e-12,
            "step {s}: {row:?}"
        );
    }
}

/// The driver's batch arithmetic, in the project's Python with TRL's own `GRPOConfig` (one
/// process: several cannot be started here).
const BATCH: &str = r#"
import json, os, sys
sys.path.insert(0, sys.argv[1])
import driver
from trl import GRPOConfig

def refused(f):
    try:
        return f()
    except driver.Refused as e:
        return "refused: %s" % e

spec = {"prompts_per_step": 8, "n": 4, "extra": {}}
out = {}
for w in ["1", "2", "4", "32", "3", "0", "x"]:
    os.environ["WORLD_SIZE"] = w
    out[w] = refused(lambda: driver.batch_args(spec, driver.world_size())["per_device_train_batch_size"])
accum = dict(spec, extra={"gradient_accumulation_steps": 2})
out["2 with accumulation 2"] = driver.batch_args(accum, 2)
os.environ["WORLD_SIZE"] = "1"
def config(**kw):
    kw = dict(driver.batch_args(spec, 1), **kw)
    return GRPOConfig(output_dir=sys.argv[2], use_cpu=True, report_to=[], num_generations=4, **kw)
cfg = config()
driver.check_batch(spec, cfg, 1)
out["generation batch"] = cfg.generation_batch_size
out["seen"] = [driver.prompts_seen(cfg, s) for s in range(4)]
out["seen, 2 iterations"] = [driver.prompts_seen(config(num_iterations=2), s) for s in range(5)]
out["per-device override"] = refused(lambda: driver.check_batch(spec, config(per_device_train_batch_size=8), 1))
out["world mismatch"] = refused(lambda: driver.check_batch(spec, cfg, 2))
print(json.dumps(out, indent=1))
"#;

#[test]
fn a_trl_step_takes_prompts_per_step_times_n_completions_over_all_processes() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../next-scheduler/src/trl");
    let out: serde_json::Value =
        serde_json::from_str(&python(BATCH, &[&driver, dir.path()])).unwrap();
    // 8 prompts x 4 samples = 32 completions a step, split over the processes.
    for (world, per_device) in [("1", 32), ("2", 16), ("4", 8), ("32", 1)] {
        assert_eq!(out[world], per_device, "WORLD_SIZE={world}: {out}");
    }
    let text = |k: &str| out[k].as_str().unwrap_or_default().to_string();
    assert!(
        text("3").contains("32 completions per step do not split evenly over 3 processes"),
        "{out}"
    );
    for bad in ["0", "x"] {
        assert!(
            text(bad).contains("is not a positive number of processes"),
            "{out}"
        );
    }
    assert_eq!(
        out["2 with accumulation 2"],
        serde_json::json!({"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2})
    );
    // TRL's own config: one generation batch of 32 a step, so the data cursor moves 8 prompts a
    // step (a generation batch serves num_iterations steps).
    assert_eq!(out["generation batch"], 32);
    assert_eq!(out["seen"], serde_json::json!([0, 8, 16, 24]));
    assert_eq!(
        out["seen, 2 iterations"],
        serde_json::json!([0, 8, 8, 16, 16])
    );
    assert!(
        text("per-device override")
            .contains("= 8 completions per step, not trainer.prompts_per_step x rollout.n = 8 x 4"),
        "{out}"
    );
    assert!(
        text("world mismatch").contains("WORLD_SIZE says 2 processes, but TRL runs in 1"),
        "{out}"
    );
}

/// `next experiment` on the TRL engine: the baseline and the arm are TRL runs (its driver's
/// files are in their segments), the arm branches from the baseline's checkpoint at the jump,
/// and the report has the arm's row.
#[test]
fn an_experiment_trains_its_baseline_and_arms_with_trl() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let cfg = config();
    let o = next(&[
        "experiment",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        exp.to_str().unwrap(),
        "--set",
        "experiment.seeds=1",
        "--set",
        "experiment.jump_at=[4]",
        "--set",
        "experiment.methods=[\"linear-relex\"]",
    ]);
    let stdout = ok(o);
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exp.join("experiment.json")).unwrap()).unwrap();
    let b = &results["baselines"][0];
    let steps = |curve: &serde_json::Value| -> Vec<u64> {
        curve
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps(&b["curve"]), [0, 2, 4, 6, 8]);
    let arms = results["arms"].as_array().unwrap();
    let names: Vec<&str> = arms.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["control", "linear-relex"]);
    let arm = &arms[1];
    assert_eq!(steps(&arm["curve"]), [0, 2, 4, 6, 8]);
    assert_eq!(
        arm["curve"][1], b["curve"][1],
        "the shared prefix is the baseline's"
    );
    assert!(arm["lambda"].is_f64(), "{arm}");
    // Both runs were TRL's: its driver log sits in every trained segment.
    let baseline = exp.join("seed-0/baseline");
    assert!(
        baseline.join("segment-0/trl/driver.log").is_file()
            || baseline.join("trl/driver.log").is_file(),
        "no TRL driver log under {}",
        baseline.display()
    );
    let logs = walk(&exp.join("seed-0/k-4"))
        .into_iter()
        .filter(|p| p.ends_with("trl/driver.log"))
        .count();
    assert!(logs >= 1, "the arm did not train with TRL");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("| 4 | linear-relex |")),
        "{stdout}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
