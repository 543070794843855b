//! The `next` binary: parses flags, calls one library entry point per subcommand, and maps
//! errors to a message naming the file/key at fault and a non-zero exit code.
// The doc comments of this crate are `--help` text (clap), written for a terminal: `[model]`
// is a TOML table and `<run>` a placeholder there, not a rustdoc link or an HTML tag.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod config;
mod data;
mod demo;
mod experiment;
mod extend;
mod extract;
mod fit;
mod generate;
mod import;
mod run;
mod study;
mod train;
mod trajectory;
mod ui;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// RLVR with predict-extend: train LLMs with verifiable rewards in fewer RL steps.
#[derive(Debug, Parser)]
#[command(name = "next", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sample a continuation from an HF-format model (optionally with a PEFT LoRA adapter).
    Generate(generate::Args),
    /// Train the embedded base model from scratch (cached: reused when its config matches).
    Pretrain(train::PretrainArgs),
    /// RLVR with LoRA (GRPO family); with no --config, the embedded default task and base.
    Train(train::TrainArgs),
    /// Bring models in from other formats: `next import gguf --input F.gguf --out DIR`.
    #[command(subcommand)]
    Import(import::Command),
    /// Datasets: generate the embedded task family as JSONL.
    #[command(subcommand)]
    Data(data::Command),
    /// Score responses with a verifier (math, countdown, exact, code), streaming JSONL in and out.
    Verify(verify::Args),
    /// Extract the rank-1 trajectory of a run's checkpoints into its store (incremental).
    Extract(extract::Args),
    /// The whole predict-extend loop: train, extract, fit, jump (λ by the verifier), continue.
    Run(run::Args),
    /// Every method side by side: baseline, control and one arm per predictor on the same
    /// seeds, with paired bootstrap intervals and a report with plots.
    Experiment(experiment::Args),
    /// Where predict-extend pays off: several regimes, each an experiment with a tuned
    /// baseline, and one report across them.
    Study(study::Args),
    /// Fit a predictor on a run's trajectory store and save it (used by `next extend --fitted`).
    Fit(fit::Args),
    /// Jump an adapter forward along its predicted trajectory (writes a PEFT adapter).
    Extend(extend::Args),
    /// Inspect a run's trajectory store.
    #[command(subcommand)]
    Trajectory(trajectory::Command),
    /// Exercise the model end to end on a tiny random model: save, load, LoRA-train, merge,
    /// generate. Writes everything under --out.
    Demo(demo::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Pretrain(args) => train::pretrain(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Import(cmd) => import::run(cmd),
        Command::Train(args) => train::train(args),
        Command::Extract(args) => extract::run(args),
        Command::Trajectory(cmd) => trajectory::run(cmd),
        Command::Extend(args) => extend::run(args),
        Command::Fit(args) => fit::run(args),
        Command::Run(args) => run::run(args),
        Command::Study(args) => study::run(args),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("NEXT_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`next ... | head`) is the reader being done, not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once: the library errors already quote their source
/// (`path: No such file or directory`), which `{:#}` would print a second time.
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
