//! The math verifier on the labelled corpus (`tests/data/math_corpus.jsonl`), against the
//! labels and against HF math-verify's stored verdicts on the same cases.

use next_verifiers::math::MathVerifier;
use next_verifiers::{VerdictKind, Verifier};
use serde_json::Value;

fn corpus() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/math_corpus.jsonl"
    ))
    .expect("corpus");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("corpus row is JSON"))
        .collect()
}

#[test]
fn corpus_accuracy_beats_math_verify() {
    let v = MathVerifier::default();
    let rows = corpus();
    assert!(rows.len() >= 300, "corpus has {} cases", rows.len());
    let (mut ours, mut theirs) = (0, 0);
    let mut wrong = Vec::new();
    for r in &rows {
        let label = r["label"].as_bool().expect("label");
        let verdict = v.verify(r["response"].as_str().expect("response"), &r["gold"]);
        if verdict.correct == label {
            ours += 1;
        } else {
            wrong.push(format!(
                "#{} [{}] gold {} -> {:?}: {}",
                r["id"], r["category"], r["gold"], verdict.kind, verdict.detail
            ));
        }
        if r["math_verify"]
            .as_bool()
            .expect("math_verify verdict stored")
            == label
        {
            theirs += 1;
        }
    }
    let n = rows.len();
    eprintln!(
        "ours {ours}/{n}, math-verify {theirs}/{n}\n{}",
        wrong.join("\n")
    );
    assert!(
        ours as f64 >= 0.98 * n as f64,
        "ours {ours}/{n} < 98%:\n{}",
        wrong.join("\n")
    );
    assert!(ours >= theirs, "ours {ours} < math-verify {theirs}");
}

/// `check(response, gold, kind)` for the verdict kinds (not only right/wrong).
fn check(response: &str, gold: &str, kind: VerdictKind) {
    let v = MathVerifier::default().verify(response, &Value::String(gold.into()));
    assert_eq!(v.kind, kind, "{response:?} vs {gold:?}: {}", v.detail);
    assert_eq!(v.correct, kind == VerdictKind::Correct);
    assert_eq!(v.reward, if v.correct { 1.0 } else { 0.0 });
}

#[test]
fn verdict_kinds() {
    check("so \\boxed{4}", "4", VerdictKind::Correct);
    check("so \\boxed{5}", "4", VerdictKind::Wrong);
    check("no idea", "4", VerdictKind::NoAnswer);
    check("", "4", VerdictKind::NoAnswer);
    // "answer is correct" judges an answer (SmolLM2 writes it after its sum): look further.
    check(
        "20 + 11 = 31\n\nYour answer is correct.",
        "31",
        VerdictKind::Correct,
    );
    check(
        "20 + 11 = 30\n\nThe answer is correct.",
        "31",
        VerdictKind::Wrong,
    );
    check(
        "Checking each option, the answer is B.",
        "B",
        VerdictKind::Correct,
    );
    let v = MathVerifier::default().verify("\\boxed{4}", &Value::String(String::new()));
    assert_eq!(v.kind, VerdictKind::Error);
    // A full solution as ground truth: its boxed answer is the gold.
    check(
        "\\boxed{12}",
        "We add 5 and 7 to get \\boxed{12}.",
        VerdictKind::Correct,
    );
}

#[test]
fn adversarial_inputs_are_bounded() {
    let v = MathVerifier::default();
    let hostile = [
        format!("\\boxed{{{}}}", "{".repeat(100_000)),
        format!("\\boxed{{{}1{}}}", "(".repeat(50_000), ")".repeat(50_000)),
        "\\boxed{10^{10^{10^{10}}}}".to_string(),
        "\\boxed{9^{9^{9^{9}}}!}".to_string(),
        format!("\\boxed{{{}}}", "\\frac{1}{".repeat(3000)),
        format!(
            "{} \\boxed{{x^{{{}}}}}",
            "a".repeat(100_000),
            "9".repeat(5_000)
        ),
        "\\boxed{\\sqrt[1000000]{2}^{999999}}".to_string(),
        format!("\\boxed{{{}}}", "x".repeat(900)),
        format!("\\boxed{{{}}}", "1+".repeat(450) + "1"),
        "\\boxed{\\binom{10^{100}}{3000}}".to_string(),
        "\\boxed{\\binom{x}{170} + \\binom{y}{3000}}".to_string(),
        format!(
            "\\boxed{{\\begin{{pmatrix}}{}\\end{{pmatrix}}}}",
            "\\begin{pmatrix}".repeat(100)
        ),
    ];
    for h in &hostile {
        let start = std::time::Instant::now();
        let verdict = v.verify(h, &Value::String("2".into()));
        assert!(
            !verdict.correct,
            "hostile input judged correct: {}",
            &h[..h.len().min(80)]
        );
        assert!(
            start.elapsed().as_secs_f64() < 2.0,
            "took {:?} on {}",
            start.elapsed(),
            &h[..h.len().min(80)]
        );
    }
}

/// The answer families added for MATH-style outputs (matrices, binomial coefficients, choice
/// letters written with their value, long decimal expansions): every labelled case right, so
/// that a family cannot regress behind the corpus-wide rate.
#[test]
fn answer_families_are_right_case_by_case() {
    let v = MathVerifier::default();
    let families = ["matrix", "binomial", "choice", "long_decimal"];
    let mut seen = 0;
    for r in corpus()
        .iter()
        .filter(|r| families.contains(&r["category"].as_str().unwrap_or("")))
    {
        seen += 1;
        let verdict = v.verify(r["response"].as_str().unwrap(), &r["gold"]);
        assert_eq!(
            verdict.correct,
            r["label"].as_bool().unwrap(),
            "#{} [{}] gold {} response {}: {}",
            r["id"],
            r["category"],
            r["gold"],
            r["response"],
            verdict.detail
        );
    }
    assert!(seen >= 40, "{seen} cases");
}
