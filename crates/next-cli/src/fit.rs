//! `next fit`: fit a predictor once on a run's trajectory store (`next_predictor`) and save it
//! for `next extend --fitted`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_predictor::{PredictorKind, Trajectory};

/// Fit a predictor on a run's trajectory store and save it (for `next extend --fitted`).
///
/// Example: `next fit --run runs/add3 --predictor next-reference`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: crate::trajectory::StoreArgs,
    #[arg(long, value_enum)]
    predictor: PredictorKind,
    /// Latest checkpoints the fits use [default: all].
    #[arg(long)]
    window: Option<usize>,
    /// Where the fitted predictor goes [default: <run>/predictor/<name>, else beside the store].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let (store_dir, store) = a.at.open()?;
    let trajectory = Trajectory::from_store(&store)?;
    let mut p = a.predictor.build(a.window);
    let t = std::time::Instant::now();
    p.fit(&trajectory)
        .with_context(|| format!("fitting {}", a.predictor))?;
    let name = a.predictor.name();
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.at.beside(&store_dir, "predictor").join(name));
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
