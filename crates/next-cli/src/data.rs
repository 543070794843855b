//! `next data gen`: writes problems as verl-schema JSONL — the embedded task family, or GSM-style
//! and countdown problems from reasoning-gym (through the project's Python environment).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use anyhow::{bail, Context, Result};
use next_model::ChatMessage;
use next_trainer::data::{Prompt, Row};
use next_trainer::tasks::{self, Split, Task};
use serde_json::{json, Value};

/// The generator script, embedded so the binary works from any directory.
const REASONING_GYM_SCRIPT: &str = include_str!("../../../scripts/reasoning_gym_rows.py");

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate problems as JSONL rows (data_source, prompt, ground_truth, extra_info).
    ///
    /// Embedded tasks: `next data gen --task add3 --split train --n 1000 --out rows.jsonl`.
    ///
    /// reasoning-gym: `next data gen --source reasoning-gym --task gsm_symbolic --n 500 --seed 1
    /// --out train.jsonl` (math verifier, answer asked in \boxed{}) or `--task countdown`
    /// (countdown verifier, expression asked in <answer></answer>). Use different seeds for the
    /// train and validation files.
    Gen(GenArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// embedded (the built-in task family) or reasoning-gym.
    #[arg(long, default_value = "embedded")]
    source: String,
    /// Embedded: add2, add3, add4, countdown3, countdown4. reasoning-gym: gsm_symbolic, countdown.
    #[arg(long, default_value = "add3")]
    task: String,
    /// Embedded only: train, val or test (disjoint whatever the seed).
    #[arg(long)]
    split: Option<String>,
    #[arg(long, default_value_t = 1000)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    let rows = match a.source.as_str() {
        "embedded" => {
            if a.instruction.is_some() || !a.exclude.is_empty() {
                bail!("--instruction and --exclude apply to --source reasoning-gym only");
            }
            let split = match a.split.as_deref().unwrap_or("train") {
                "train" => Split::Train,
                "val" => Split::Val,
                "test" => Split::Test,
                other => bail!("unknown split `{other}` (expected train, val or test)"),
            };
            tasks::generate(Task::parse(&a.task)?, split, a.n, a.seed)?
        }
        "reasoning-gym" => {
            if a.split.is_some() {
                bail!("reasoning-gym has no splits: make the validation file with another --seed");
            }
            reasoning_gym(&a)?
        }
        other => bail!("unknown --source `{other}` (expected embedded or reasoning-gym)"),
    };
    let mut text = Vec::new();
    for r in &rows {
        writeln!(text, "{}", serde_json::to_string(r)?)?;
    }
    next_model::io::write_atomic(&a.out, &text)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote {} rows of {} ({}) to {}",
        rows.len(),
        a.task,
        a.source,
        a.out.display()
    );
    Ok(())
}

/// The reasoning-gym tasks we can verify: (name, data_source, default instruction).
const GYM_TASKS: [(&str, &str, &str); 2] = [
    (
        "gsm_symbolic",
        "reasoning-gym/gsm_symbolic",
        "Reason step by step, then put the final answer (a number) in \\boxed{}.",
    ),
    (
        "countdown",
        "reasoning-gym/countdown",
        "Reason briefly, then write only the expression inside <answer></answer>, \
         e.g. <answer>(1 + 2) * 3</answer>.",
    ),
];

fn python(a: &GenArgs) -> PathBuf {
    if let Some(p) = &a.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("NEXT_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

fn reasoning_gym(a: &GenArgs) -> Result<Vec<Row>> {
    let Some(&(task, source, default_instruction)) =
        GYM_TASKS.iter().find(|(name, ..)| *name == a.task)
    else {
        let names: Vec<&str> = GYM_TASKS.iter().map(|t| t.0).collect();
        bail!(
            "reasoning-gym task `{}` is not supported (supported: {})",
            a.task,
            names.join(", ")
        );
    };
    let instruction = a.instruction.as_deref().unwrap_or(default_instruction);
    let mut excluded = std::collections::HashSet::new();
    for path in &a.exclude {
        let (rows, _) = next_trainer::data::load_jsonl(path, false)
            .with_context(|| format!("cannot read --exclude {}", path.display()))?;
        excluded.extend(rows.into_iter().map(|r| prompt_key(&r.prompt)));
    }
    // Enough extra problems to replace every excluded one, even if all of them come up, and the
    // repeats reasoning-gym draws (about 0.4% of gsm_symbolic).
    let asked = a.n + excluded.len() + a.n / 20 + 16;
    let rows = gym_rows(a, task, source, instruction, asked)?;
    let total = rows.len();
    // Also drop repeats within this file, so that --exclude against it is meaningful.
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| excluded.insert(prompt_key(&r.prompt)))
        .take(a.n)
        .collect();
    if rows.len() < a.n {
        bail!(
            "only {} of {total} generated problems are new (not in --exclude and not repeated); \
             ask for fewer",
            rows.len()
        );
    }
    Ok(rows)
}

fn prompt_key(p: &Prompt) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

fn gym_rows(
    a: &GenArgs,
    task: &str,
    source: &str,
    instruction: &str,
    n: usize,
) -> Result<Vec<Row>> {
    let py = python(a);
    let out = Process::new(&py)
        .args(["-", "--task", task, "--n", &n.to_string(), "--seed"])
        .arg(a.seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(REASONING_GYM_SCRIPT.as_bytes())?;
            child.wait_with_output()
        })
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed to generate reasoning-gym `{task}` problems: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout).context("reasoning-gym output is not UTF-8")?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let item: Value = serde_json::from_str(line)
                .with_context(|| format!("reasoning-gym output line {}", i + 1))?;
            gym_row(task, source, instruction, &item, a.seed, i)
                .with_context(|| format!("reasoning-gym `{task}` item {i}: {line}"))
        })
        .collect()
}

/// One reasoning-gym item as a chat row with the ground truth our verifier for it reads.
fn gym_row(
    task: &str,
    source: &str,
    instruction: &str,
    item: &Value,
    seed: u64,
    index: usize,
) -> Result<Row> {
    let question = item["question"]
        .as_str()
        .context("`question` is not a string")?;
    let answer = item["answer"]
        .as_str()
        .context("`answer` is not a string")?;
    let meta = &item["metadata"];
    let ground_truth = match task {
        "countdown" => json!({"target": meta["target"], "numbers": meta["numbers"]}),
        _ => json!(answer),
    };
    let content = format!("{}\n\n{instruction}", question.trim_end());
    Ok(Row {
        data_source: source.to_owned(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content,
        }]),
        ground_truth,
        extra_info: json!({"source": "reasoning-gym", "task": task, "seed": seed,
                           "index": index, "answer": answer}),
    })
}
