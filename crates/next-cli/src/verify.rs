//! `next verify`: scores JSONL rows `{"response", "ground_truth"}` with a verifier
//! (`next_verifiers::rows`) and writes them back with `reward`, `correct`, `kind` and `detail`;
//! a progress bar and a summary. `--serve` stays up for a trainer's reward function, answering
//! each line (a row or a batch) at once.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use next_verifiers::code::{CodeVerifier, Limits};
use next_verifiers::python::{self, PythonReward, RewardFn};
use next_verifiers::rows::{self, Choice, Progress};
use next_verifiers::{Pool, Registry};

#[derive(Debug, clap::Args)]
#[command(after_long_help = REWARD_HELP)]
pub struct Args {
    /// math, countdown, exact, code; or `auto` to pick by each row's `data_source`.
    #[arg(long, default_value = "auto", conflicts_with = "reward_fn")]
    verifier: String,
    /// Score every row with your Python reward function FILE:NAME instead (verl's
    /// `compute_score` or a TRL reward function; trusted code, run unsandboxed).
    #[arg(long, value_name = "FILE:NAME")]
    reward_fn: Option<String>,
    /// The reward function's calling convention: auto (from its signature), verl or trl.
    #[arg(long, default_value = "auto", requires = "reward_fn")]
    reward_fn_style: String,
    /// The interpreter for the reward function (default: $NEXT_PYTHON, else the project's
    /// .venv, else python3).
    #[arg(long, requires = "reward_fn")]
    python: Option<PathBuf>,
    /// JSONL rows with `response` and `ground_truth` (other fields are passed through).
    #[arg(long, required_unless_present = "serve")]
    input: Option<PathBuf>,
    /// Stay up for a trainer's reward function: read rows (or JSON arrays of rows, one batch
    /// per line) from standard input and answer each line at once on standard output; a bad
    /// line is answered with {"error": ...} and the next is served. Ends at end of input.
    #[arg(long, conflicts_with_all = ["input", "output"])]
    serve: bool,
    /// Where to write the scored rows (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Verifications in flight at once (and Python worker processes of a reward function).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seconds per row: the code verifier's wall-time and CPU-time limit per test run, or a
    /// reward function's limit per call (per completion of a TRL batch call).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Code: reward the fraction of passing io cases instead of all-or-nothing.
    #[arg(long)]
    partial_credit: bool,
}

const REWARD_HELP: &str = "\
Python reward functions (--reward-fn FILE:NAME), as verl and TRL users write them:
  verl:  def compute_score(data_source, solution_str, ground_truth, extra_info=None)
         returns a number, or a dict with `score` (its other keys are kept in `detail`,
         its numeric ones also in `extra`)
  TRL:   def reward(prompts, completions, **columns) -> list[float]
         columns: ground_truth, data_source, extra_info and each key of extra_info
Rows pass `prompt`, `response`, `ground_truth`, `data_source` and `extra_info`. A call that
raises, overruns --timeout or returns a non-number gives an `error` verdict naming the
reason; a worker that dies is restarted and its batch retried once, then row by row.
The file is trusted code: it runs with your rights, unsandboxed (model-written code goes only
through `code`).";

pub fn run(a: Args) -> Result<()> {
    let mut registry = Registry::default();
    registry.register(Arc::new(CodeVerifier {
        limits: Limits::seconds(a.timeout),
        partial_credit: a.partial_credit,
        ..CodeVerifier::default()
    }));
    let choice = if let Some(f) = &a.reward_fn {
        let f: RewardFn = f.parse()?;
        let reward = PythonReward::start(
            f,
            python::Options {
                python: next_files::python::interpreter(a.python.as_deref()),
                style: a.reward_fn_style.parse()?,
                workers: a.workers,
                timeout_s: a.timeout,
            },
        )?;
        Choice::Fixed(Arc::new(reward))
    } else if a.verifier == "auto" {
        Choice::BySource
    } else {
        Choice::Fixed(registry.get(&a.verifier)?)
    };
    let pool = Pool::new(a.workers)?;
    let Some(input) = &a.input else {
        let (stdin, mut stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
        let name = Path::new("<stdin>");
        return Ok(rows::serve(
            stdin,
            name,
            &mut stdout,
            &registry,
            &choice,
            &pool,
        )?);
    };
    let file =
        std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    // Count lines for the progress bar only in a regular file: a pipe (`--input /dev/stdin`)
    // can be read once, and counting would consume every row before verification.
    let bar = if file.metadata().is_ok_and(|m| m.is_file()) {
        let n = BufReader::new(std::fs::File::open(input)?).lines().count();
        crate::ui::bar(n as u64, "verify")?
    } else {
        crate::ui::counter("verify", "rows")?
    };
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
        input,
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
    eprintln!("{}", summary.line());
    for (line, detail) in &summary.first_errors {
        eprintln!("error at {}:{line}: {detail}", input.display());
    }
    Ok(())
}
