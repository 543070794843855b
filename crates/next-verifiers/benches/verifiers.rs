//! Verifier throughput (run by `cargo xtask bench verifiers`, which also times HF math-verify on
//! the same corpus): math verdicts/s on the labelled corpus, and code verifications/s on the
//! HumanEval canonical solutions with the pool at 1 and 2 workers.
//!
//! Usage: `verifiers --humaneval FILE.jsonl.gz --out FILE.json`.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use next_verifiers::code::CodeVerifier;
use next_verifiers::math::MathVerifier;
use next_verifiers::{Job, Pool, Verifier};
use serde_json::{json, Value};

fn arg(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| panic!("{name} is required"))
}

fn main() {
    let corpus: Vec<Value> = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/math_corpus.jsonl"
    ))
    .expect("corpus")
    .lines()
    .map(|l| serde_json::from_str(l).expect("row"))
    .collect();
    let math = MathVerifier::default();
    let passes = 20;
    let mut math_rates = serde_json::Map::new();
    let plain: Vec<Value> = corpus
        .iter()
        .filter(|r| r["category"] != "adversarial")
        .cloned()
        .collect();
    for (name, subset) in [("all", &corpus), ("non_adversarial", &plain)] {
        let t0 = Instant::now();
        for _ in 0..passes {
            for r in subset {
                std::hint::black_box(math.verify(r["response"].as_str().unwrap(), &r["gold"]));
            }
        }
        let rate = (passes * subset.len()) as f64 / t0.elapsed().as_secs_f64();
        eprintln!(
            "math ({name}): {rate:.0} verdicts/s ({} cases x {passes})",
            subset.len()
        );
        math_rates.insert(name.into(), rate.into());
    }

    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(arg("--humaneval")).expect("HumanEval file"))
        .read_to_string(&mut text)
        .unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let code: Arc<dyn Verifier> = Arc::new(CodeVerifier::default());
    let jobs: Vec<Job> = rows
        .iter()
        .map(|r| Job {
            verifier: code.clone(),
            response: format!("{}{}", r["prompt"].as_str().unwrap(), r["canonical_solution"].as_str().unwrap()),
            ground_truth: json!({"assert": format!("{}\ncheck({})\n", r["test"].as_str().unwrap(), r["entry_point"].as_str().unwrap())}),
        })
        .collect();
    let mut code_rates = serde_json::Map::new();
    for workers in [1, 2] {
        let pool = Pool::new(workers).unwrap();
        let t0 = Instant::now();
        let verdicts = pool.run(jobs.clone(), |_, _| {});
        let rate = jobs.len() as f64 / t0.elapsed().as_secs_f64();
        let passed = verdicts.iter().filter(|v| v.correct).count();
        eprintln!(
            "code: {rate:.1} verifications/s with {workers} worker(s) ({passed}/{} passed)",
            jobs.len()
        );
        code_rates.insert(workers.to_string(), rate.into());
    }
    let doc = json!({"math_cases": corpus.len(), "math_verdicts_per_s": math_rates, "code_verifications_per_s": code_rates});
    std::fs::write(arg("--out"), serde_json::to_string_pretty(&doc).unwrap())
        .expect("write results");
}
