//! Rows from reasoning-gym's generators (GSM-style problems, countdown, and short tasks with a
//! number for answer), produced offline by the project's Python: each problem as a chat prompt
//! with an instruction saying how to answer, and the ground truth in the form its verifier reads.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use next_model::ChatMessage;
use serde_json::{json, Map, Value};

use super::{load_rows, Prompt, Row};
use crate::{Error, Result};

/// The generator script, compiled in so the binary works from any directory.
const SCRIPT: &str = include_str!("../../../../scripts/reasoning_gym_rows.py");

/// The reasoning-gym tasks whose answers a verifier of ours checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GymTask {
    /// GSM8K-style word problems (math verifier, answer in `\boxed{}`).
    GsmSymbolic,
    /// Countdown (countdown verifier, expression in `<answer></answer>`).
    Countdown,
    /// Short problems whose answer is one number (math verifier, answer in `\boxed{}`): the
    /// candidates for a task a small model can learn (`basic_arithmetic`, `leg_counting`, ...).
    Numeric(&'static str),
}

/// reasoning-gym tasks whose answer is one integer, in a few tokens. (Not
/// `fraction_simplification`: the math verifier compares values, so an unsimplified fraction
/// would pass.)
const NUMERIC: &[&str] = &[
    "basic_arithmetic",
    "chain_sum",
    "leg_counting",
    "gcd",
    "lcm",
    "simple_equations",
    "products",
    "letter_counting",
    "count_bits",
];

impl GymTask {
    /// Every supported task.
    pub fn all() -> impl Iterator<Item = GymTask> {
        [GymTask::GsmSymbolic, GymTask::Countdown]
            .into_iter()
            .chain(NUMERIC.iter().map(|&n| GymTask::Numeric(n)))
    }

    /// reasoning-gym's name of the task.
    pub fn name(self) -> &'static str {
        match self {
            GymTask::GsmSymbolic => "gsm_symbolic",
            GymTask::Countdown => "countdown",
            GymTask::Numeric(name) => name,
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::all().find(|t| t.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::all().map(|t| t.name()).collect();
            Error::Config(format!(
                "reasoning-gym task `{name}` is not supported (supported: {})",
                names.join(", ")
            ))
        })
    }

    /// The rows' `data_source`, which picks their verifier.
    pub fn data_source(self) -> String {
        format!("reasoning-gym/{}", self.name())
    }

    /// What the prompt asks for after the question.
    pub fn default_instruction(self) -> &'static str {
        match self {
            GymTask::GsmSymbolic => {
                "Reason step by step, then put the final answer (a number) in \\boxed{}."
            }
            GymTask::Countdown => {
                "Reason briefly, then write only the expression inside <answer></answer>, \
                 e.g. <answer>(1 + 2) * 3</answer>."
            }
            GymTask::Numeric(_) => "Put the final answer (a number) in \\boxed{}.",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GymRequest {
    pub task: GymTask,
    pub n: usize,
    pub seed: u64,
    /// Replaces the task's default instruction.
    pub instruction: Option<String>,
    /// The generator's settings (reasoning-gym's config keys), empty for its defaults.
    pub config: Map<String, Value>,
    /// JSONL files whose prompts must not appear (e.g. the training file, for validation).
    pub exclude: Vec<PathBuf>,
    /// The interpreter with reasoning-gym installed.
    pub python: PathBuf,
}

/// Reads `--gym-config`: a JSON object of the generator's settings (none: its defaults).
pub fn parse_config(text: Option<&str>) -> Result<Map<String, Value>> {
    match text.map(serde_json::from_str::<Value>) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(m))) => Ok(m),
        Some(Ok(other)) => Err(Error::Config(format!(
            "--gym-config: expected a JSON object of settings, got {other}"
        ))),
        Some(Err(e)) => Err(Error::Config(format!("--gym-config: not valid JSON: {e}"))),
    }
}

/// `n` new problems: none of `exclude`'s prompts, no repeats within the result.
pub fn generate(req: &GymRequest) -> Result<Vec<Row>> {
    let mut excluded = HashSet::new();
    for path in &req.exclude {
        let (rows, _) = load_rows(path, false)?;
        excluded.extend(rows.into_iter().map(|r| prompt_key(&r.prompt)));
    }
    // Enough extra problems to replace every excluded one, even if all of them come up, and the
    // repeats reasoning-gym draws (about 0.4% of gsm_symbolic; a quarter of 2,000 sums of two
    // 2-digit numbers, a space of 8,100). Items are drawn per index, so asking for more never
    // changes the first ones.
    let asked = req.n + excluded.len() + req.n / 2 + 16;
    let rows = run_script(req, asked)?;
    let total = rows.len();
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| excluded.insert(prompt_key(&r.prompt)))
        .take(req.n)
        .collect();
    if rows.len() < req.n {
        return Err(Error::Data(format!(
            "only {} of {total} generated problems are new (not excluded and not repeated); \
             ask for fewer",
            rows.len()
        )));
    }
    Ok(rows)
}

fn prompt_key(p: &Prompt) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

fn run_script(req: &GymRequest, n: usize) -> Result<Vec<Row>> {
    let task = req.task.name();
    let py = &req.python;
    let out = Command::new(py)
        .args(["-", "--task", task, "--n", &n.to_string(), "--seed"])
        .arg(req.seed.to_string())
        .arg("--config")
        .arg(Value::Object(req.config.clone()).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(SCRIPT.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| Error::Data(format!("cannot run {}: {e}", py.display())))?;
    if !out.status.success() {
        return Err(Error::Data(format!(
            "{} failed to generate reasoning-gym `{task}` problems: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| Error::Data("reasoning-gym output is not UTF-8".into()))?;
    let instruction = req
        .instruction
        .as_deref()
        .unwrap_or(req.task.default_instruction());
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let item: Value = serde_json::from_str(line)
                .map_err(|e| Error::Data(format!("reasoning-gym output line {}: {e}", i + 1)))?;
            row(req, instruction, &item, i).map_err(|why| {
                Error::Data(format!("reasoning-gym `{task}` item {i}: {why}: {line}"))
            })
        })
        .collect()
}

/// One reasoning-gym item as a chat row with the ground truth our verifier for it reads.
fn row(
    req: &GymRequest,
    instruction: &str,
    item: &Value,
    index: usize,
) -> std::result::Result<Row, &'static str> {
    let task = req.task;
    let question = item["question"]
        .as_str()
        .ok_or("`question` is not a string")?;
    let answer = item["answer"].as_str().ok_or("`answer` is not a string")?;
    let meta = &item["metadata"];
    let ground_truth = match task {
        GymTask::Countdown => json!({"target": meta["target"], "numbers": meta["numbers"]}),
        GymTask::GsmSymbolic | GymTask::Numeric(_) => json!(answer),
    };
    let content = format!("{}\n\n{instruction}", question.trim_end());
    Ok(Row {
        data_source: task.data_source(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content,
        }]),
        ground_truth,
        extra_info: json!({"source": "reasoning-gym", "task": task.name(), "seed": req.seed,
                           "config": req.config, "index": index, "answer": answer}),
    })
}
