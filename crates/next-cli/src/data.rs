//! `next data gen`: writes rows of the embedded task family as verl-schema JSONL.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use next_trainer::tasks::{self, Split, Task};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate problems: `next data gen --task add3 --split train --n 1000 --out rows.jsonl`.
    Gen(GenArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// add2, add3, add4, countdown3, countdown4.
    #[arg(long, default_value = "add3")]
    task: String,
    /// train, val or test (disjoint whatever the seed).
    #[arg(long, default_value = "train")]
    split: String,
    #[arg(long, default_value_t = 1000)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> Result<()> {
    let Command::Gen(a) = cmd;
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "val" => Split::Val,
        "test" => Split::Test,
        other => anyhow::bail!("unknown split `{other}` (expected train, val or test)"),
    };
    let rows = tasks::generate(Task::parse(&a.task)?, split, a.n, a.seed)?;
    let mut text = Vec::new();
    for r in &rows {
        writeln!(text, "{}", serde_json::to_string(r)?)?;
    }
    next_model::io::write_atomic(&a.out, &text)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote {} {} rows of {} to {}",
        rows.len(),
        a.split,
        a.task,
        a.out.display()
    );
    Ok(())
}
