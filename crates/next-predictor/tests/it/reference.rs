//! On a LoRA run extracted from disk: NExt's reference MLP (one network per vector length,
//! training lowers the L1 loss, unit-norm and seed-deterministic predictions, only its target
//! gap), and every predictor saved and loaded back predicting the same, refusing a trajectory
//! from another run or stretch.

use std::path::Path;

use nalgebra::DMatrix;
use next_predictor::mlp::NextReference;
use next_predictor::{Trajectory, TrajectoryPredictor};
use next_trajectory::extract::{extract, Input, Options};
use next_trajectory::store::Store;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A verl-layout LoRA run (r 2) of two matrices drifting along a fixed direction plus noise.
fn run(dir: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut rand =
        |r: usize, c: usize, s: f64| DMatrix::from_fn(r, c, |_, _| rng.random_range(-s..s));
    let shapes = [("q_proj", 16, 16), ("down_proj", 16, 24)];
    let drift: Vec<(DMatrix<f64>, DMatrix<f64>)> = shapes
        .iter()
        .map(|(_, o, i)| (rand(*o, 2, 0.1), rand(2, *i, 0.5)))
        .collect();
    for step in 1..=10u64 {
        let factors: Vec<(String, DMatrix<f64>, DMatrix<f64>)> = shapes
            .iter()
            .zip(&drift)
            .map(|((n, o, i), (b, a))| {
                (
                    format!("base_model.model.model.layers.0.mlp.{n}"),
                    b * (step as f64) + rand(*o, 2, 0.01),
                    a + rand(2, *i, 0.01),
                )
            })
            .collect();
        let refs: Vec<(String, &DMatrix<f64>, &DMatrix<f64>)> =
            factors.iter().map(|(n, b, a)| (n.clone(), b, a)).collect();
        let cfg = serde_json::json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4});
        next_trajectory::adapter::write(
            &dir.join(format!("global_step_{step}/actor/lora_adapter")),
            &cfg,
            &refs,
        )
        .unwrap();
    }
}

/// The run written under `dir` and extracted with target gap 3.
fn extracted(dir: &Path) -> Trajectory {
    run(&dir.join("run"));
    let store_dir = dir.join("store");
    let input = Input::Run {
        dir: dir.join("run"),
        format: None,
    };
    extract(&input, &store_dir, &gap3(), &|_, _| {}).unwrap();
    Trajectory::from_store(&Store::open(&store_dir).unwrap()).unwrap()
}

fn gap3() -> Options {
    Options {
        target_gap: Some(3),
        ..Options::default()
    }
}

fn fitted(traj: &Trajectory, seed: u64) -> NextReference {
    // The published settings learn slowly (lr 2e-5); a larger rate shows the mechanics here.
    let mut p = NextReference::default();
    (p.epochs, p.lr, p.lr_min, p.seed) = (300, 1e-3, 1e-4, seed);
    p.fit(traj).unwrap();
    p
}

#[test]
fn reference_trains_per_length_group_and_predicts_unit_factors() {
    let dir = tempfile::tempdir().unwrap();
    let traj = extracted(dir.path());
    let p = fitted(&traj, 1);
    let state = p.state();
    let groups = state["groups"].as_array().unwrap();
    let lengths: Vec<u64> = groups
        .iter()
        .map(|g| g["length"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lengths,
        [1, 16, 24],
        "σ's, the 16-long u's and v's, the 24-long v's"
    );
    for g in groups {
        assert!(
            g["last_loss"].as_f64().unwrap() < g["first_loss"].as_f64().unwrap(),
            "{g}"
        );
    }
    let pred = p.predict(&traj, 3, 1).unwrap();
    assert_eq!(pred.len(), 2);
    for pr in &pred {
        let (s, u, v) = &pr.terms[0];
        assert!(*s >= 0.0 && (u.norm() - 1.0).abs() < 1e-6 && (v.norm() - 1.0).abs() < 1e-6);
    }
    assert_eq!(
        fitted(&traj, 1).predict(&traj, 3, 1).unwrap(),
        pred,
        "same seed, same prediction"
    );
    let err = p.predict(&traj, 5, 1).unwrap_err().to_string();
    assert!(err.contains("target gap") && err.contains('3'), "{err}");
}

#[test]
fn fitted_predictors_round_trip_and_refuse_other_trajectories() {
    let dir = tempfile::tempdir().unwrap();
    let traj = extracted(dir.path());
    // The same checkpoints but the last: another stretch of the trajectory.
    let short_dir = dir.path().join("short");
    let list: Vec<next_trajectory::layout::Checkpoint> = (1..=9)
        .map(|s| next_trajectory::layout::Checkpoint {
            step: s,
            dir: dir
                .path()
                .join(format!("run/global_step_{s}/actor/lora_adapter")),
        })
        .collect();
    extract(&Input::List(list), &short_dir, &gap3(), &|_, _| {}).unwrap();
    let short = Trajectory::from_store(&Store::open(&short_dir).unwrap()).unwrap();
    let mut other = traj.clone();
    other.series[0].module = "base_model.model.model.layers.9.mlp.q_proj".into();
    for kind in next_predictor::PredictorKind::ALL {
        let name = kind.name();
        let mut p = kind.build(None);
        p.fit(&traj).unwrap();
        let saved = dir.path().join(format!("fitted-{name}"));
        next_predictor::save_fitted(p.as_ref(), None, &traj, &saved).unwrap();
        let back = next_predictor::load_fitted(&saved, &traj).unwrap();
        assert_eq!(back.name(), name);
        assert_eq!(
            back.predict(&traj, 3, 1).unwrap(),
            p.predict(&traj, 3, 1).unwrap(),
            "{name}"
        );
        let err = next_predictor::load_fitted(&saved, &short)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("refit"), "{name}: {err}");
        let err = next_predictor::load_fitted(&saved, &other)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("another run or model"), "{name}: {err}");
    }
}
