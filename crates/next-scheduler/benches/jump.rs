//! What a jump costs (run by `cargo xtask bench jump`): on the embedded default at K = 30, the
//! extraction, each predictor's fit, and the λ search of 7 candidates, against the RL step and
//! one validation pass measured in the same run. The search is timed two ways: every candidate
//! written as an adapter and scored alone with the model loaded afresh (how it was done before),
//! and all candidates decoded in one batched pass by the engine's scorer; on the selection
//! split, the same for the factor-space default (two-point-factor), one candidate at a time by
//! the loaded scorer against batched. Also one validation pass at each decode batch size
//! (`rollout.max_batch`). Last, what a smaller selection split costs in the choice of λ: at
//! K = 30, 40, 50 and for each merged-space linear predictor and `next`, the 7 candidates are
//! scored on 16 disjoint 64-problem chunks of the test split and on the 1,000-problem
//! validation split; λ chosen on n selection problems (n = 64 ... 512, every disjoint group of
//! chunks) loses `regret` validation accuracy against the best candidate.
//!
//! Usage: `jump --base DIR --out FILE.json [--k 30]`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use next_predictor::factor::{self, FactorKind, FactorSeries};
use next_predictor::{PredictorKind, Trajectory};
use next_scheduler::jump::{extract_run, Predicted, Source};
use next_scheduler::{score_alone, Engine, InProcess, ScoreSet};
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
    let fit = |kind: PredictorKind, predictors: &mut Vec<serde_json::Value>| {
        let (predictions, fit_s) = timed(|| {
            let mut p = kind.build(None);
            p.fit(&trajectory).expect("fit");
            p.predict(&trajectory, horizon, 1).expect("predict")
        });
        predictors.push(json!({"predictor": kind.name(), "fit_s": fit_s,
            "jump_s": extract_s + fit_s, "jump_steps": (extract_s + fit_s) / step_s}));
        (predictions, fit_s)
    };
    // `next-reference` is fitted last, after every timed pass: once its networks have trained
    // (side by side on rayon's threads, or on two libtorch threads; not on one thread alone),
    // this process's libtorch decodes 1.4-2.3x slower for the rest of its life (found on
    // 2026-11-30; the cause is not known yet).
    for kind in PredictorKind::ALL {
        if kind != PredictorKind::NextReference {
            let fitted = fit(kind, &mut predictors);
            if kind == PredictorKind::LinearRelex {
                relex = Some(fitted);
            }
        }
    }
    let (predictions, relex_fit_s) = relex.expect("linear-relex predicted");
    let relex = Predicted::Merged(predictions.clone());
    // Factor-space methods read the checkpoints' factors instead of the store; two-point-factor
    // is `next run`'s default. The run loop extracts the store for every method, so it counts.
    let (factor_jump, factor_fit_s) = timed(|| {
        let source = Source::of_run(&run, Some(k), &store).expect("source");
        let series =
            FactorSeries::read(&source.checkpoints, source.initial.as_deref()).expect("factors");
        Predicted::Factor(
            factor::predict(FactorKind::TwoPointFactor, &series, horizon).expect("predict"),
        )
    });
    predictors.push(
        json!({"predictor": FactorKind::TwoPointFactor.name(), "fit_s": factor_fit_s,
        "jump_s": extract_s + factor_fit_s, "jump_steps": (extract_s + factor_fit_s) / step_s}),
    );

    // On the selection split (the scorer loaded beforehand, as an engine keeps it; the median
    // of three, as for the validation pass it is compared with), and the seconds of the whole
    // jump (extraction, fit, search on the default 128 problems) per method.
    let mut searches = vec![];
    let mut whole = vec![];
    for n in [256, 128] {
        let mut c = cfg.clone();
        c.data.select_size = n;
        let mut e = InProcess::new(c, base.clone(), Box::new(|_, _| {}));
        e.score(&adapter, ScoreSet::Selection).expect("warm up");
        let secs = median_of_3(|| e.score_jumps(&adapter, &relex, 1, &grid).expect("score"));
        searches.push(json!({"what": format!("batched, selection split of {n}"), "seconds": secs}));
        // Two-point-factor: its candidates written as adapters and scored one at a time by the
        // loaded scorer (how `next run` searched before), and batched.
        let mut scores = None;
        let alone_s = median_of_3(|| {
            scores = Some(score_alone(&mut e, &adapter, &factor_jump, 1, &grid).expect("score"))
        });
        let mut batched = None;
        let batched_s = median_of_3(|| {
            batched = Some(
                e.score_jumps(&adapter, &factor_jump, 1, &grid)
                    .expect("score"),
            )
        });
        assert_eq!(
            scores, batched,
            "the batched factor-space search must score as the candidates alone"
        );
        searches.push(
            json!({"what": format!("two-point-factor, one at a time, selection split of {n}"),
            "seconds": alone_s}),
        );
        searches.push(
            json!({"what": format!("two-point-factor, batched, selection split of {n}"),
            "seconds": batched_s}),
        );
        if n == 128 {
            for (method, s) in [
                (
                    PredictorKind::LinearRelex.name(),
                    extract_s + relex_fit_s + secs,
                ),
                (
                    FactorKind::TwoPointFactor.name(),
                    extract_s + factor_fit_s + batched_s,
                ),
            ] {
                whole.push(json!({"predictor": method, "seconds": s, "rl_steps": s / step_s}));
            }
        }
    }
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
            .score_jumps(&adapter, &relex, 1, &grid)
            .expect("score")
    });
    assert_eq!(
        alone, batched,
        "the batched search must score exactly as the candidates alone"
    );
    searches.push(
        json!({"what": format!("alone, reload per candidate, {} problems", cfg.data.val_size),
               "seconds": alone_s}),
    );
    searches.push(
        json!({"what": format!("batched, {} problems", cfg.data.val_size), "seconds": batched_s}),
    );

    // One validation pass at each decode batch size (rollout.max_batch): a tiny model pays a
    // fixed cost per operation, so very small batches cost more per row, and very large ones
    // fall out of the caches.
    let mut decode_batches = vec![];
    let mut decode_scores = None;
    for max_batch in [128, 256, 512, 1024, 2048, 4096] {
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

    fit(PredictorKind::NextReference, &mut predictors);

    let selection = selection_regret(
        &mut engine,
        &run,
        &cfg,
        &base,
        k,
        horizon,
        &grid,
        dir.path(),
    );

    let report = json!({
        "k": k, "horizon": horizon, "candidates": grid.len(), "problems": cfg.data.val_size,
        "threads": tch::get_num_threads(),
        "rl_step_s": step_s, "validation_s": validation_s, "extract_s": extract_s,
        "searches": searches,
        "whole_jump_128": whole,
        "decode_batches": decode_batches,
        "predictors": predictors,
        "scores": batched,
        "selection": selection,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).expect("write report");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// How much validation accuracy λ chosen on fewer selection problems gives up (see the module
/// docs): per selection size, the mean and worst regret over every jump situation and disjoint
/// selection, and how often the choice differs from the one on all 1,024 problems.
#[allow(clippy::too_many_arguments)]
fn selection_regret(
    engine: &mut InProcess,
    run: &std::path::Path,
    cfg: &TrainConfig,
    base: &std::path::Path,
    k: usize,
    horizon: u64,
    grid: &[f64],
    scratch: &std::path::Path,
) -> serde_json::Value {
    const CHUNK: usize = 64;
    const CHUNKS: usize = 16;
    // K and later (the predictors need three checkpoints, saved every 10 steps).
    let ks = [k, k + 10, k + 20];
    engine.train(run, k + 20).expect("train on");
    let write = |name: &str, rows: &[next_trainer::data::Row]| {
        let path = scratch.join(name);
        let text: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        std::fs::write(&path, text).expect("write rows");
        path
    };
    // A scorer whose selection split is `rows` (the model loaded once, as an engine keeps it).
    let scorer = |path: std::path::PathBuf, n: usize| {
        let mut c = cfg.clone();
        c.data.select = path.display().to_string();
        c.data.select_size = n;
        InProcess::new(c, base.to_path_buf(), Box::new(|_, _| {}))
    };
    let pool = next_trainer::tasks::generate(
        cfg.data.task,
        next_trainer::tasks::Split::Test,
        CHUNK * CHUNKS,
        cfg.data.seed,
    )
    .expect("test split");
    let mut chunks: Vec<InProcess> = pool
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, rows)| scorer(write(&format!("chunk-{i}.jsonl"), rows), CHUNK))
        .collect();
    let (_, val_rows, _) = next_trainer::data::load_splits(&cfg.data).expect("validation split");
    let mut truth_scorer = scorer(write("validation.jsonl", &val_rows), val_rows.len());

    // Per situation: the validation score of each λ, and each chunk's.
    let mut situations = vec![];
    for &at in &ks {
        let store = scratch.join(format!("trajectory-{at}"));
        extract_run(run, Some(at), horizon, &store).expect("extract");
        let trajectory =
            Trajectory::from_store(&Store::open(&store).expect("store")).expect("read");
        let adapter = next_trainer::checkpoint::adapter_dir(run, at);
        for kind in [
            PredictorKind::TwoPoint,
            PredictorKind::LinearAlpharl,
            PredictorKind::LinearRelex,
            PredictorKind::Next,
        ] {
            let mut p = kind.build(None);
            p.fit(&trajectory).expect("fit");
            let predicted = Predicted::Merged(p.predict(&trajectory, horizon, 1).expect("predict"));
            let mut score = |e: &mut InProcess| -> Vec<f64> {
                e.score_jumps(&adapter, &predicted, 1, grid)
                    .expect("score")
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            };
            let truth = score(&mut truth_scorer);
            let per_chunk: Vec<Vec<f64>> = chunks.iter_mut().map(&mut score).collect();
            situations.push((at, kind, truth, per_chunk));
        }
    }

    // The choice on a set of chunks: the best mean score, ties to the smaller jump.
    let choose = |chunk_scores: &[&Vec<f64>]| -> usize {
        let cands: Vec<next_predictor::search::Candidate> = grid
            .iter()
            .enumerate()
            .map(|(j, &lambda)| next_predictor::search::Candidate {
                lambda,
                score: chunk_scores.iter().map(|c| c[j]).sum::<f64>(),
                seconds: 0.0,
                tokens: 0,
            })
            .collect();
        let best = next_predictor::search::best(&cands).expect("candidates");
        grid.iter()
            .position(|&l| l == best.lambda)
            .expect("on the grid")
    };
    let mut sizes = vec![];
    for per in [1, 2, 4, 8, 16] {
        let (mut regrets, mut differs) = (vec![], 0usize);
        for (_, _, truth, per_chunk) in &situations {
            let all: Vec<&Vec<f64>> = per_chunk.iter().collect();
            let reference = choose(&all);
            let best = truth.iter().cloned().fold(f64::MIN, f64::max);
            for group in all.chunks(per) {
                let j = choose(group);
                regrets.push(best - truth[j]);
                differs += usize::from(j != reference);
            }
        }
        let n = regrets.len();
        sizes.push(json!({
            "problems": per * CHUNK,
            "choices": n,
            "mean_regret": regrets.iter().sum::<f64>() / n as f64,
            "worst_regret": regrets.iter().cloned().fold(0.0, f64::max),
            "differs_from_all": differs as f64 / n as f64,
        }));
    }
    let situations: Vec<_> = situations
        .iter()
        .map(|(at, kind, truth, _)| json!({"k": at, "predictor": kind.name(), "validation": truth}))
        .collect();
    json!({"grid": grid, "sizes": sizes, "situations": situations})
}
