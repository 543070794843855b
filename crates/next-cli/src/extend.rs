//! `next extend`: fit a predictor on a run's trajectory store and write the latest adapter plus
//! λ times the predicted change as a PEFT adapter any trainer can resume from.

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_predictor::{by_name, extend::write_extended, Trajectory};
use next_trajectory::layout::Format;
use next_trajectory::store::Store;

/// Jump a LoRA run forward along its predicted rank-1 trajectory.
///
/// Reads <run>/trajectory (made by `next extract`), fits the predictor, predicts each matrix's
/// change over --horizon steps from the last checkpoint, and writes that checkpoint's adapter
/// plus λ times the prediction as a PEFT adapter of rank r + k in --out (with
/// `prediction.safetensors` and `extend.json` beside it).
///
/// Example: `next extend --run runs/add3 --predictor linear-relex --lambda 1.5 --out runs/add3-x`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run directory (its store is <run>/trajectory unless --store says otherwise).
    #[arg(long, required_unless_present = "store")]
    run: Option<PathBuf>,
    /// The trajectory store, when it is not <run>/trajectory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// two-point, linear-alpharl or linear-relex.
    #[arg(long)]
    predictor: String,
    /// The extending coefficient: the jump is λ times the predicted change.
    #[arg(long, default_value_t = 1.0)]
    lambda: f64,
    /// Steps ahead to predict [default: the store's target gap].
    #[arg(long)]
    horizon: Option<u64>,
    /// Rank-1 terms of the prediction to keep (the adapter grows from r to r + k).
    #[arg(long, default_value_t = 1)]
    rank: usize,
    /// Latest checkpoints the linear fits use [default: all].
    #[arg(long)]
    window: Option<usize>,
    /// The adapter to extend [default: the store's last checkpoint].
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Where the extended adapter goes (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Also score the adapter before and after the jump by greedy validation with the task's
    /// verifier (runs of this project: reads <run>/config.resolved.toml).
    #[arg(long)]
    eval: bool,
}

pub fn run(a: Args) -> Result<()> {
    let store_dir = match (&a.store, &a.run) {
        (Some(s), _) => s.clone(),
        (None, Some(r)) => r.join("trajectory"),
        (None, None) => unreachable!("clap requires --run or --store"),
    };
    if !Store::exists(&store_dir) {
        anyhow::bail!(
            "{} holds no trajectory store; run `next extract` first",
            store_dir.display()
        );
    }
    let store = Store::open(&store_dir)?;
    if store.index.format == Format::Full {
        anyhow::bail!(
            "{}: extension writes LoRA adapters; this store was extracted from full weights",
            store_dir.display()
        );
    }
    let adapter = match &a.adapter {
        Some(p) => p.clone(),
        None => store
            .index
            .sources
            .last()
            .map(|s| s.dir.clone())
            .context("the store lists no checkpoints")?,
    };
    let horizon = a.horizon.unwrap_or(store.index.target_gap);
    anyhow::ensure!(horizon > 0, "--horizon must be at least 1 step");
    let trajectory = Trajectory::from_store(&store)?;
    let mut predictor = by_name(&a.predictor, a.window)?;
    predictor
        .fit(&trajectory)
        .with_context(|| format!("fitting {}", a.predictor))?;
    let predictions = predictor.predict(&trajectory, horizon, a.rank)?;
    let ext = write_extended(&adapter, &predictions, a.lambda, a.rank, &a.out)?;
    let record = serde_json::json!({
        "predictor": a.predictor,
        "lambda": a.lambda,
        "horizon": horizon,
        "rank": a.rank,
        "from_step": trajectory.last_step(),
        "adapter": adapter,
        "store": store_dir,
        "state": predictor.state(),
    });
    let meta = a.out.join("extend.json");
    next_model::io::write_json(&meta, &record)
        .with_context(|| format!("cannot write {}", meta.display()))?;
    eprintln!(
        "extended {} matrices of {} (step {}) by {} x {} over {horizon} steps: rank {} adapter (lora_alpha {}) in {}",
        ext.modules,
        adapter.display(),
        trajectory.last_step(),
        a.lambda,
        a.predictor,
        ext.r,
        ext.lora_alpha,
        ext.dir.display()
    );
    if a.eval {
        let run = a
            .run
            .as_ref()
            .context("--eval needs --run (a run of this project)")?;
        let resolved = run.join("config.resolved.toml");
        anyhow::ensure!(
            resolved.is_file(),
            "--eval needs {} (a run made by `next train`)",
            resolved.display()
        );
        let cfg: next_trainer::config::TrainConfig = crate::config::load(Some(&resolved), &[])?;
        let scores = next_trainer::train::evaluate(
            &cfg,
            std::path::Path::new(&cfg.model.path),
            &[Some(&adapter), Some(&ext.dir)],
        )?;
        println!(
            "{}",
            serde_json::json!({"predictor": a.predictor, "lambda": a.lambda, "horizon": horizon, "before": scores[0], "after": scores[1]})
        );
    }
    eprintln!(
        "resume from it: verl `actor_rollout_ref.model.lora_adapter_path={0}`; PEFT/TRL `PeftModel.from_pretrained(model, \"{0}\", is_trainable=True)`; `next generate --adapter {0}`",
        ext.dir.display()
    );
    Ok(())
}
