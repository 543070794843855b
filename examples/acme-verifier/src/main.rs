//! `acme-verify INPUT.jsonl [OUTPUT.jsonl]`: `next verify` with ACME's verifier registered —
//! rows are judged by the verifier their `data_source` picks, ACME's or ours.

use std::io::{BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use next_verifiers::rows::{self, Choice};
use next_verifiers::Pool;

fn run(args: &[String]) -> Result<String, String> {
    let [input, rest @ ..] = args else {
        return Err("usage: acme-verify INPUT.jsonl [OUTPUT.jsonl]".into());
    };
    let registry = acme_verifier::registry().map_err(|e| e.to_string())?;
    let file = std::fs::File::open(input).map_err(|e| format!("{input}: {e}"))?;
    let mut out: Box<dyn Write> = match rest.first() {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let pool = Pool::new(2).map_err(|e| e.to_string())?;
    let summary = rows::score(
        BufReader::new(file),
        Path::new(input),
        &mut out,
        &registry,
        &Choice::BySource,
        &pool,
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(format!(
        "verified {} rows; mean reward {:.4}",
        summary.rows,
        summary.mean_reward()
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(msg) => {
            eprintln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("acme-verify: {e}");
            ExitCode::FAILURE
        }
    }
}
