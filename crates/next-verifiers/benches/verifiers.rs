//! Verifier throughput (run by `cargo xtask bench verifiers`, which also times HF math-verify on
//! the same corpus): math verdicts/s on the labelled corpus, code verifications/s on the
//! HumanEval canonical solutions with the pool at 1 and 2 workers, and a Python reward function
//! (verl style) through our worker pool at 1 and 2 workers against the same function called in
//! a plain Python loop.
//!
//! Usage: `verifiers --humaneval FILE.jsonl.gz --python PYTHON --out FILE.json`.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use next_verifiers::code::CodeVerifier;
use next_verifiers::math::MathVerifier;
use next_verifiers::python::{Options, PythonReward, Style};
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
        .map(|r| Job::new(
            code.clone(),
            format!("{}{}", r["prompt"].as_str().unwrap(), r["canonical_solution"].as_str().unwrap()),
            json!({"assert": format!("{}\ncheck({})\n", r["test"].as_str().unwrap(), r["entry_point"].as_str().unwrap())}),
        ))
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
    let python = python_rewards(&corpus, std::path::Path::new(&arg("--python")));
    let doc = json!({"math_cases": corpus.len(), "math_verdicts_per_s": math_rates, "code_verifications_per_s": code_rates, "python_reward": python});
    std::fs::write(arg("--out"), serde_json::to_string_pretty(&doc).unwrap())
        .expect("write results");
}

/// A verl-style `compute_score`, `file`'s, on `rows` (response, gold): verdicts/s through
/// `PythonReward` in the pool at 1 and 2 workers, and in a Python loop over the same rows in
/// one process; the overhead per call is the difference of the times per verdict.
fn python_reward(file: &str, rows: &[(String, String)], python: &std::path::Path) -> Value {
    let rows_file =
        std::env::temp_dir().join(format!("next-bench-rows-{}.json", std::process::id()));
    std::fs::write(&rows_file, serde_json::to_string(rows).unwrap()).unwrap();
    let script = r#"
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
rows = json.load(open(sys.argv[2]))
m.compute_score(data_source="bench", solution_str=rows[0][0], ground_truth=rows[0][1])
t0 = time.perf_counter()
for r, g in rows:
    m.compute_score(data_source="bench", solution_str=r, ground_truth=g, extra_info=None)
print(len(rows) / (time.perf_counter() - t0))
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(file)
        .arg(&rows_file)
        .output()
        .expect("run python");
    let _ = std::fs::remove_file(&rows_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loop_rate: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let name = std::path::Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    eprintln!(
        "python reward {name}: {loop_rate:.0} verdicts/s in a Python loop ({} rows)",
        rows.len()
    );
    let mut rates = serde_json::Map::new();
    let mut overhead_us = serde_json::Map::new();
    for workers in [1, 2] {
        let reward: Arc<dyn Verifier> = Arc::new(
            PythonReward::start(
                format!("{file}:compute_score").parse().unwrap(),
                Options {
                    python: python.to_owned(),
                    style: Style::Verl,
                    workers,
                    timeout_s: 60.0,
                },
            )
            .expect("load the reward function"),
        );
        let jobs: Vec<Job> = rows
            .iter()
            .map(|(r, g)| Job::new(reward.clone(), r.clone(), json!(g)))
            .collect();
        let pool = Pool::new(workers).unwrap();
        // Warm-up: starts every worker (and its imports), so that start-up is not timed.
        pool.run(jobs[..jobs.len().min(16)].to_vec(), |_, _| {});
        let t0 = Instant::now();
        let verdicts = pool.run(jobs.clone(), |_, _| {});
        let rate = jobs.len() as f64 / t0.elapsed().as_secs_f64();
        assert!(verdicts
            .iter()
            .all(|v| v.kind != next_verifiers::VerdictKind::Error));
        let overhead = 1e6 * (1.0 / rate - 1.0 / loop_rate);
        eprintln!(
            "python reward {name}: {rate:.0} verdicts/s through the pool with {workers} worker(s) ({:.2}x the loop; {overhead:.1} us per call beyond it)",
            rate / loop_rate
        );
        rates.insert(workers.to_string(), rate.into());
        overhead_us.insert(workers.to_string(), overhead.into());
    }
    json!({"rows": rows.len(), "python_loop_per_s": loop_rate, "pool_per_s": rates, "overhead_us_per_call": overhead_us})
}

/// Two reward functions: a cheap one (regex extraction, microseconds: the pool's own overhead
/// shows) on the whole corpus 20 times, and HF math-verify (milliseconds: the workers' parallelism
/// shows) once on the non-adversarial cases.
fn python_rewards(corpus: &[Value], python: &std::path::Path) -> Value {
    let rows = |subset: &mut dyn Iterator<Item = &Value>| -> Vec<(String, String)> {
        subset
            .map(|r| {
                (
                    r["response"].as_str().unwrap().to_string(),
                    next_verifiers::ground_truth_text(&r["gold"]),
                )
            })
            .collect()
    };
    let cheap = rows(&mut (0..20).flat_map(|_| corpus.iter()));
    let plain = rows(&mut corpus.iter().filter(|r| r["category"] != "adversarial"));
    json!({
        "cheap": python_reward(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rewards/verl_math.py"),
            &cheap,
            python
        ),
        "math_verify": python_reward(
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/math_verify_reward.py"),
            &plain,
            python
        ),
    })
}
