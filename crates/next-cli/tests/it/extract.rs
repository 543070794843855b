//! `next extract` / `next trajectory analyze` / `next extend` end to end: PEFT-written verl and
//! TRL runs read with the right steps, scaling and shapes (σ1 against PEFT's own merged delta),
//! this project's runs extracted incrementally as training goes on, and extended adapters that
//! PEFT loads and merges to exactly the original plus λ times the prediction.

use std::path::Path;

use next_model::testing::{hf_model, reference, rust_model};
use next_trajectory::layout::Format;
use next_trajectory::store::{Kind, Store};
use serde_json::Value;

use crate::{next, ok};

/// Writes a PEFT run in `layout`, extracts it, and compares every global record with PEFT;
/// returns (the temp dir, the model dir, the run dir, the store dir).
fn check_peft_run(
    layout: &str,
    extra: &[&str],
    format: Format,
) -> (
    tempfile::TempDir,
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let model = hf_model("llama", false, true, 5);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec![
        "peft-run",
        "--model",
        model.path().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--layout",
        layout,
    ];
    args.extend(extra);
    let expected: Value = serde_json::from_str(&reference(&args)).unwrap();
    let store_dir = dir.path().join("store");
    ok(next(&[
        "extract",
        "--run",
        run.to_str().unwrap(),
        "--out",
        store_dir.to_str().unwrap(),
        "--target-gap",
        "10",
    ]));
    let store = Store::open(&store_dir).unwrap();
    assert_eq!(store.index.format, format);
    assert_eq!(
        store
            .index
            .sources
            .iter()
            .map(|s| s.step)
            .collect::<Vec<_>>(),
        vec![10, 20, 30]
    );
    let steps = expected.as_object().unwrap();
    let first = steps["10"].as_object().unwrap();
    let scaling = first.values().next().unwrap()["scaling"].as_f64().unwrap();
    assert!((store.index.scaling.unwrap() - scaling).abs() < 1e-12);
    assert_eq!(store.index.modules.len(), first.len());
    for m in &store.index.modules {
        let shape = &first[&m.name]["shape"];
        assert_eq!(
            (m.out, m.inp),
            (
                shape[0].as_u64().unwrap() as usize,
                shape[1].as_u64().unwrap() as usize
            ),
            "{}",
            m.name
        );
    }
    let mut checked = 0;
    for r in store.records.iter().filter(|r| r.kind == Kind::Global) {
        let want = &steps[&r.step.to_string()][&store.index.modules[r.module].name];
        let (s, f) = (
            want["sigma1"].as_f64().unwrap(),
            want["frobenius_sq"].as_f64().unwrap(),
        );
        assert!(
            (r.sigma[0] - s).abs() <= 1e-6 * s,
            "{} step {}: σ1 {} vs PEFT {s}",
            store.index.modules[r.module].name,
            r.step,
            r.sigma[0]
        );
        assert!((r.frobenius_sq - f).abs() <= 1e-6 * f);
        checked += 1;
    }
    assert_eq!(checked, 3 * first.len());
    // Local and target records exist where the gaps allow: local at every step (step 10
    // against the base), target at 10 and 20.
    let count = |k: Kind| store.records.iter().filter(|r| r.kind == k).count();
    assert_eq!(count(Kind::Local), 3 * first.len());
    assert_eq!(count(Kind::Target), 2 * first.len());
    (dir, model, run, store_dir)
}

#[test]
fn peft_written_verl_run_is_read_and_extended() {
    let (dir, model, run, store) =
        check_peft_run("verl", &["--r", "4", "--alpha", "8"], Format::Verl);
    for (predictor, lambda) in [("linear-relex", "2.0"), ("two-point", "0.5")] {
        let out = dir.path().join(format!("extended-{predictor}"));
        ok(next(&[
            "extend",
            "--store",
            store.to_str().unwrap(),
            "--predictor",
            predictor,
            "--lambda",
            lambda,
            "--out",
            out.to_str().unwrap(),
        ]));
        let check: Value = serde_json::from_str(&reference(&[
            "extended-check",
            "--model",
            model.path().to_str().unwrap(),
            "--adapter",
            run.join("global_step_30/actor/lora_adapter")
                .to_str()
                .unwrap(),
            "--extended",
            out.to_str().unwrap(),
            "--lam",
            lambda,
        ]))
        .unwrap();
        assert_eq!(check["r"], 5, "{check}");
        assert_eq!(check["jumped"], check["modules"], "{check}");
        assert!(
            check["max_abs_diff"].as_f64().unwrap() < 1e-5,
            "{predictor}: {check}"
        );
    }
}

#[test]
fn peft_written_trl_run_is_read_with_rslora_in_bf16() {
    check_peft_run(
        "trl",
        &[
            "--r",
            "8",
            "--alpha",
            "16",
            "--rslora",
            "--dtype",
            "bf16",
            "--targets",
            "q_proj,v_proj,down_proj",
        ],
        Format::Trl,
    );
}

fn train(model: &Path, run: &Path, steps: u32) {
    let dir = run.parent().unwrap();
    let cfg = dir.join("train.toml");
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
val_size = 8
[rollout]
n = 4
max_new_tokens = 4
[trainer]
steps = {steps}
prompts_per_step = 2
micro_batch = 8
save_every = 2
val_every = 100
seed = 1
"#,
            model.display()
        ),
    )
    .unwrap();
    ok(next(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]));
}

#[test]
fn own_runs_extract_incrementally_and_analyze() {
    let model = rust_model(41);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    train(model.path(), &run, 6);
    let extract = || {
        let out = next(&["extract", "--run", run_s, "--target-gap", "4"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    };
    let first = extract();
    let store = Store::open(&run.join("trajectory")).unwrap();
    assert_eq!(store.index.format, Format::Next);
    let modules = store.index.modules.len();
    // Steps 2, 4, 6: 3 global + 3 local + 1 target (2 -> 6) per module.
    assert_eq!(store.records.len(), 7 * modules, "{first}");
    assert!(extract().contains(" 0 new records"));

    // Training goes on in the same run; only what the new checkpoints allow is added.
    train(model.path(), &run, 10);
    let again = extract();
    let grown = Store::open(&run.join("trajectory")).unwrap();
    // New: global + local at 8 and 10, targets 4 -> 8 and 6 -> 10.
    assert!(
        again.contains(&format!(" {} new records", 6 * modules)),
        "{again}"
    );
    assert_eq!(grown.records[..store.records.len()], store.records[..]);
    // The same as extracting everything at once.
    let fresh = dir.path().join("fresh");
    ok(next(&[
        "extract",
        "--run",
        run_s,
        "--target-gap",
        "4",
        "--out",
        fresh.to_str().unwrap(),
    ]));
    let fresh = Store::open(&fresh).unwrap();
    let mut a = grown.records.clone();
    let mut b = fresh.records.clone();
    a.sort_by_key(|r| (r.step, r.module, r.kind));
    b.sort_by_key(|r| (r.step, r.module, r.kind));
    assert_eq!(a, b);

    // A store made with other gaps is not silently mixed.
    let out = next(&["extract", "--run", run_s, "--target-gap", "6"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("target gap"));

    // Jump from the last checkpoint and score before and after with the task's verifier.
    let x = dir.path().join("extended");
    let scores: Value = serde_json::from_str(&ok(next(&[
        "extend",
        "--run",
        run_s,
        "--predictor",
        "linear-alpharl",
        "--lambda",
        "1.5",
        "--out",
        x.to_str().unwrap(),
        "--eval",
    ])))
    .unwrap();
    for k in ["before", "after"] {
        let v = scores[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{scores}");
    }
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(x.join("extend.json")).unwrap()).unwrap();
    assert_eq!(meta["from_step"], 10);
    assert_eq!(meta["horizon"], 4);

    // Fitted once, used later: the same adapter as fitting in place.
    let fitted = dir.path().join("fitted");
    ok(next(&[
        "fit",
        "--run",
        run_s,
        "--predictor",
        "linear-alpharl",
        "--out",
        fitted.to_str().unwrap(),
    ]));
    let y = dir.path().join("extended-fitted");
    ok(next(&[
        "extend",
        "--run",
        run_s,
        "--fitted",
        fitted.to_str().unwrap(),
        "--lambda",
        "1.5",
        "--out",
        y.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(y.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(x.join("adapter_model.safetensors")).unwrap()
    );

    // λ chosen on the validation set, against no jump; every candidate recorded.
    let chosen = dir.path().join("chosen");
    ok(next(&[
        "extend",
        "--run",
        run_s,
        "--predictor",
        "linear-relex",
        "--search",
        "grid",
        "--grid",
        "0.5,1",
        "--out",
        chosen.to_str().unwrap(),
    ]));
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(chosen.join("extend.json")).unwrap())
            .unwrap();
    let cands = meta["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3, "{meta}");
    let top = cands
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let chosen_score = cands
        .iter()
        .find(|c| c["lambda"] == meta["lambda"])
        .unwrap()["score"]
        .as_f64()
        .unwrap();
    assert_eq!(chosen_score, top);
    assert!(meta["search_tokens"].as_u64().unwrap() > 0);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".lambda-search")
        })
        .count();
    assert_eq!(leftovers, 0, "scratch candidates are removed");

    let bad = next(&[
        "extend",
        "--run",
        run_s,
        "--predictor",
        "two-point",
        "--lambda",
        "NaN",
        "--out",
        dir.path().join("nan").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("finite"));

    let table = ok(next(&["trajectory", "analyze", "--run", run_s]));
    assert!(
        table.contains("self_attn.q_proj") && table.contains("mean"),
        "{table}"
    );
    for f in ["energy.svg", "direction_cos.svg", "sigma1.svg"] {
        assert!(run.join("report").join(f).is_file(), "{f}");
    }
    let json = ok(next(&["trajectory", "analyze", "--run", run_s, "--json"]));
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), grown.records.len());
    for l in &lines {
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["module", "step", "kind", "sigma1", "energy"]);
        assert!(l["module"]
            .as_str()
            .unwrap()
            .starts_with("base_model.model.model.layers."));
        let e = l["energy"].as_f64().unwrap();
        assert!((0.0..=1.0 + 1e-9).contains(&e));
    }
}

#[test]
fn bad_runs_exit_non_zero_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["extract", "--run", "/nonexistent/run"],
            "not a directory",
        ),
        (vec!["extract", "--run", d], "holds no checkpoints"),
        (
            vec!["extract", "--checkpoint", "ten=/x", "--out", d],
            "not a step number",
        ),
        (
            vec!["trajectory", "analyze", "--run", d],
            "no trajectory store",
        ),
    ];
    for (args, want) in cases {
        let out = next(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // An unknown format is clap's to refuse (exit 2), naming the ones it takes.
    let out = next(&["extract", "--run", d, "--format", "gguf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'gguf'") && err.contains("auto, next, verl, trl, full"),
        "{err}"
    );
}
