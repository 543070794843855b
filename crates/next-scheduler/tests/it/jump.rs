//! One jump's candidates scored in one batched pass equal each candidate written as an adapter
//! and scored alone: the same greedy tokens, the same verdicts, the same scores (merged-space
//! jumps and factor-space ones).

use next_predictor::factor::{self, FactorKind, FactorSeries};
use next_predictor::{PredictorKind, Trajectory};
use std::path::Path;

use next_scheduler::jump::{checkpoints, extract_run, Predicted};
use next_scheduler::{score_alone, Engine, InProcess};
use next_trainer::train::{Jump, Scorer};
use next_trajectory::store::Store;

use crate::scheduler::{engine, train_config};

#[test]
fn batched_candidates_equal_candidates_scored_alone() {
    let cfg = train_config();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut e = engine(&cfg);
    e.train(&run, 6).unwrap();
    let store_dir = run.join("trajectory");
    extract_run(&run, None, 2, &store_dir).unwrap();
    let trajectory = Trajectory::from_store(&Store::open(&store_dir).unwrap()).unwrap();
    let mut p = PredictorKind::TwoPoint.build(None);
    p.fit(&trajectory).unwrap();
    let predictions = p.predict(&trajectory, 2, 1).unwrap();
    let adapter = next_trainer::checkpoint::adapter_dir(&run, 6);
    let lambdas = [0.0, 1.0, 10.0, 50.0];

    let mut alone = engine(&cfg);
    let predicted = Predicted::Merged(predictions.clone());
    batched_equals_alone(&mut e, &mut alone, &adapter, &predicted, 1, &lambdas);

    // Token for token: each row's greedy response and verdict.
    let mut scorer = Scorer::new(
        &cfg,
        std::path::Path::new(&cfg.model.path),
        next_scheduler::ScoreSet::Selection,
        next_trainer::train::verifiers(&cfg).unwrap(),
    )
    .unwrap();
    let terms: Vec<_> = predictions
        .iter()
        .map(|p| {
            let m = p
                .module
                .strip_prefix("base_model.model.")
                .unwrap()
                .to_string();
            let t = p
                .terms
                .iter()
                .map(|(s, u, v)| (*s, u.as_slice().to_vec(), v.as_slice().to_vec()))
                .collect();
            (m, t)
        })
        .collect();
    let together = scorer
        .validate_jumps(&adapter, Jump::Added(&terms), &lambdas)
        .unwrap();
    for (l, v) in lambdas.iter().zip(&together) {
        let cand = dir.path().join(format!("candidate-{l}"));
        next_predictor::extend::write_extended(&adapter, &predictions, *l, 1, &cand).unwrap();
        let single = scorer.validate(Some(&cand)).unwrap();
        assert_eq!(v.samples.len(), single.samples.len());
        for (a, b) in v.samples.iter().zip(&single.samples) {
            assert_eq!(a.prompt, b.prompt);
            assert_eq!(a.response_ids, b.response_ids, "λ {l}");
            assert_eq!(a.verdict, b.verdict, "λ {l}");
        }
    }

    // Factor-space candidates (next run's default method and scale-first) on the same run.
    let initial = next_trainer::checkpoint::initial_adapter(&run);
    let initial = initial.is_dir().then_some(initial);
    let series = FactorSeries::read(&checkpoints(&run, None).unwrap(), initial.as_deref()).unwrap();
    let lambdas = [0.0, 1.0, 4.0, 16.0];
    // Two-point-factor continues from the adapter; scale-first's line starts elsewhere, so
    // rows with λ = 0 must keep the adapter.
    for kind in [FactorKind::TwoPointFactor, FactorKind::ScaleFirst] {
        let predicted = Predicted::Factor(factor::predict(kind, &series, 4).unwrap());
        batched_equals_alone(&mut e, &mut alone, &adapter, &predicted, 1, &lambdas);
    }
}

/// Scores the candidates of `predicted` through `e` (all in one batched pass) and through
/// [`score_alone`] on `alone` (each written as an adapter and scored by itself): the same
/// scores and tokens, and not all the same score.
fn batched_equals_alone(
    e: &mut InProcess,
    alone: &mut InProcess,
    adapter: &Path,
    predicted: &Predicted,
    rank: usize,
    lambdas: &[f64],
) {
    let batched = e.score_jumps(adapter, predicted, rank, lambdas).unwrap();
    let one_by_one = score_alone(alone, adapter, predicted, rank, lambdas).unwrap();
    assert_eq!(batched, one_by_one);
    assert!(batched.iter().any(|s| s.0 != batched[0].0), "{batched:?}");
}
