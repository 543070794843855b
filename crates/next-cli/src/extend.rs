//! `next extend`: jump a run's adapter along its predicted rank-1 trajectory
//! (`next_scheduler::jump`, the same jump `next run` makes).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use next_files::atomic::Existing;
use next_predictor::Method;
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
    #[command(flatten)]
    at: crate::trajectory::StoreArgs,
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
    let resolved = run.join(next_files::resolved::FILE);
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
    let (store_dir, store) = a.at.open()?;
    let adapter = match &a.adapter {
        Some(p) => p.clone(),
        None => jump::last_adapter(&store)?,
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
    let predictor = match &a.fitted {
        Some(dir) => Predictor::Fitted(dir.clone()),
        None => Predictor::Fit {
            method: a.predictor.expect("clap requires --predictor or --fitted"),
            window: a.window,
        },
    };
    let plan = jump::Plan {
        predictor,
        horizon,
        rank: a.rank,
        search,
        lambda: a.lambda,
    };
    let mut scorer = match plan.search {
        Some(_) => Some(engine(a.at.run.as_deref(), "--search")?),
        None => None,
    };
    let (j, _) = jump::jump(jump::Ctx {
        source: &jump::Source::for_predictor(&plan.predictor, a.at.run.as_deref(), &store_dir)?,
        adapter: &adapter,
        plan: &plan,
        scorer: scorer.as_mut().map(|e| e as &mut dyn Engine),
        out: &a.out,
        existing: Existing::Refuse,
        on_candidate: &mut |lambda, score| eprintln!("λ {lambda:>7.4}: validation {score:.4}"),
    })?;
    eprintln!("{}", j.summary_line(&a.out));
    if a.eval {
        let mut e = match scorer {
            Some(e) => e,
            None => engine(a.at.run.as_deref(), "--eval")?,
        };
        let (before, _) = e.score(&adapter, ScoreSet::Validation)?;
        let (after, _) = e.score(&a.out, ScoreSet::Validation)?;
        println!(
            "{}",
            serde_json::json!({"predictor": j.predictor, "lambda": j.lambda, "horizon": horizon, "before": before, "after": after})
        );
    }
    let hints = next_predictor::extend::resume_hints(&a.out, j.r, j.lora_alpha);
    eprintln!("{hints}");
    Ok(())
}
