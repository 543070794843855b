//! `next verify`: scores JSONL rows `{"response", "ground_truth"}` with a verifier
//! (`next_verifiers::rows`) and writes them back with `reward`, `correct`, `kind` and `detail`;
//! a progress bar and a summary.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use next_verifiers::code::CodeVerifier;
use next_verifiers::rows::{self, Choice, Progress};
use next_verifiers::{Pool, Registry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// math, countdown, exact, code; or `auto` to pick by each row's `data_source`.
    #[arg(long, default_value = "auto")]
    verifier: String,
    /// JSONL rows with `response` and `ground_truth` (other fields are passed through).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the scored rows (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Verifications in flight at once.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Code: wall-time and CPU-time limit per test run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Code: reward the fraction of passing io cases instead of all-or-nothing.
    #[arg(long)]
    partial_credit: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut registry = Registry::default();
    registry.register(Arc::new(CodeVerifier {
        limits: next_verifiers::code::Limits {
            wall_s: a.timeout,
            cpu_s: a.timeout.ceil() as u64,
            ..Default::default()
        },
        partial_credit: a.partial_credit,
        ..CodeVerifier::default()
    }));
    let choice = if a.verifier == "auto" {
        Choice::BySource
    } else {
        Choice::Fixed(registry.get(&a.verifier)?)
    };
    let file = std::fs::File::open(&a.input)
        .with_context(|| format!("cannot open {}", a.input.display()))?;
    // Count lines for the progress bar only in a regular file: a pipe (`--input /dev/stdin`)
    // can be read once, and counting would consume every row before verification.
    let bar = if file.metadata().is_ok_and(|m| m.is_file()) {
        let n = BufReader::new(std::fs::File::open(&a.input)?)
            .lines()
            .count();
        ProgressBar::new(n as u64).with_style(ProgressStyle::with_template(
            "verify {bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}",
        )?)
    } else {
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
            "verify {pos} rows [{elapsed}] {msg}",
        )?)
    };
    let pool = Pool::new(a.workers)?;
    // A file appears only when every row was scored; standard output streams.
    let mut file_out = match &a.output {
        Some(p) => Some(next_files::atomic::Writer::create(p)?),
        None => None,
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let out: &mut dyn Write = match file_out.as_mut() {
        Some(w) => w,
        None => &mut stdout,
    };
    let summary = rows::score(
        BufReader::new(file),
        &a.input,
        out,
        &registry,
        &choice,
        &pool,
        &mut |p| match p {
            Progress::Verified => bar.inc(1),
            Progress::Written(s) => bar.set_message(format!("mean reward {:.3}", s.mean_reward())),
        },
    )?;
    match file_out {
        Some(w) => w.commit()?,
        None => stdout.flush()?,
    }
    bar.finish_and_clear();
    let by_kind: Vec<String> = summary
        .by_kind
        .iter()
        .map(|(k, c)| format!("{} {c}", k.as_str()))
        .collect();
    eprintln!(
        "verified {} rows: {}; mean reward {:.4}",
        summary.rows,
        by_kind.join(", "),
        summary.mean_reward()
    );
    Ok(())
}
