//! One jump's candidates scored in one batched pass equal each candidate written as an adapter
//! and scored alone: the same greedy tokens, the same verdicts, the same scores.

use next_predictor::{PredictorKind, Trajectory};
use next_scheduler::jump::extract_run;
use next_scheduler::Engine;
use next_trainer::train::Scorer;
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

    // Through the engine: the batched override against the trait's default (write, score).
    let batched = e.score_jumps(&adapter, &predictions, 1, &lambdas).unwrap();
    struct Alone<'a>(next_scheduler::InProcess<'a>);
    impl Engine for Alone<'_> {
        fn train(&mut self, run: &std::path::Path, step: usize) -> next_scheduler::Result<()> {
            self.0.train(run, step)
        }
        fn score(
            &mut self,
            adapter: &std::path::Path,
            set: next_scheduler::ScoreSet,
        ) -> next_scheduler::Result<(f64, u64)> {
            self.0.score(adapter, set)
        }
        fn start_from(
            &mut self,
            run: &std::path::Path,
            from: &std::path::Path,
            step: usize,
            adapter: &std::path::Path,
            keep: bool,
        ) -> next_scheduler::Result<()> {
            self.0.start_from(run, from, step, adapter, keep)
        }
        fn set_seed(&mut self, seed: u64) {
            self.0.set_seed(seed)
        }
        fn set_lr_scale(&mut self, scale: f64) {
            self.0.set_lr_scale(scale)
        }
    }
    let alone = Alone(engine(&cfg))
        .score_jumps(&adapter, &predictions, 1, &lambdas)
        .unwrap();
    assert_eq!(batched, alone);
    // The scores differ across λ, so the comparison above is not vacuous.
    assert!(batched.iter().any(|s| s.0 != batched[0].0), "{batched:?}");

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
    let together = scorer.validate_jumps(&adapter, &terms, &lambdas).unwrap();
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
}
