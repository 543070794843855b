//! `next data gen`: writes problems as verl-schema JSONL — the embedded task family, or GSM-style
//! and countdown problems from reasoning-gym (through the project's Python environment).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use next_trainer::data::gym::{self, GymRequest, GymTask};
use next_trainer::tasks::{self, Split, Task};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate problems as JSONL rows (data_source, prompt, ground_truth, extra_info).
    ///
    /// Embedded tasks: `next data gen --task add3 --split train --n 1000 --out rows.jsonl`.
    ///
    /// reasoning-gym: `next data gen --source reasoning-gym --task gsm_symbolic --n 500 --seed 1
    /// --out train.jsonl` (math verifier, answer asked in \boxed{}) or `--task countdown`
    /// (countdown verifier, expression asked in <answer></answer>), or a task with a number for
    /// answer (basic_arithmetic, chain_sum, leg_counting, gcd, lcm, simple_equations, products,
    /// letter_counting, count_bits: math verifier, \boxed{}). Use
    /// distant seeds for the train and validation files (reasoning-gym's seed s + 1 draws seed
    /// s's problems shifted by one) and --exclude the training file.
    Gen(GenArgs),
}

/// Where problems come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// The built-in task family (no Python needed).
    Embedded,
    /// reasoning-gym's generators, run by the project's Python.
    ReasoningGym,
}

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    #[arg(long, value_enum, default_value = "embedded")]
    source: Source,
    /// Embedded: add2, add3, add4, countdown3, countdown4. reasoning-gym: gsm_symbolic,
    /// countdown, or a numeric task (see `next data gen --help`).
    #[arg(long, default_value = "add3")]
    task: String,
    /// Embedded only: which split (disjoint whatever the seed) [default: train].
    #[arg(long, value_enum)]
    split: Option<Split>,
    #[arg(long, default_value_t = 1000)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// reasoning-gym: the generator's settings as a JSON object, e.g. `{"max_terms": 2,
    /// "max_digits": 2}` for chain_sum (see reasoning-gym's config classes).
    #[arg(long, value_name = "JSON")]
    gym_config: Option<String>,
    /// reasoning-gym: replaces the instruction appended to each question.
    #[arg(long)]
    instruction: Option<String>,
    /// reasoning-gym: leave out problems whose prompt is in this JSONL file (e.g. make the
    /// validation file with `--exclude train.jsonl`); repeatable.
    #[arg(long)]
    exclude: Vec<PathBuf>,
    /// reasoning-gym: the Python with reasoning-gym installed (default: $NEXT_PYTHON, else the
    /// project's .venv this binary was built next to, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> Result<()> {
    let Command::Gen(a) = cmd;
    let rows = match a.source {
        Source::Embedded => {
            if a.instruction.is_some() || !a.exclude.is_empty() || a.gym_config.is_some() {
                bail!(
                    "--instruction, --exclude and --gym-config apply to --source reasoning-gym only"
                );
            }
            let split = a.split.unwrap_or(Split::Train);
            tasks::generate(Task::parse(&a.task)?, split, a.n, a.seed)?
        }
        Source::ReasoningGym => {
            if a.split.is_some() {
                bail!("reasoning-gym has no splits: make the validation file with another --seed");
            }
            gym::generate(&GymRequest {
                task: GymTask::parse(&a.task)?,
                n: a.n,
                seed: a.seed,
                instruction: a.instruction.clone(),
                config: gym::parse_config(a.gym_config.as_deref())?,
                exclude: a.exclude.clone(),
                python: next_files::python::interpreter(a.python.as_deref()),
            })?
        }
    };
    let mut text = Vec::new();
    for r in &rows {
        writeln!(text, "{}", serde_json::to_string(r)?)?;
    }
    next_files::atomic::write(&a.out, &text)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote {} rows of {} ({:?}) to {}",
        rows.len(),
        a.task,
        a.source,
        a.out.display()
    );
    Ok(())
}
