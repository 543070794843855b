//! What a jump costs (run by `cargo xtask bench jump`): on the embedded default at K = 30, the
//! extraction, each predictor's fit, and the λ search of 7 candidates, against the RL step and
//! one validation pass measured in the same run. The search is timed two ways: every candidate
//! written as an adapter and scored alone with the model loaded afresh (how it was done before),
//! and all candidates decoded in one batched pass by the engine's scorer. Also one validation
//! pass at each decode batch size (`rollout.max_batch`).
//!
//! Usage: `jump --base DIR --out FILE.json [--k 30]`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use next_predictor::{PredictorKind, Trajectory};
use next_scheduler::jump::extract_run;
use next_scheduler::{Engine, InProcess, ScoreSet};
use next_trainer::TrainConfig;
use next_trajectory::store::Store;
use serde_json::json;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

/// The median seconds of three calls of `f`.
fn median_of_3<T>(mut f: impl FnMut() -> T) -> f64 {
    median((0..3).map(|_| timed(&mut f).1).collect())
}

fn main() {
    let base = PathBuf::from(arg("--base").expect("--base DIR"));
    let out = PathBuf::from(arg("--out").expect("--out FILE"));
    let k: usize = arg("--k").map_or(30, |s| s.parse().expect("--k N"));
    let horizon = 20;
    let grid = [0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0];
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let mut cfg = TrainConfig::default();
    cfg.model.path = base.display().to_string();
    cfg.trainer.steps = 200;
    cfg.trainer.stop_at = k;
    cfg.trainer.val_every = 1000;
    // The search scores on the selection split; at the validation split's size here, so that
    // "7 candidates" compares with "one validation pass" problem for problem.
    cfg.data.select_size = cfg.data.val_size;
    let mut engine = InProcess::new(cfg.clone(), base.clone(), Box::new(|_, _| {}));
    engine.train(&run, k).expect("train");
    let steps: Vec<f64> = next_trainer::metrics::read(&run)
        .expect("metrics")
        .iter()
        .filter(|r| r.step >= 2)
        .filter_map(|r| r.seconds())
        .collect();
    let step_s = median(steps);
    let adapter = next_trainer::checkpoint::adapter_dir(&run, k);

    // One validation pass (1,000 problems, greedy) with the model already loaded.
    let validation_s = median_of_3(|| engine.score(&adapter, ScoreSet::Validation).expect("score"));

    let store = dir.path().join("trajectory");
    let (_, extract_s) = timed(|| extract_run(&run, Some(k), horizon, &store).expect("extract"));
    let trajectory = Trajectory::from_store(&Store::open(&store).expect("store")).expect("read");

    let mut predictors = vec![];
    let mut relex = None;
    for kind in PredictorKind::ALL {
        let (predictions, fit_s) = timed(|| {
            let mut p = kind.build(None);
            p.fit(&trajectory).expect("fit");
            p.predict(&trajectory, horizon, 1).expect("predict")
        });
        if kind == PredictorKind::LinearRelex {
            relex = Some(predictions);
        }
        predictors.push(json!({"predictor": kind.name(), "fit_s": fit_s,
            "jump_s": extract_s + fit_s, "jump_steps": (extract_s + fit_s) / step_s}));
    }
    let predictions = relex.expect("linear-relex predicted");

    // Before: each candidate written as an adapter and scored by a fresh evaluation.
    let (alone, alone_s) = timed(|| {
        grid.iter()
            .map(|&l| {
                let cand = dir.path().join(format!("cand-{l}"));
                let a = if l == 0.0 {
                    adapter.clone()
                } else {
                    next_predictor::extend::write_extended(&adapter, &predictions, l, 1, &cand)
                        .expect("write");
                    cand
                };
                // A fresh engine: the model loaded again, as a separate process would.
                InProcess::new(cfg.clone(), base.clone(), Box::new(|_, _| {}))
                    .score(&a, ScoreSet::Selection)
                    .expect("score")
            })
            .collect::<Vec<_>>()
    });
    // Now: every candidate in one batched pass of the engine's scorer.
    let (batched, batched_s) = timed(|| {
        engine
            .score_jumps(&adapter, &predictions, 1, &grid)
            .expect("score")
    });
    assert_eq!(
        alone, batched,
        "the batched search must score exactly as the candidates alone"
    );
    let mut searches = vec![
        json!({"what": format!("alone, reload per candidate, {} problems", cfg.data.val_size),
               "seconds": alone_s}),
        json!({"what": format!("batched, {} problems", cfg.data.val_size), "seconds": batched_s}),
    ];
    // On the selection split (the scorer loaded beforehand, as an engine keeps it; the median
    // of three, as for the validation pass it is compared with).
    for n in [256, 128] {
        let mut c = cfg.clone();
        c.data.select_size = n;
        let mut e = InProcess::new(c, base.clone(), Box::new(|_, _| {}));
        e.score(&adapter, ScoreSet::Selection).expect("warm up");
        let secs = median_of_3(|| {
            e.score_jumps(&adapter, &predictions, 1, &grid)
                .expect("score")
        });
        searches.push(json!({"what": format!("batched, selection split of {n}"), "seconds": secs}));
    }

    // One validation pass at each decode batch size (rollout.max_batch): a tiny model pays
    // a fixed cost per operation, so small batches cost more per row.
    let mut decode_batches = vec![];
    let mut decode_scores = None;
    for max_batch in [256, 1024, 2048, 4096, 8192] {
        let mut c = cfg.clone();
        c.rollout.max_batch = max_batch;
        let mut e = InProcess::new(c, base.clone(), Box::new(|_, _| {}));
        let score = e.score(&adapter, ScoreSet::Validation).expect("warm up");
        let first = *decode_scores.get_or_insert(score);
        assert_eq!(
            score, first,
            "greedy validation must not depend on the decode batch size"
        );
        let secs = median_of_3(|| e.score(&adapter, ScoreSet::Validation).expect("score"));
        decode_batches.push(json!({"max_batch": max_batch, "validation_s": secs}));
    }

    let report = json!({
        "k": k, "horizon": horizon, "candidates": grid.len(), "problems": cfg.data.val_size,
        "threads": tch::get_num_threads(),
        "rl_step_s": step_s, "validation_s": validation_s, "extract_s": extract_s,
        "searches": searches,
        "decode_batches": decode_batches,
        "predictors": predictors,
        "scores": batched,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).expect("write report");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
