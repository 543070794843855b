//! `next experiment --quick` end to end (the CI smoke test of `cargo xtask experiment`): every
//! arm is present, its numbers are finite and consistent with the baseline it branched from,
//! the report and non-empty PNG plots exist, a second call resumes without training again, and
//! a bad plan is refused by key before anything runs; repeated jumps and kept optimizer moments.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::next;

fn quick(dir: &Path, extra: &[&str]) -> Output {
    let out = dir.join("exp");
    let base = format!("pretrain.out={}", dir.join("base").display());
    let mut args = vec![
        "experiment",
        "--quick",
        "--out",
        out.to_str().unwrap(),
        "--set",
        &base,
        "--set",
        "model.threads=1",
        "--set",
        "pretrain.threads=1",
    ];
    args.extend(extra);
    next(&args)
}

const ARMS: [&str; 6] = [
    "control",
    "next-reference",
    "next",
    "linear-relex",
    "linear-alpharl",
    "two-point",
];

#[test]
fn quick_experiment_reports_every_arm_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let o = quick(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let exp = dir.path().join("exp");
    let results: Value =
        serde_json::from_slice(&std::fs::read(exp.join("experiment.json")).unwrap()).unwrap();
    let baselines = results["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 1);
    let b = &baselines[0];
    let target = b["target"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&target));
    let b_curve = b["curve"].as_array().unwrap();
    assert_eq!(b_curve.first().unwrap()["step"], 0);
    assert_eq!(b_curve.last().unwrap()["step"], 40);
    let arms = results["arms"].as_array().unwrap();
    let names: Vec<&str> = arms.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ARMS);
    for a in arms {
        let name = a["name"].as_str().unwrap();
        assert_eq!(a["jump_at"], 20, "{name}");
        let curve = a["curve"].as_array().unwrap();
        // The shared prefix is the baseline's own validations, not recomputed.
        assert_eq!(curve[..2], b_curve[..2], "{name}");
        let steps: Vec<u64> = curve.iter().map(|p| p["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, [0, 10, 20, 30, 40], "{name}");
        let mut last_s = -1.0;
        for p in curve {
            let (acc, s) = (
                p["accuracy"].as_f64().unwrap(),
                p["seconds"].as_f64().unwrap(),
            );
            assert!((0.0..=1.0).contains(&acc) && s.is_finite(), "{name}: {p}");
            assert!(
                s >= last_s,
                "{name}: wall clock must not go back: {curve:?}"
            );
            last_s = s;
        }
        if name == "control" {
            assert!(a["lambda"].is_null());
            // Right after branching, the control is the baseline at step 20.
            assert_eq!(curve[2]["accuracy"], b_curve[2]["accuracy"]);
        } else {
            let lambda = a["lambda"].as_f64().unwrap();
            let cands = a["candidates"].as_array().unwrap();
            // λ = 0 and the quick grid 0.5, 1, 2 were all scored on the selection split; the
            // chosen one is the best there (ties to the smaller jump).
            assert_eq!(cands.len(), 4, "{name}");
            let best = cands
                .iter()
                .map(|c| c[1].as_f64().unwrap())
                .fold(f64::MIN, f64::max);
            let chosen = cands
                .iter()
                .find(|c| c[0].as_f64() == Some(lambda))
                .unwrap();
            assert_eq!(chosen[1].as_f64().unwrap(), best, "{name}");
            // The accuracy right after the jump is the chosen adapter's on the validation
            // split, a split the choice never saw.
            let after = curve[2]["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&after), "{name}");
            let overhead: f64 = ["extract", "fit", "search"]
                .iter()
                .map(|k| a["overhead"][k].as_f64().unwrap())
                .sum();
            assert!(overhead > 0.0 && overhead.is_finite(), "{name}");
        }
    }
    let report = exp.join("report");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for name in ARMS {
        assert!(
            md.lines()
                .any(|l| l.starts_with(&format!("| 20 | {name} |"))),
            "no table row for {name}:\n{md}"
        );
    }
    assert!(md.contains("[rank-1 energy]"), "{md}");
    assert!(!md.contains("NaN") && !md.contains("inf"), "{md}");
    for plot in [
        "accuracy_vs_step_k20",
        "accuracy_vs_time_k20",
        "lambda_search_k20",
        "rank1_energy",
    ] {
        let png = std::fs::read(report.join(format!("{plot}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{plot}");
        assert!(png.len() > 5_000, "{plot}.png is {} bytes", png.len());
        assert!(
            md.contains(&format!("({plot}.png)")),
            "{plot} not in the report"
        );
    }
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().filter(|l| l.starts_with("| 20 |")).count(), 6);

    // Resuming a finished experiment trains nothing and measures the same.
    let again = quick(dir.path(), &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let results2: Value =
        serde_json::from_slice(&std::fs::read(exp.join("experiment.json")).unwrap()).unwrap();
    assert_eq!(results, results2);
    assert_eq!(String::from_utf8_lossy(&again.stdout), table);

    // Other settings in the same directory would mix old arms with new ones: refused.
    let other = quick(dir.path(), &["--set", "scheduler.grid=[1.0]"]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(err.contains("config.resolved.toml"), "{err}");

    // The methods alone may change: a new method runs only its own arms, an old one is read
    // back as it was, and commit.txt records the sitting that added the new one.
    let more = quick(
        dir.path(),
        &["--set", r#"experiment.methods=["linear-relex","ema"]"#],
    );
    let err = String::from_utf8_lossy(&more.stderr);
    assert!(more.status.success(), "{err}");
    let results3: Value =
        serde_json::from_slice(&std::fs::read(exp.join("experiment.json")).unwrap()).unwrap();
    let arm = |r: &Value, name: &str| {
        r["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
    };
    let names: Vec<&str> = results3["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["control", "linear-relex", "ema"]);
    // Read back, not rerun (a rerun would measure other seconds).
    assert_eq!(
        arm(&results3, "linear-relex"),
        arm(&results, "linear-relex")
    );
    let stamp = std::fs::read_to_string(exp.join("commit.txt")).unwrap();
    let lines: Vec<&str> = stamp.lines().collect();
    assert_eq!(lines.len(), 2, "{stamp}");
    assert!(lines[1].starts_with("ema added at "), "{stamp}");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("ema added at"), "{md}");
}

#[test]
fn a_bad_plan_is_refused_by_key_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["experiment.jump_at=[25]"], "experiment.jump_at"),
        (&["experiment.jump_at=[40]"], "experiment.jump_at"),
        (&["experiment.methods=[\"cubic\"]"], "experiment.methods"),
        (&["experiment.seeds=0"], "experiment.seeds"),
        (&["experiment.confidence=1.5"], "experiment.confidence"),
        (&["experiment.colour=1"], "colour"),
        (&["scheduler.horizon=30"], "scheduler.horizon"),
        (&["experiment.rounds=2"], "experiment.rounds"),
        // B* chosen on the seeds the report uses would flatter it.
        (
            &[
                "experiment.lr_scales=[2.0]",
                "experiment.tuning_first_seed=0",
            ],
            "experiment.tuning_first_seed",
        ),
        (
            &[
                "experiment.methods=[\"scale-first\"]",
                "experiment.rounds=2",
                "experiment.every=10",
            ],
            "scale-first",
        ),
    ];
    for (sets, key) in cases {
        let set = sets.join(" ");
        let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", *s]).collect();
        let o = quick(dir.path(), &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{set}: {err}");
        assert!(err.contains(key), "{set}: {err}");
        assert!(
            !dir.path().join("base").exists(),
            "{set}: pretrained before refusing"
        );
    }
}

#[test]
fn repeated_jumps_fit_each_segment_on_its_own_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let o = quick(
        dir.path(),
        &[
            "--set",
            "experiment.methods=[\"linear-relex\"]",
            "--set",
            "experiment.rounds=2",
            "--set",
            "experiment.every=10",
            "--set",
            "scheduler.keep_moments=true",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exp = dir.path().join("exp");
    let results: Value =
        serde_json::from_slice(&std::fs::read(exp.join("experiment.json")).unwrap()).unwrap();
    let arms = results["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    let (control, relex) = (&arms[0], &arms[1]);
    assert_eq!(control["later_lambdas"].as_array().unwrap().len(), 0);
    assert_eq!(relex["later_lambdas"].as_array().unwrap().len(), 1);
    let steps: Vec<u64> = relex["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    // One point per validation step: at 30 the accuracy after the second jump replaces the one before it.
    assert_eq!(steps, [0, 10, 20, 30, 40]);
    let k = exp.join("seed-0/k-20");
    // The second segment starts at step 30 from the second jump and has its own trajectory.
    assert!(k.join("linear-relex.round-1/global_step_40").is_dir());
    assert!(k.join("linear-relex/trajectory/index.json").is_file());
    assert!(k.join("linear-relex.round-1.adapter/jump.json").is_file());
    let j: Value = serde_json::from_slice(
        &std::fs::read(k.join("linear-relex.round-1.adapter/jump.json")).unwrap(),
    )
    .unwrap();
    let second = j["accuracy"].as_f64().unwrap();
    assert_eq!(relex["curve"][3]["accuracy"].as_f64().unwrap(), second);
    // λ = 0 is among the candidates, so the chosen jump never scores below no jump on the
    // selection split (the accuracy above is on the validation split, which no choice sees).
    let before = j["chosen"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["lambda"].as_f64() == Some(0.0))
        .unwrap()["score"]
        .as_f64()
        .unwrap();
    assert!(j["chosen"]["score"].as_f64().unwrap() >= before, "{j}");

    // With the moments kept, the control continues exactly as the baseline did.
    let baseline = &results["baselines"][0]["curve"];
    let acc = |c: &Value| -> Vec<(u64, f64)> {
        c.as_array()
            .unwrap()
            .iter()
            .map(|p| (p["step"].as_u64().unwrap(), p["accuracy"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(acc(&control["curve"]), acc(baseline));
    // The jumped adapter starts with the baseline's moments in its first r factors and zeros
    // in the one the jump added (λ = 0: no jump, the adapter and its moments as they were).
    let jumped = relex["lambda"].as_f64().unwrap() != 0.0;
    let opt = |p: &Path| {
        next_model::io::read_safetensors(&p.join("actor/optimizer.safetensors")).unwrap()
    };
    let from = opt(&exp.join("seed-0/baseline/global_step_20"));
    let to = opt(&k.join("linear-relex/global_step_20"));
    assert_eq!(from.len(), to.len());
    for (key, f) in &from {
        let (f, t) = (&f.tensor, &to[key].tensor);
        if key == "step" {
            assert_eq!(f.int64_value(&[0]), t.int64_value(&[0]));
            continue;
        }
        let (fs, ts) = (f.size(), t.size());
        assert_eq!(fs.len(), 2, "{key}");
        let lead = t.narrow(0, 0, fs[0]).narrow(1, 0, fs[1]);
        assert!(lead.equal(f), "{key}: carried moments differ");
        assert_eq!(
            ts[0] > fs[0] || ts[1] > fs[1],
            jumped,
            "{key}: a jump adds a rank, no jump none"
        );
        for d in 0..2 {
            if ts[d] > fs[d] {
                let extra = t.narrow(d as i64, fs[d], ts[d] - fs[d]);
                assert_eq!(
                    extra.abs().max().double_value(&[]),
                    0.0,
                    "{key}: the new factor's moments must start at zero"
                );
            }
        }
    }
}
