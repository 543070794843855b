//! The predict-extend loop on a tiny model: a deterministic decision trace (insta snapshot), a
//! run interrupted in its extend phase resumes there and ends where an uninterrupted one does,
//! and bad plans are refused.

use std::path::Path;

use next_predictor::PredictorKind;
use next_scheduler::{run, Engine, InProcess, SchedulerSection, SearchKind, State};
use next_trainer::config::TrainConfig;

pub fn train_config() -> TrainConfig {
    let mut c = next_trainer::testing::config();
    c.data.train_size = 100;
    c.trainer.steps = 12;
    c.trainer.prompts_per_step = 2;
    c.trainer.micro_batch = 8;
    c.trainer.save_every = 2;
    c.trainer.seed = 1;
    c
}

fn plan() -> SchedulerSection {
    SchedulerSection {
        segment_steps: 6,
        rounds: 1,
        predictor: next_predictor::Method::Merged(PredictorKind::TwoPoint),
        horizon: 2,
        search: SearchKind::Grid,
        grid: vec![1.0, 10.0, 50.0],
        ..SchedulerSection::default()
    }
}

pub fn engine(cfg: &TrainConfig) -> InProcess<'static> {
    InProcess::new(
        cfg.clone(),
        cfg.model.path.clone().into(),
        Box::new(|_, _| {}),
    )
}

/// The state without timings: every candidate's λ and score, and the λ chosen. Exact on one
/// CPU; scores differ in the last digits between CPUs (their float kernels differ), so only
/// [`structure`] is pinned in a snapshot.
fn trace(state: &State) -> String {
    let mut s = structure(state);
    for d in &state.decisions {
        for (l, score) in &d.candidates {
            s.push_str(&format!("  λ {l:<4} validation {score:.4}\n"));
        }
        s.push_str(&format!("  chosen λ {}\n", d.lambda));
    }
    s
}

/// What the loop decided to do, independent of the values it measured: the phase, and per
/// jump its step, predictor, horizon and the λ scored in order.
fn structure(state: &State) -> String {
    let mut s = format!("round {} phase {:?}\n", state.round, state.phase);
    for d in &state.decisions {
        s.push_str(&format!(
            "round {} from step {} predictor {} horizon {}\n",
            d.round, d.from_step, d.predictor, d.horizon
        ));
        let lambdas: Vec<String> = d.candidates.iter().map(|(l, _)| l.to_string()).collect();
        s.push_str(&format!("  λ scored: {}\n", lambdas.join(", ")));
    }
    s
}

fn final_adapter(run_dir: &Path) -> Vec<u8> {
    std::fs::read(
        run_dir.join("segment-1/global_step_12/actor/lora_adapter/adapter_model.safetensors"),
    )
    .unwrap()
}

#[test]
fn decision_trace_is_deterministic() {
    let cfg = train_config();
    let dir = tempfile::tempdir().unwrap();
    let state = run(&mut engine(&cfg), &plan(), dir.path(), 12, 2, &mut |_| {}).unwrap();
    insta::assert_snapshot!(structure(&state));
    // The chosen λ is the best score, ties going to the smaller jump; scores are accuracies.
    let d = &state.decisions[0];
    let best = d
        .candidates
        .iter()
        .copied()
        .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.abs().total_cmp(&x.0.abs())))
        .unwrap();
    assert_eq!(d.lambda, best.0, "{}", trace(&state));
    assert!(d.candidates.iter().all(|c| (0.0..=1.0).contains(&c.1)));
    // Deterministic on this CPU: a second run decides and measures exactly the same.
    let again = tempfile::tempdir().unwrap();
    let state2 = run(&mut engine(&cfg), &plan(), again.path(), 12, 2, &mut |_| {}).unwrap();
    assert_eq!(trace(&state2), trace(&state));
    // The jump's adapter has rank r + 1 (r when λ = 0, no jump) and the continuation trained
    // from it to the end.
    let cfg_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.path()
                .join("segment-1/global_step_12/actor/lora_adapter/adapter_config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg_json["r"],
        if d.lambda == 0.0 { 4 } else { 5 },
        "{}",
        trace(&state)
    );
}

/// Delegates to the real engine but fails the `fail_at`-th score call, as a kill would.
struct Flaky<'a> {
    inner: InProcess<'a>,
    calls: usize,
    fail_at: usize,
}

impl Engine for Flaky<'_> {
    fn train(&mut self, run: &Path, step: usize) -> next_scheduler::Result<()> {
        self.inner.train(run, step)
    }
    fn score(
        &mut self,
        adapter: &Path,
        set: next_scheduler::ScoreSet,
    ) -> next_scheduler::Result<(f64, u64)> {
        self.calls += 1;
        if self.calls == self.fail_at {
            return Err(next_scheduler::Error::Config("killed".into()));
        }
        self.inner.score(adapter, set)
    }
    fn start_from(
        &mut self,
        run: &Path,
        from: &Path,
        step: usize,
        adapter: &Path,
        keep_moments: bool,
    ) -> next_scheduler::Result<()> {
        self.inner
            .start_from(run, from, step, adapter, keep_moments)
    }
    fn set_seed(&mut self, seed: u64) {
        self.inner.set_seed(seed)
    }
    fn set_lr_scale(&mut self, scale: f64) {
        self.inner.set_lr_scale(scale)
    }
}

#[test]
fn a_run_interrupted_while_extending_resumes_there() {
    let cfg = train_config();
    let whole = tempfile::tempdir().unwrap();
    let expected = run(&mut engine(&cfg), &plan(), whole.path(), 12, 2, &mut |_| {}).unwrap();

    let cut = tempfile::tempdir().unwrap();
    let mut flaky = Flaky {
        inner: engine(&cfg),
        calls: 0,
        fail_at: 3,
    };
    let err = run(&mut flaky, &plan(), cut.path(), 12, 2, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    let saved: State =
        serde_json::from_str(&std::fs::read_to_string(cut.path().join("scheduler.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved.phase,
        next_scheduler::Phase::Extend,
        "the training phase was recorded done"
    );
    let resumed = run(&mut engine(&cfg), &plan(), cut.path(), 12, 2, &mut |_| {}).unwrap();
    assert_eq!(trace(&resumed), trace(&expected));
    assert_eq!(final_adapter(cut.path()), final_adapter(whole.path()));
}

#[test]
fn bad_plans_are_refused() {
    let cfg = train_config();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(SchedulerSection, &str)> = vec![
        (
            SchedulerSection {
                segment_steps: 5,
                ..plan()
            },
            "multiple of trainer.save_every",
        ),
        (
            SchedulerSection {
                horizon: 3,
                ..plan()
            },
            "scheduler.horizon",
        ),
        (
            SchedulerSection {
                rounds: 2,
                ..plan()
            },
            "leave no steps",
        ),
        (
            SchedulerSection {
                grid: vec![],
                ..plan()
            },
            "empty",
        ),
    ];
    for (p, want) in cases {
        let err = run(&mut engine(&cfg), &p, dir.path(), 12, 2, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Metrics of step `step` in a run's metrics.jsonl.
fn metrics_at(run_dir: &Path, step: u64) -> serde_json::Value {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|m| m["step"] == step)
        .unwrap()["data"]
        .clone()
}

#[test]
fn the_first_step_after_a_jump_behaves() {
    let cfg = train_config();
    // A jump of λ = 0: the function is unchanged (one zero column more), so the first continued
    // step samples and scores exactly as the uninterrupted run; the fresh moments change only
    // the update, and nothing spikes afterwards.
    let jumped = tempfile::tempdir().unwrap();
    let p = SchedulerSection {
        search: SearchKind::None,
        lambda: 0.0,
        ..plan()
    };
    run(&mut engine(&cfg), &p, jumped.path(), 12, 2, &mut |_| {}).unwrap();
    let plain = tempfile::tempdir().unwrap();
    engine(&cfg).train(plain.path(), 12).unwrap();
    let (a, b) = (
        metrics_at(&jumped.path().join("segment-1"), 7),
        metrics_at(plain.path(), 7),
    );
    for key in ["critic/score/mean", "actor/pg_loss", "response_length/mean"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    for step in 8..=12 {
        let m = metrics_at(&jumped.path().join("segment-1"), step);
        let g = m["actor/grad_norm"].as_f64().unwrap();
        let g0 = metrics_at(plain.path(), step)["actor/grad_norm"]
            .as_f64()
            .unwrap();
        assert!(
            g.is_finite() && g < 10.0 * g0.max(1e-3),
            "step {step}: grad norm {g} vs {g0}"
        );
    }
}
