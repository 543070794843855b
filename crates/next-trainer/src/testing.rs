//! Fixtures for the workspace's tests (feature `testing`): a tiny base pretrained on 2-digit
//! addition until greedy accuracy is about 0.2 (seconds), so that RL has mixed groups,
//! advantages and jumps something to move; and a short RL config on it.

use std::path::Path;
use std::sync::OnceLock;

use crate::tasks::Task;
use crate::TrainConfig;

/// The tiny base, pretrained once per test binary.
pub fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut p = TrainConfig::default().pretrain;
        (p.task, p.hidden_size, p.layers, p.intermediate_size) =
            (Task::Add { digits: 2 }, 64, 2, 128);
        (p.steps, p.batch, p.train_size, p.warmup_steps, p.threads) = (300, 64, 5000, 20, 1);
        crate::pretrain::pretrain(&p, dir.path(), &mut |_| {}).unwrap();
        dir
    })
    .path()
}

/// A short RL config on [`base`].
pub fn config() -> TrainConfig {
    let mut c = TrainConfig::default();
    c.model.path = base().display().to_string();
    c.model.threads = 1;
    (c.lora.r, c.lora.alpha) = (4, 8.0);
    c.data.task = Task::Add { digits: 2 };
    (c.data.train_size, c.data.val_size) = (200, 64);
    (c.rollout.n, c.rollout.max_new_tokens) = (4, 4);
    let t = &mut c.trainer;
    (t.steps, t.prompts_per_step, t.micro_batch) = (20, 4, 5);
    (t.save_every, t.val_every, t.seed) = (10, 100, 5);
    c
}
