//! Training runs through the library: failure modes and the checkpoint format.

use std::path::Path;

use next_model::testing::{reference, rust_model};
use next_trainer::tasks::Task;
use next_trainer::TrainConfig;

/// A small, fast training config on the fixture model (add2 prompts fit its alphabet).
fn config(model: &Path) -> TrainConfig {
    let mut c = TrainConfig::default();
    c.model.path = model.display().to_string();
    c.model.threads = 1;
    (c.lora.r, c.lora.alpha) = (4, 8.0);
    c.data.task = Task::Add { digits: 2 };
    (c.data.train_size, c.data.val_size) = (200, 24);
    (c.rollout.n, c.rollout.max_new_tokens) = (4, 4);
    let t = &mut c.trainer;
    (t.steps, t.prompts_per_step, t.micro_batch) = (8, 4, 8);
    (t.save_every, t.val_every, t.log_every, t.seed) = (2, 3, 1, 3);
    c
}

fn train(cfg: &TrainConfig, model: &Path, run: &Path) -> next_trainer::Result<()> {
    next_trainer::train::train(cfg, run, model, &mut |_| {}).map(drop)
}

#[test]
fn nan_loss_stops_with_the_last_good_checkpoint() {
    // The tiny pretrained base: its groups are mixed, so there is a gradient to blow up.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cfg = next_trainer::testing::config();
    (cfg.optim.lr, cfg.optim.grad_clip) = (1e38, 0.0);
    cfg.trainer.save_every = 1;
    let err = train(&cfg, next_trainer::testing::base(), &run)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("numerical failure") && err.contains("last good checkpoint"),
        "{err}"
    );
    let latest = next_trainer::checkpoint::latest(&run).unwrap().unwrap();
    assert!(next_trainer::checkpoint::adapter_dir(&run, latest)
        .join(next_files::peft::WEIGHTS)
        .exists());
}

#[test]
fn checkpoints_load_in_peft() {
    let model = rust_model(34);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cfg = config(model.path());
    (cfg.trainer.steps, cfg.optim.lr) = (2, 0.02);
    train(&cfg, model.path(), &run).unwrap();
    let adapter = next_trainer::checkpoint::adapter_dir(&run, 2);
    let ref_out = dir.path().join("ref.safetensors");
    let prompts = "[\"12+34=\", \"5+6=\"]";
    reference(&[
        "logits",
        "--model",
        model.path().to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--prompts",
        prompts,
        "--out",
        ref_out.to_str().unwrap(),
    ]);
    let mut t = next_model::io::read_safetensors(&ref_out).unwrap();
    let (ids, mask, expected) = (
        t.remove("input_ids").unwrap().tensor,
        t.remove("attention_mask").unwrap().tensor,
        t.remove("logits").unwrap().tensor,
    );
    let mut ours = next_model::Model::load(model.path(), Default::default()).unwrap();
    ours.load_adapter(&adapter).unwrap();
    let got = tch::no_grad(|| {
        ours.forward(
            &next_model::Batch {
                input_ids: ids,
                attention_mask: mask.shallow_clone(),
                jump_scale: None,
            },
            None,
        )
    })
    .unwrap();
    let m = mask.ne(0).unsqueeze(-1).expand_as(&got);
    let diff = (got - expected)
        .abs()
        .masked_select(&m)
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "PEFT vs ours on a training checkpoint: {diff}");
}

/// The mean `score` of a dump file.
fn dumped_mean(path: &Path) -> (usize, f64) {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &rows {
        for key in ["input", "output", "gts", "score", "step", "kind", "mode"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    let sum: f64 = rows.iter().map(|r| r["score"].as_f64().unwrap()).sum();
    (rows.len(), sum / rows.len() as f64)
}

#[test]
fn generations_are_dumped_where_verl_dumps_them() {
    let model = rust_model(35);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cfg = config(model.path());
    (cfg.trainer.steps, cfg.trainer.val_every) = (2, 1);
    cfg.trainer.rollout_data_dir = "rollouts".into();
    cfg.trainer.validation_data_dir = dir.path().join("val").display().to_string();
    train(&cfg, model.path(), &run).unwrap();
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first value at `step` of a key `key` matches (one data source here).
    let at = |step: u64, key: &dyn Fn(&str) -> bool| {
        metrics
            .iter()
            .filter(|m| m["step"] == step)
            .flat_map(|m| m["data"].as_object().unwrap().iter())
            .find_map(|(k, v)| key(k).then(|| v.as_f64().unwrap()))
            .unwrap()
    };
    for step in 1..=2u64 {
        // The rollout's scores are the step's: their mean is the logged one.
        let (n, mean) = dumped_mean(&run.join(format!("rollouts/{step}.jsonl")));
        assert_eq!(n, 16);
        assert!((mean - at(step, &|k| k == "critic/score/mean")).abs() < 1e-9);
    }
    for step in 0..=2u64 {
        let (n, mean) = dumped_mean(&dir.path().join(format!("val/{step}.jsonl")));
        assert_eq!(n, 24);
        let logged = at(step, &|k| {
            k.starts_with("val-core/") && k.ends_with("/mean@1")
        });
        assert!((mean - logged).abs() < 1e-9, "{mean} vs {logged}");
    }
}
