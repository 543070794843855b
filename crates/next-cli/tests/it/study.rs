//! `next study --quick` on the shipped study file (configs/study.toml), the CI run of
//! `cargo xtask study --quick`: every regime runs, and the study's report agrees with what each
//! regime measured — B* is the tuning's best scale, regimes at the tuned rate train their arms
//! there, an arm that stops at the target stops at the first validation that reaches it, and
//! the table has one row per regime, arm and jump step.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::next;

fn study_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/study.toml")
}

fn read(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn settings(dir: &Path) -> Value {
    read(&dir.join("settings.json"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The trailing mean over `n` validations of a curve's accuracies, as the report smooths.
fn smoothed(curve: &[Value], n: usize) -> Vec<(u64, f64)> {
    (0..curve.len())
        .map(|i| {
            let w = &curve[i.saturating_sub(n - 1)..=i];
            let mean = w.iter().map(|p| f(&p["accuracy"])).sum::<f64>() / w.len() as f64;
            (curve[i]["step"].as_u64().unwrap(), mean)
        })
        .collect()
}

/// B* as the report defines it: the scale whose tuning runs reach the headline target (a
/// level between the same-LR tuning runs' base and plateau) in the fewest mean steps, ties to
/// the higher final accuracy; a run that never reaches it counts one validation past its end.
fn best_scale(settings: &Value, tuning: &[Value]) -> f64 {
    let e = &settings["experiment"];
    let smooth = e["smooth"].as_u64().unwrap() as usize;
    let t = &settings["trainer"];
    let never = (t["steps"].as_u64().unwrap() + t["val_every"].as_u64().unwrap()) as f64;
    let same: Vec<&Value> = tuning.iter().filter(|b| f(&b["lr_scale"]) == 1.0).collect();
    let n = same.len() as f64;
    let base = same
        .iter()
        .map(|b| f(&b["curve"][0]["accuracy"]))
        .sum::<f64>()
        / n;
    let plateau = same.iter().map(|b| f(&b["target"])).sum::<f64>() / n;
    let level = base + f(&e["headline"]) * (plateau - base);
    let mut scales: Vec<f64> = tuning.iter().map(|b| f(&b["lr_scale"])).collect();
    scales.sort_by(f64::total_cmp);
    scales.dedup();
    let cost = |s: f64| {
        let runs: Vec<&Value> = tuning.iter().filter(|b| f(&b["lr_scale"]) == s).collect();
        let k = runs.len() as f64;
        let steps = runs
            .iter()
            .map(|b| {
                smoothed(b["curve"].as_array().unwrap(), smooth)
                    .into_iter()
                    .find(|p| p.1 >= level)
                    .map_or(never, |p| p.0 as f64)
            })
            .sum::<f64>()
            / k;
        let fin = runs.iter().map(|b| f(&b["target"])).sum::<f64>() / k;
        (s, steps, fin)
    };
    scales
        .into_iter()
        .map(cost)
        .min_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .unwrap()
        .0
}

#[test]
fn quick_study_runs_every_regime_and_its_report_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let base = format!("pretrain.out={}", dir.path().join("base").display());
    let o = next(&[
        "study",
        "--quick",
        "--config",
        study_file().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        &base,
        "--set",
        "model.threads=1",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let study: toml::Value =
        toml::from_str(&std::fs::read_to_string(study_file()).unwrap()).unwrap();
    let regimes: Vec<&str> = study["regime"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(regimes.len() >= 4, "{regimes:?}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(!md.contains("NaN") && !md.contains("inf"), "{md}");
    for name in &regimes {
        let exp = out.join(name);
        let s = settings(&exp);
        let e = &s["experiment"];
        let r = read(&exp.join("experiment.json"));
        // The tuning: every scale on every tuning seed; B* is the scale with the fewest mean
        // steps to the headline target among them.
        let scales = e["lr_scales"].as_array().unwrap();
        let tuning = r["tuning"].as_array().unwrap();
        let tuned = r["tuned_scale"].as_f64();
        if scales.is_empty() {
            assert!(tuning.is_empty() && tuned.is_none(), "{name}");
        } else {
            let with_one = scales.len() + usize::from(!scales.iter().any(|x| f(x) == 1.0));
            assert_eq!(
                tuning.len(),
                with_one * e["tuning_seeds"].as_u64().unwrap() as usize,
                "{name}"
            );
            assert_eq!(tuned, Some(best_scale(&s, tuning)), "{name}");
        }
        // The arms train at B*'s rate when the regime says so, else at the configured one.
        let arm_scale = f(&r["arm_scale"]);
        if e["at_tuned_lr"].as_bool().unwrap() {
            assert_eq!(Some(arm_scale), tuned, "{name}");
            assert!(r["tuned"].as_array().unwrap().is_empty(), "{name}");
        } else {
            assert_eq!(arm_scale, 1.0, "{name}");
        }
        let baselines = r["baselines"].as_array().unwrap();
        assert_eq!(
            baselines.len() as u64,
            e["seeds"].as_u64().unwrap(),
            "{name}"
        );
        for b in baselines {
            assert_eq!(f(&b["lr_scale"]), arm_scale, "{name}");
            let seed = b["seed"].as_u64().unwrap();
            let run = if arm_scale == 1.0 {
                exp.join(format!("seed-{seed}/baseline"))
            } else {
                exp.join(format!("seed-{seed}/baseline-lr{arm_scale}"))
            };
            assert!(run.join("metrics.jsonl").is_file(), "{}", run.display());
            let resolved = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
            let cfg: toml::Value = toml::from_str(&resolved).unwrap();
            let lr = cfg["optim"]["lr"].as_float().unwrap();
            let configured = s["optim"]["lr"].as_f64().unwrap();
            assert!(
                (lr - configured * arm_scale).abs() < 1e-12,
                "{name}: lr {lr}"
            );
        }
        // Stopping at the target: the highest level on the way from base to plateau; an arm
        // stops at its first validation whose smoothed accuracy reaches it, or runs to the end.
        let smooth = e["smooth"].as_u64().unwrap() as usize;
        let steps = s["trainer"]["steps"].as_u64().unwrap();
        let n = baselines.len() as f64;
        let base = baselines
            .iter()
            .map(|b| f(&b["curve"][0]["accuracy"]))
            .sum::<f64>()
            / n;
        let plateau = baselines.iter().map(|b| f(&b["target"])).sum::<f64>() / n;
        let top = e["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .fold(f64::MIN, f64::max);
        let level = base + top * (plateau - base);
        let arms = r["arms"].as_array().unwrap();
        let per_k = 1 + e["methods"].as_array().unwrap().len();
        assert_eq!(
            arms.len(),
            baselines.len() * per_k * e["jump_at"].as_array().unwrap().len(),
            "{name}"
        );
        for a in arms {
            let k = a["jump_at"].as_u64().unwrap();
            let curve = a["curve"].as_array().unwrap();
            let last = curve.last().unwrap()["step"].as_u64().unwrap();
            if e["stop_at_target"].as_bool().unwrap() && a["name"] != "control" {
                let hit = smoothed(curve, smooth)
                    .into_iter()
                    .find(|&(step, acc)| step >= k && acc >= level - 1e-12);
                match hit {
                    Some((step, _)) => assert_eq!(last, step, "{name} {}", a["name"]),
                    None => assert_eq!(last, steps, "{name} {}", a["name"]),
                }
            } else {
                assert_eq!(last, steps, "{name} {}", a["name"]);
            }
            // One table row per regime, jump step and arm.
            let row = format!("| {name} | {k} | {} |", a["name"].as_str().unwrap());
            assert_eq!(
                table.lines().filter(|l| l.starts_with(&row)).count(),
                1,
                "{row}\n{table}"
            );
        }
        // The table's steps to the headline target and the saving against the same-LR control,
        // recomputed here from the curves: paired by seed, 100 x Σ(control − arm) / Σ control;
        // a run that never gets there counts one validation past the end.
        let headline = base + f(&e["headline"]) * (plateau - base);
        let never = (steps + s["trainer"]["val_every"].as_u64().unwrap()) as f64;
        let to_target = |a: &Value| {
            smoothed(a["curve"].as_array().unwrap(), smooth)
                .into_iter()
                .find(|p| p.1 >= headline)
                .map_or(never, |p| p.0 as f64)
        };
        for a in arms.iter().filter(|a| a["name"] != "control") {
            let k = &a["jump_at"];
            let (mut sum_c, mut sum_a, mut n_a) = (0.0, 0.0, 0.0);
            for b in arms
                .iter()
                .filter(|b| b["name"] == a["name"] && b["jump_at"] == *k)
            {
                let control = arms
                    .iter()
                    .find(|c| {
                        c["name"] == "control" && c["jump_at"] == *k && c["seed"] == b["seed"]
                    })
                    .unwrap_or_else(|| panic!("{name}: no control for {b}"));
                sum_c += to_target(control);
                sum_a += to_target(b);
                n_a += 1.0;
            }
            let row = format!("| {name} | {k} | {} |", a["name"].as_str().unwrap());
            let line = table.lines().find(|l| l.starts_with(&row)).unwrap();
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(cells[5], format!("{:.1}", sum_a / n_a), "{line}");
            let saving = format!("{:+.1}%", 100.0 * (sum_c - sum_a) / sum_c);
            assert!(cells[6].starts_with(&saving), "{saving} vs {line}");
        }
        assert!(
            md.contains(&format!("## {name}")),
            "no section for {name}:\n{md}"
        );
        assert!(exp.join("report/report.md").is_file(), "{name}");
    }
    // Each regime's curves are plotted.
    let plots = std::fs::read_dir(out.join("report"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert!(plots >= regimes.len(), "{plots} plots");
}

/// Every regime of the shipped study must fit together as the full study runs it, not only in
/// quick mode (whose overrides can hide a bad horizon or jump step); and a bad study file is
/// refused before anything runs, naming the file and the regime.
#[test]
fn study_settings_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let check = |config: &Path, want: &str| {
        let o = next(&[
            "study",
            "--check",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        if want.is_empty() {
            assert!(o.status.success(), "{stderr}");
        } else {
            assert!(!o.status.success(), "{stderr}");
            assert!(stderr.contains(want), "wanted `{want}` in:\n{stderr}");
        }
        assert!(!out.exists(), "a check must not start the study");
    };
    check(&study_file(), "");
    let experiment = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/experiment.toml");
    let write = |name: &str, regimes: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "experiment = {:?}\n{regimes}",
                experiment.display().to_string()
            ),
        )
        .unwrap();
        p
    };
    let twice = write(
        "twice.toml",
        "[[regime]]\nname = \"a\"\nabout = \"x\"\n[[regime]]\nname = \"a\"\nabout = \"y\"\n",
    );
    check(&twice, "regime `a` is listed twice");
    // The second regime is bad: it is found before the first runs.
    let bad = write(
        "bad.toml",
        "[[regime]]\nname = \"ok\"\nabout = \"x\"\n[[regime]]\nname = \"far\"\nabout = \"y\"\nsets = [\"scheduler.horizon=50\", \"experiment.jump_at=[30]\"]\n",
    );
    check(&bad, "regime far");
    let unknown = write(
        "unknown.toml",
        "[[regime]]\nname = \"a\"\nabout = \"x\"\nsize = 3\n",
    );
    check(&unknown, "size");
}
