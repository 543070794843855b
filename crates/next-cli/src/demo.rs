//! `next demo`: the model stack end to end on a tiny random model (`next_trainer::demo`), with
//! a progress bar and a summary.

use std::path::PathBuf;

use anyhow::Result;
use next_trainer::demo::{self, DemoOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (base/, adapter/, merged/, summary.json).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Optimisation steps of the LoRA fit.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    lora_r: i64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let pb = crate::ui::bar(a.steps as u64, "demo")?;
    let o = DemoOptions {
        steps: a.steps,
        lr: a.lr,
        lora_r: a.lora_r,
        seed: a.seed,
    };
    let s = demo::run(&o, &a.out, &mut |step, loss| {
        pb.set_position(step as u64);
        pb.set_message(format!("loss {loss:.4}"));
    })?;
    pb.finish_and_clear();
    eprintln!(
        "demo: loss {:.3} -> {:.3}, greedy accuracy {:.0}% -> {:.0}% on {} sums; adapter reload and merge agree",
        s.loss_first,
        s.loss_last,
        100.0 * s.greedy_accuracy_before,
        100.0 * s.greedy_accuracy_after,
        s.problems
    );
    println!("{}", a.out.join("summary.json").display());
    Ok(())
}
