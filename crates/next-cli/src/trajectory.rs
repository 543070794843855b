//! `next trajectory analyze`: what the rank-1 trajectory of a run looks like
//! (`next_trajectory::analyze`); and the store the trajectory subcommands read.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use next_trajectory::{analyze, store::Store};

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
    #[command(flatten)]
    at: StoreArgs,
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

/// Where the commands that read a trajectory store find it: `--store`, or `<run>/trajectory`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The run directory (its store is <run>/trajectory unless --store says otherwise).
    #[arg(long, required_unless_present = "store")]
    pub run: Option<PathBuf>,
    /// The trajectory store, when it is not <run>/trajectory.
    #[arg(long)]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's directory, and the store.
    pub fn open(&self) -> Result<(PathBuf, Store)> {
        let store_dir = match (&self.store, &self.run) {
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

    /// The default home of an output named `name`: `<run>/<name>`, else beside the store.
    pub fn beside(&self, store_dir: &Path, name: &str) -> PathBuf {
        match &self.run {
            Some(run) => run.join(name),
            None => next_files::parent_of(store_dir).join(name),
        }
    }
}

pub fn run(cmd: Command) -> Result<()> {
    let Command::Analyze(a) = cmd;
    let (store_dir, store) = a.at.open()?;
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
        let report = a
            .report
            .clone()
            .unwrap_or_else(|| a.at.beside(&store_dir, "report"));
        let written = analyze::plot(&summaries, &report)?;
        for p in written {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}
