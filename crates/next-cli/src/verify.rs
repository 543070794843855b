//! `next verify`: scores JSONL rows `{"response", "ground_truth"}` with a verifier and writes
//! them back with `reward`, `correct`, `kind` and `detail`; a progress bar and a summary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use next_verifiers::code::CodeVerifier;
use next_verifiers::{Job, Pool, Registry, VerdictKind, Verifier};
use serde_json::{Map, Value};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// math, countdown, exact, code; or `auto` to pick by each row's `data_source`.
    #[arg(long, default_value = "auto")]
    verifier: String,
    /// JSONL rows with `response` and `ground_truth` (other fields are passed through).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the scored rows (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Verifications in flight at once.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Code: wall-time and CPU-time limit per test run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Code: reward the fraction of passing io cases instead of all-or-nothing.
    #[arg(long)]
    partial_credit: bool,
}

/// Rows verified per batch: bounds memory on long inputs while keeping the pool busy.
const CHUNK: usize = 4096;

fn parse_row(line: &str, path: &std::path::Path, lineno: usize) -> Result<Map<String, Value>> {
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("{}:{lineno}: not valid JSON", path.display()))?;
    let Value::Object(row) = v else {
        bail!("{}:{lineno}: expected a JSON object", path.display())
    };
    if !row.get("response").is_some_and(Value::is_string) {
        bail!(
            "{}:{lineno}: missing string field `response`",
            path.display()
        );
    }
    if !row.contains_key("ground_truth") {
        bail!("{}:{lineno}: missing field `ground_truth`", path.display());
    }
    Ok(row)
}

pub fn run(a: Args) -> Result<()> {
    let partial = a.output.as_ref().map(|o| o.with_extension("jsonl.partial"));
    let result = verify(a);
    if result.is_err() {
        if let Some(p) = partial {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn verify(a: Args) -> Result<()> {
    let mut registry = Registry::default();
    let code = CodeVerifier {
        limits: next_verifiers::code::Limits {
            wall_s: a.timeout,
            cpu_s: a.timeout.ceil() as u64,
            ..Default::default()
        },
        partial_credit: a.partial_credit,
        ..CodeVerifier::default()
    };
    registry.register(Arc::new(code));
    let fixed: Option<Arc<dyn Verifier>> = if a.verifier == "auto" {
        None
    } else {
        Some(registry.get(&a.verifier)?)
    };
    let file = std::fs::File::open(&a.input)
        .with_context(|| format!("cannot open {}", a.input.display()))?;
    // Count lines for the progress bar only in a regular file: a pipe (`--input /dev/stdin`)
    // can be read once, and counting would consume every row before verification.
    let total_lines = if file.metadata().is_ok_and(|m| m.is_file()) {
        Some(
            BufReader::new(std::fs::File::open(&a.input)?)
                .lines()
                .count(),
        )
    } else {
        None
    };
    let pool = Pool::new(a.workers)?;

    // Write to a temporary file next to the output and rename at the end: no half-written output.
    let tmp_path = a.output.as_ref().map(|o| o.with_extension("jsonl.partial"));
    let mut out: Box<dyn Write> = match &tmp_path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = match total_lines {
        Some(n) => ProgressBar::new(n as u64).with_style(ProgressStyle::with_template(
            "verify {bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}",
        )?),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
            "verify {pos} rows [{elapsed}] {msg}",
        )?),
    };
    let mut counts: BTreeMap<VerdictKind, usize> = BTreeMap::new();
    let mut reward_sum = 0.0;
    let mut n = 0usize;
    let mut lines = BufReader::new(file).lines().enumerate();
    loop {
        let mut rows = Vec::new();
        let mut jobs = Vec::new();
        for (i, line) in lines.by_ref() {
            let line =
                line.with_context(|| format!("{}:{}: cannot read", a.input.display(), i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let row = parse_row(&line, &a.input, i + 1)?;
            let verifier = match &fixed {
                Some(v) => v.clone(),
                None => {
                    let source = row
                        .get("data_source")
                        .and_then(Value::as_str)
                        .with_context(|| {
                            format!(
                                "{}:{}: no `data_source` to pick a verifier (or pass --verifier)",
                                a.input.display(),
                                i + 1
                            )
                        })?;
                    registry
                        .for_source(source)
                        .with_context(|| format!("{}:{}", a.input.display(), i + 1))?
                }
            };
            jobs.push(Job {
                verifier,
                response: row["response"].as_str().unwrap_or_default().to_string(),
                ground_truth: row["ground_truth"].clone(),
            });
            rows.push(row);
            if rows.len() == CHUNK {
                break;
            }
        }
        if rows.is_empty() {
            break;
        }
        let verdicts = pool.run(jobs, |_, _| bar.inc(1));
        for (mut row, v) in rows.into_iter().zip(verdicts) {
            *counts.entry(v.kind).or_default() += 1;
            reward_sum += v.reward;
            n += 1;
            row.insert("reward".into(), v.reward.into());
            row.insert("correct".into(), v.correct.into());
            row.insert("kind".into(), v.kind.as_str().into());
            row.insert("detail".into(), v.detail.into());
            writeln!(out, "{}", Value::Object(row))?;
        }
        bar.set_message(format!("mean reward {:.3}", reward_sum / n.max(1) as f64));
    }
    out.flush()?;
    drop(out);
    if let (Some(tmp), Some(dest)) = (&tmp_path, &a.output) {
        std::fs::rename(tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    }
    bar.finish_and_clear();
    let by_kind: Vec<String> = counts
        .iter()
        .map(|(k, c)| format!("{} {c}", k.as_str()))
        .collect();
    eprintln!(
        "verified {n} rows: {}; mean reward {:.4}",
        by_kind.join(", "),
        reward_sum / n.max(1) as f64
    );
    Ok(())
}
