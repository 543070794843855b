//! `next extend` and `next fit`: jump a run's adapter along its predicted rank-1 trajectory
//! (`next_scheduler::jump`, the same jump `next run` makes), and fit a predictor once to reuse.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use next_files::atomic::Existing;
use next_predictor::{Method, PredictorKind, Trajectory};
use next_scheduler::jump::{self, Predictor};
use next_scheduler::{Engine, InProcess, SchedulerSection, ScoreSet, SearchKind};
use next_trainer::config::TrainConfig;

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
    /// The method: a predictor of the merged rank-1 trajectory (the adapter grows by --rank)
    /// or a factor-space method (the rank stays; reads the run's checkpoints, needs --run).
    #[arg(long, value_enum, required_unless_present = "fitted")]
    predictor: Option<Method>,
    /// A predictor fitted by `next fit` on this trajectory, instead of fitting here.
    #[arg(long, conflicts_with = "predictor")]
    fitted: Option<PathBuf>,
    /// The extending coefficient: the jump is λ times the predicted change.
    #[arg(long, default_value_t = 1.0, conflicts_with = "search")]
    lambda: f64,
    /// Choose λ by validation reward: `grid` (every --grid value) or `golden` (golden-section
    /// search in [0, --lambda-max] with --evals evaluations). Needs a run of this project.
    #[arg(long, value_enum)]
    search: Option<SearchKind>,
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

/// The in-process trainer of the run, to score adapters with its validation set and verifier.
fn engine(run: Option<&Path>, why: &str) -> Result<InProcess<'static>> {
    let run = run.with_context(|| format!("{why} needs --run (a run of this project)"))?;
    let resolved = run.join("config.resolved.toml");
    anyhow::ensure!(
        resolved.is_file(),
        "{why} needs {} (a run made by `next train`)",
        resolved.display()
    );
    // A `next run` or `next experiment` directory's config has more tables; they are not needed.
    let (cfg, _): (TrainConfig, toml::Table) =
        crate::config::load_with(Some(&resolved), &[], &["scheduler", "experiment"])?;
    let base = PathBuf::from(&cfg.model.path);
    Ok(InProcess::new(cfg, base, Box::new(|_, _| {})))
}

pub fn run(a: Args) -> Result<()> {
    let (store_dir, store) = crate::trajectory::open_store(a.store.as_deref(), a.run.as_deref())?;
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
    let search = SchedulerSection {
        search: a.search.unwrap_or(SearchKind::None),
        grid: a.grid.clone(),
        lambda_max: a.lambda_max,
        evals: a.evals,
        ..SchedulerSection::default()
    }
    .search()?;
    let plan = jump::Plan {
        predictor: match (&a.fitted, a.predictor) {
            (Some(dir), _) => Predictor::Fitted(dir.clone()),
            (None, Some(method)) => Predictor::Fit {
                method,
                window: a.window,
            },
            (None, None) => unreachable!("clap requires --predictor or --fitted"),
        },
        horizon,
        rank: a.rank,
        search,
        lambda: a.lambda,
    };
    let mut scorer = match &plan.search {
        Some(_) => Some(engine(a.run.as_deref(), "--search")?),
        None => None,
    };
    // Factor-space methods read the run's checkpoints; predictors of the merged trajectory
    // read only the store.
    let source = match (&a.run, a.predictor) {
        (Some(run), Some(Method::Factor(_))) => jump::Source::of_run(run, None, &store_dir)?,
        (None, Some(Method::Factor(m))) => {
            anyhow::bail!("--predictor {m} works on the factors of a run's checkpoints: give --run")
        }
        _ => jump::Source {
            store: store_dir.clone(),
            checkpoints: vec![],
            initial: None,
        },
    };
    let (j, _) = jump::jump(
        &source,
        &adapter,
        &plan,
        scorer.as_mut().map(|e| e as &mut dyn Engine),
        &a.out,
        Existing::Refuse,
        &mut |lambda, score| eprintln!("λ {lambda:>7.4}: validation {score:.4}"),
    )?;
    eprintln!(
        "extended {} (step {}) by {} x {} over {horizon} steps: rank {} adapter (lora_alpha {}) in {}",
        adapter.display(),
        j.from_step,
        j.lambda,
        j.predictor,
        j.r,
        j.lora_alpha,
        a.out.display()
    );
    if a.eval {
        let mut e = match scorer {
            Some(e) => e,
            None => engine(a.run.as_deref(), "--eval")?,
        };
        let (before, _) = e.score(&adapter, ScoreSet::Validation)?;
        let (after, _) = e.score(&a.out, ScoreSet::Validation)?;
        println!(
            "{}",
            serde_json::json!({"predictor": j.predictor, "lambda": j.lambda, "horizon": horizon, "before": before, "after": after})
        );
    }
    eprintln!(
        "{}",
        next_predictor::extend::resume_hints(&a.out, j.r, j.lora_alpha)
    );
    Ok(())
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
    #[arg(long, value_enum)]
    predictor: PredictorKind,
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
    let mut p = a.predictor.build(a.window);
    let t = std::time::Instant::now();
    p.fit(&trajectory)
        .with_context(|| format!("fitting {}", a.predictor))?;
    let name = a.predictor.name();
    let out = match (&a.out, &a.run) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.join("predictor").join(name),
        (None, None) => next_files::parent_of(&store_dir)
            .join("predictor")
            .join(name),
    };
    next_predictor::save_fitted(p.as_ref(), a.window, &trajectory, &out)?;
    eprintln!(
        "fitted {name} on {} matrices, steps {}-{} in {:.1}s -> {}",
        trajectory.series.len(),
        trajectory.series[0].steps.first().copied().unwrap_or(0),
        trajectory.last_step(),
        t.elapsed().as_secs_f64(),
        out.display()
    );
    println!("{}", p.state());
    Ok(())
}
