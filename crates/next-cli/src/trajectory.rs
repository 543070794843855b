//! `next extract` and `next trajectory analyze`: the rank-1 trajectory of a run's checkpoints,
//! into a store, and what it looks like.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use next_trajectory::extract::{self, Input, Options};
use next_trajectory::layout::{Checkpoint, Format};
use next_trajectory::{analyze, store::Store};

/// Extract the top singular triplets of every adapted matrix's global (W_t − W_0), local
/// (W_t − W_(t−Δ)) and target (W_(t+g) − W_t) deltas, from the LoRA factors, into a store.
///
/// Reads this project's runs, verl runs (global_step_N/actor/lora_adapter), TRL/PEFT outputs
/// (checkpoint-N/) or full-weight checkpoints. A second call only processes new checkpoints.
///
/// Example: `next extract --run runs/add3 --target-gap 50`
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// The run directory holding the checkpoints.
    #[arg(long, required_unless_present = "checkpoint")]
    run: Option<PathBuf>,
    /// auto, next, verl, trl or full (full weights, e.g. a full fine-tuning run).
    #[arg(long, default_value = "auto")]
    format: String,
    /// Explicit checkpoints instead of --run, as STEP=ADAPTER_DIR (repeat the flag).
    #[arg(long, value_name = "STEP=DIR")]
    checkpoint: Vec<String>,
    /// Δ in steps for the local delta W_t − W_(t−Δ) [default: the checkpoint interval].
    #[arg(long)]
    delta_gap: Option<u64>,
    /// g in steps for the target delta W_(t+g) − W_t [default: 5 checkpoint intervals].
    #[arg(long)]
    target_gap: Option<u64>,
    /// Singular triplets kept per delta.
    #[arg(long, default_value_t = 1)]
    rank: usize,
    /// Full mode: the base model directory (W_0), unless a step-0 checkpoint exists.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Where the store goes [default: <run>/trajectory]; use it when the run is read-only.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

pub fn extract(a: ExtractArgs) -> Result<()> {
    let input = if a.checkpoint.is_empty() {
        let run = a
            .run
            .clone()
            .expect("clap requires --run without --checkpoint");
        let format = match a.format.as_str() {
            "auto" => None,
            f => Some(f.parse::<Format>().map_err(anyhow::Error::msg)?),
        };
        Input::Run { dir: run, format }
    } else {
        if a.run.is_some() {
            anyhow::bail!("give either --run or --checkpoint, not both");
        }
        let mut list = vec![];
        for c in &a.checkpoint {
            let (step, dir) = c
                .split_once('=')
                .with_context(|| format!("--checkpoint {c:?}: expected STEP=DIR"))?;
            let step = step
                .parse()
                .with_context(|| format!("--checkpoint {c:?}: {step:?} is not a step number"))?;
            list.push(Checkpoint {
                step,
                dir: PathBuf::from(dir),
            });
        }
        Input::List(list)
    };
    let out = match (&a.out, &a.run) {
        (Some(o), _) => o.clone(),
        (None, Some(run)) => run.join("trajectory"),
        (None, None) => anyhow::bail!("with --checkpoint, name the store's directory with --out"),
    };
    let opts = Options {
        delta_gap: a.delta_gap,
        target_gap: a.target_gap,
        rank: a.rank,
        base: a.base.clone(),
    };
    let pool = rayon_pool(a.threads)?;
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "extract {bar:30} {pos}/{len} matrices [{elapsed}<{eta}]",
    )?);
    let start = std::time::Instant::now();
    let summary = pool
        .install(|| {
            extract::extract(&input, &out, &opts, &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
        })
        .context("extraction failed")?;
    bar.finish_and_clear();
    eprintln!(
        "{} checkpoints ({:?}): {} new records ({} in all, {:.1} MB) in {:.2} s -> {}",
        summary.checkpoints,
        summary.format,
        summary.new_records,
        summary.total_records,
        summary.store_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        summary.store.display()
    );
    Ok(())
}

fn rayon_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        b = b.num_threads(n);
    }
    b.build().context("cannot start worker threads")
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// How low-rank, stable and linear a run's trajectory is: per module kind and layer, the
    /// rank-1 energy σ1²/‖Δ‖²_F over steps, the cosine between consecutive rank-1 directions and
    /// the R² of a straight-line fit of σ1(t); plots go to <run>/report/.
    ///
    /// Example: `next trajectory analyze --run runs/add3`
    Analyze(AnalyzeArgs),
}

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// The run directory (its store is <run>/trajectory unless --store says otherwise).
    #[arg(long, required_unless_present = "store")]
    run: Option<PathBuf>,
    /// The store directory, when it is not <run>/trajectory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Print one JSON object per record instead: {"module", "step", "kind", "sigma1", "energy"}.
    #[arg(long)]
    json: bool,
    /// Where the plots go [default: <run>/report, or <store>/../report].
    #[arg(long)]
    report: Option<PathBuf>,
    /// Skip the plots.
    #[arg(long)]
    no_plots: bool,
}

/// The store of `--store`, or `<run>/trajectory`.
pub(crate) fn open_store(store: Option<&Path>, run: Option<&Path>) -> Result<(PathBuf, Store)> {
    let store_dir = match (store, run) {
        (Some(s), _) => s.to_owned(),
        (None, Some(r)) => r.join("trajectory"),
        (None, None) => anyhow::bail!("give --run or --store"),
    };
    if !Store::exists(&store_dir) {
        anyhow::bail!(
            "{} holds no trajectory store; run `next extract` first",
            store_dir.display()
        );
    }
    let store = Store::open(&store_dir)?;
    Ok((store_dir, store))
}

pub fn run(cmd: Command) -> Result<()> {
    let Command::Analyze(a) = cmd;
    let (store_dir, store) = open_store(a.store.as_deref(), a.run.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.json {
        for p in analyze::points(&store) {
            writeln!(out, "{}", serde_json::to_string(&p)?)?;
        }
        return Ok(());
    }
    let summaries = analyze::summarize(&store);
    write!(out, "{}", analyze::table(&summaries))?;
    if !a.no_plots {
        let report = match (&a.report, &a.run) {
            (Some(r), _) => r.clone(),
            (None, Some(run)) => run.join("report"),
            (None, None) => store_dir
                .parent()
                .map_or_else(|| PathBuf::from("report"), |p| p.join("report")),
        };
        let written = analyze::plot(&summaries, &report)?;
        for p in written {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}
