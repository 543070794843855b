//! `next extend`: fit a predictor on a run's trajectory store and write the latest adapter plus
//! λ times the predicted change as a PEFT adapter any trainer can resume from; optionally
//! choose λ with the task's verifier.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use next_predictor::search::{self, Search};
use next_predictor::{by_name, extend::write_extended, Prediction, Trajectory};
use next_trainer::config::TrainConfig;
use next_trajectory::layout::Format;

/// Jump a LoRA run forward along its predicted rank-1 trajectory.
///
/// Reads <run>/trajectory (made by `next extract`), fits the predictor, predicts each matrix's
/// change over --horizon steps from the last checkpoint, and writes that checkpoint's adapter
/// plus λ times the prediction as a PEFT adapter of rank r + k in --out (with
/// `prediction.safetensors` and `extend.json` beside it). With --search, λ is chosen by greedy
/// validation with the task's verifier (runs of this project), against λ = 0.
///
/// Example: `next extend --run runs/add3 --predictor linear-relex --search grid --out runs/x`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run directory (its store is <run>/trajectory unless --store says otherwise).
    #[arg(long, required_unless_present = "store")]
    run: Option<PathBuf>,
    /// The trajectory store, when it is not <run>/trajectory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// two-point, linear-alpharl, linear-relex, next-reference (NExt as published) or next.
    #[arg(long, required_unless_present = "fitted")]
    predictor: Option<String>,
    /// A predictor fitted by `next fit` on this trajectory, instead of fitting here.
    #[arg(long, conflicts_with = "predictor")]
    fitted: Option<PathBuf>,
    /// The extending coefficient: the jump is λ times the predicted change.
    #[arg(long, default_value_t = 1.0, conflicts_with = "search")]
    lambda: f64,
    /// Choose λ by validation reward: `grid` (every --grid value) or `golden` (golden-section
    /// search in [0, --lambda-max] with --evals evaluations). Needs a run of this project.
    #[arg(long, value_parser = ["grid", "golden"])]
    search: Option<String>,
    /// The λ grid for --search grid.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5,2,2.5,3,3.5,4")]
    grid: Vec<f64>,
    /// Upper end of the golden-section search.
    #[arg(long, default_value_t = 4.0)]
    lambda_max: f64,
    /// Evaluations of the golden-section search (besides λ = 0).
    #[arg(long, default_value_t = 6)]
    evals: usize,
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
    /// Score the adapter before and after the jump by greedy validation with the task's
    /// verifier (runs of this project: reads <run>/config.resolved.toml).
    #[arg(long)]
    eval: bool,
}

/// The run's training config, for scoring with its validation set and verifier.
fn run_config(a: &Args, why: &str) -> Result<TrainConfig> {
    let run = a
        .run
        .as_ref()
        .with_context(|| format!("{why} needs --run (a run of this project)"))?;
    let resolved = run.join("config.resolved.toml");
    anyhow::ensure!(
        resolved.is_file(),
        "{why} needs {} (a run made by `next train`)",
        resolved.display()
    );
    crate::config::load(Some(&resolved), &[])
}

fn score(cfg: &TrainConfig, adapter: &Path) -> Result<(f64, u64)> {
    let base = Path::new(&cfg.model.path);
    Ok(next_trainer::train::evaluate(cfg, base, &[Some(adapter)])?[0])
}

pub fn run(a: Args) -> Result<()> {
    let (store_dir, store) = crate::trajectory::open_store(a.store.as_deref(), a.run.as_deref())?;
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
    anyhow::ensure!(
        !a.out.exists(),
        "{} already exists; choose a new --out",
        a.out.display()
    );
    let trajectory = Trajectory::from_store(&store)?;
    let predictor = match (&a.fitted, &a.predictor) {
        (Some(dir), _) => next_predictor::load_fitted(dir, &trajectory)?,
        (None, Some(name)) => {
            let mut p = by_name(name, a.window)?;
            p.fit(&trajectory)
                .with_context(|| format!("fitting {name}"))?;
            p
        }
        (None, None) => unreachable!("clap requires --predictor or --fitted"),
    };
    let name = predictor.name();
    let predictions = predictor.predict(&trajectory, horizon, a.rank)?;

    let (lambda, candidates) = match &a.search {
        None => (a.lambda, vec![]),
        Some(kind) => {
            let cfg = run_config(&a, "--search")?;
            let how = if kind == "grid" {
                Search::Grid(a.grid.clone())
            } else {
                Search::Golden {
                    lo: 0.0,
                    hi: a.lambda_max,
                    evals: a.evals,
                }
            };
            let candidates = choose(&cfg, &adapter, &predictions, a.rank, &a.out, &how)?;
            let best = search::best(&candidates).expect("λ = 0 is always scored");
            (best.lambda, candidates)
        }
    };
    let ext = write_extended(&adapter, &predictions, lambda, a.rank, &a.out)?;
    let mut record = serde_json::json!({
        "predictor": name,
        "lambda": lambda,
        "horizon": horizon,
        "rank": a.rank,
        "from_step": trajectory.last_step(),
        "adapter": adapter,
        "store": store_dir,
        "state": predictor.state(),
    });
    if !candidates.is_empty() {
        record["candidates"] = serde_json::to_value(&candidates)?;
        record["search_seconds"] = candidates.iter().map(|c| c.seconds).sum::<f64>().into();
        record["search_tokens"] = candidates.iter().map(|c| c.tokens).sum::<u64>().into();
    }
    let meta = a.out.join("extend.json");
    next_model::io::write_json(&meta, &record)
        .with_context(|| format!("cannot write {}", meta.display()))?;
    eprintln!(
        "extended {} matrices of {} (step {}) by {lambda} x {} over {horizon} steps: rank {} adapter (lora_alpha {}) in {}",
        ext.modules,
        adapter.display(),
        trajectory.last_step(),
        name,
        ext.r,
        ext.lora_alpha,
        ext.dir.display()
    );
    if a.eval {
        let cfg = run_config(&a, "--eval")?;
        let (before, _) = score(&cfg, &adapter)?;
        let (after, _) = score(&cfg, &ext.dir)?;
        println!(
            "{}",
            serde_json::json!({"predictor": name, "lambda": lambda, "horizon": horizon, "before": before, "after": after})
        );
    }
    eprintln!(
        "resume from it: verl `actor_rollout_ref.model.lora_adapter_path={0}`; PEFT/TRL `PeftModel.from_pretrained(model, \"{0}\", is_trainable=True)`; `next generate --adapter {0}`",
        ext.dir.display()
    );
    Ok(())
}

/// Scores λ = 0 and the searched candidates (each written to a scratch adapter beside --out,
/// removed afterwards); prints one line per candidate.
fn choose(
    cfg: &TrainConfig,
    adapter: &Path,
    predictions: &[Prediction],
    rank: usize,
    out: &Path,
    how: &Search,
) -> Result<Vec<search::Candidate>> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let scratch = tempfile::Builder::new()
        .prefix(".lambda-search-")
        .tempdir_in(parent)?;
    let mut n = 0;
    let candidates = search::run(how, &mut |lambda| {
        let (s, tokens) = if lambda == 0.0 {
            score(cfg, adapter)
        } else {
            n += 1;
            let dir = scratch.path().join(format!("candidate-{n}"));
            write_extended(adapter, predictions, lambda, rank, &dir)?;
            score(cfg, &dir)
        }
        .map_err(|e| next_predictor::Error::Invalid(format!("scoring λ = {lambda}: {e:#}")))?;
        eprintln!("λ {lambda:>7.4}: validation {s:.4} ({tokens} tokens)");
        Ok((s, tokens))
    })?;
    Ok(candidates)
}

/// Fit a predictor on a run's trajectory store and save it (for `next extend --fitted`).
///
/// Example: `next fit --run runs/add3 --predictor next-reference`
#[derive(Debug, clap::Args)]
pub struct FitArgs {
    /// The run directory (its store is <run>/trajectory unless --store says otherwise).
    #[arg(long, required_unless_present = "store")]
    run: Option<PathBuf>,
    /// The trajectory store, when it is not <run>/trajectory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// two-point, linear-alpharl, linear-relex, next-reference or next.
    #[arg(long)]
    predictor: String,
    /// Latest checkpoints the fits use [default: all].
    #[arg(long)]
    window: Option<usize>,
    /// Where the fitted predictor goes [default: <run>/predictor/<name>, else beside the store].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn fit(a: FitArgs) -> Result<()> {
    let (store_dir, store) = crate::trajectory::open_store(a.store.as_deref(), a.run.as_deref())?;
    let trajectory = Trajectory::from_store(&store)?;
    let mut p = by_name(&a.predictor, a.window)?;
    let t = std::time::Instant::now();
    p.fit(&trajectory)
        .with_context(|| format!("fitting {}", a.predictor))?;
    let out = match (&a.out, &a.run) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.join("predictor").join(&a.predictor),
        (None, None) => store_dir
            .parent()
            .unwrap_or(Path::new("."))
            .join("predictor")
            .join(&a.predictor),
    };
    next_predictor::save_fitted(p.as_ref(), a.window, &trajectory, &out)?;
    eprintln!(
        "fitted {} on {} matrices, steps {}-{} in {:.1}s -> {}",
        a.predictor,
        trajectory.series.len(),
        trajectory.series[0].steps.first().copied().unwrap_or(0),
        trajectory.last_step(),
        t.elapsed().as_secs_f64(),
        out.display()
    );
    println!("{}", p.state());
    Ok(())
}
