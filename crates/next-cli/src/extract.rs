//! `next extract`: the rank-1 trajectory of a run's checkpoints into its store
//! (`next_trajectory::extract`), incrementally.

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_trajectory::extract::{self, Input, Options};
use next_trajectory::layout::{Checkpoint, Format};

/// Extract the top singular triplets of every adapted matrix's global (W_t − W_0), local
/// (W_t − W_(t−Δ)) and target (W_(t+g) − W_t) deltas, from the LoRA factors, into a store.
///
/// Reads this project's runs, verl runs (global_step_N/actor/lora_adapter), TRL/PEFT outputs
/// (checkpoint-N/) or full-weight checkpoints. A second call only processes new checkpoints.
///
/// Example: `next extract --run runs/add3 --target-gap 50`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run directory holding the checkpoints.
    #[arg(long, required_unless_present = "checkpoint")]
    run: Option<PathBuf>,
    /// auto, next, verl, trl or full (full weights, e.g. a full fine-tuning run).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
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

/// `--format`: the library's [`Format`]s a run can be read as, or `auto` to detect it. A
/// mirror because `next-trajectory` has no `clap` feature; the variants carry no doc comments
/// so the flag's help stays the one line above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Auto,
    Next,
    Verl,
    Trl,
    Full,
}

impl From<FormatArg> for Option<Format> {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Auto => None,
            FormatArg::Next => Some(Format::Next),
            FormatArg::Verl => Some(Format::Verl),
            FormatArg::Trl => Some(Format::Trl),
            FormatArg::Full => Some(Format::Full),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let input = if a.checkpoint.is_empty() {
        let run = a
            .run
            .clone()
            .expect("clap requires --run without --checkpoint");
        Input::Run {
            dir: run,
            format: a.format.into(),
        }
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
    let bar = crate::ui::bar(0, "extract")?.with_message("matrices");
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
