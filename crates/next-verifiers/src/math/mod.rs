//! `math`: final-answer checking for math problems — extraction (last `\boxed{}`, `####`,
//! `Answer:`, last number), normalisation (units, `$`, `\text`, `\left`, degrees, percent,
//! thousands separators), and equivalence decided exactly where possible (rationals),
//! numerically otherwise (expressions with variables at random points), for tuples, intervals,
//! sets, matrices, binomial coefficients, equations and multiple-choice letters (also written
//! with their value, `\textbf{(B)}\ 12`). Every step is bounded in time and size.
//!
//! Tolerance policy: rational values are compared exactly, with one exception — a decimal of
//! at least [`MIN_EXPANSION_DIGITS`] fractional digits stands for a fraction whose expansion
//! does not terminate (1/3, 2/7) when it is that fraction rounded or truncated to the digits
//! written (`0.333333`, `0.6666667`; not `0.333`). A terminating value stays exact (1.5 is not
//! 1.5000001, which math-verify accepts). Irrational values are compared to 1e-9 relative.

pub mod expr;
mod normalize;

use std::collections::BTreeSet;

use num_complex::Complex64;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use normalize::{choice_letter, normalize, Normalized};

use crate::{ground_truth_text, Verdict, Verifier};
use expr::{Budget, Const, Expr};

/// Where an answer can be taken from, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The last brace-matched `\boxed{...}` (or `\fbox{...}`).
    Boxed,
    /// A `#### N` line (GSM8K).
    Hash,
    /// An `Answer: ...` or `the answer is ...` line.
    AnswerLine,
    /// The last number in the response.
    LastNumber,
}

/// The math verifier.
#[derive(Debug, Clone)]
pub struct MathVerifier {
    pub order: Vec<AnswerSource>,
    /// Extracted answers longer than this are judged wrong without parsing.
    pub max_answer_len: usize,
}

impl Default for MathVerifier {
    fn default() -> Self {
        MathVerifier {
            order: vec![
                AnswerSource::Boxed,
                AnswerSource::Hash,
                AnswerSource::AnswerLine,
                AnswerSource::LastNumber,
            ],
            max_answer_len: 1_000,
        }
    }
}

/// The content of the last `\boxed{...}` / `\fbox{...}`, brace-matched (`\{` and `\}` are
/// literal braces). `None` when there is none or it is unclosed.
pub fn last_boxed(s: &str) -> Option<&str> {
    let start = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|m| s.rfind(m).map(|i| (i, m.len())))
        .max_by_key(|(i, _)| *i)?;
    let rest = &s[start.0 + start.1..];
    let trimmed = rest.trim_start();
    if let Some(body) = trimmed.strip_prefix('{') {
        let mut depth = 1usize;
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 1,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&body[..i]);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    } else {
        // `\boxed 5`: the next token.
        let end = trimmed
            .find(|c: char| c.is_whitespace() || c == '$')
            .unwrap_or(trimmed.len());
        (end > 0).then(|| &trimmed[..end])
    }
}

fn line_after<'a>(s: &'a str, markers: &[&str]) -> Option<&'a str> {
    let lower = s.to_lowercase();
    // Lower-casing can change byte offsets for some scripts; only trust ASCII-safe positions.
    if lower.len() != s.len() {
        return None;
    }
    let (i, m) = markers
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| (i, m.len())))
        .max_by_key(|(i, _)| *i)?;
    let rest = &s[i + m..];
    let line = rest.lines().next().unwrap_or("").trim();
    let line = line.trim_end_matches('.').trim();
    (!line.is_empty()).then_some(line)
}

/// Whether an `answer is ...` line judges an answer instead of giving one ("Your answer is
/// correct." after `20 + 11 = 31`, written by SmolLM2): the extraction then looks further.
fn is_judgement(line: &str) -> bool {
    let l = line
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_ascii_lowercase();
    ["correct", "incorrect", "not correct", "right", "wrong"].contains(&l.as_str())
}

/// The last number (`-1,234.5`, `3/4`) in the text.
pub fn last_number(s: &str) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut best = None;
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let mut start = i;
            if start > 0 && chars[start - 1] == '-' {
                start -= 1;
            }
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || ((chars[i] == ',' || chars[i] == '.' || chars[i] == '/')
                        && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())))
            {
                i += 1;
            }
            best = Some(chars[start..i].iter().collect::<String>());
        } else {
            i += 1;
        }
    }
    best
}

impl MathVerifier {
    /// The answer text of a response and where it was found.
    pub fn extract(&self, response: &str) -> Option<(AnswerSource, String)> {
        for src in &self.order {
            let found = match src {
                AnswerSource::Boxed => last_boxed(response).map(str::to_owned),
                AnswerSource::Hash => response
                    .rfind("####")
                    .map(|i| {
                        response[i + 4..]
                            .lines()
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_owned()
                    })
                    .filter(|s| !s.is_empty()),
                AnswerSource::AnswerLine => line_after(response, &["answer:", "answer is"])
                    .filter(|a| !is_judgement(a))
                    .map(str::to_owned),
                AnswerSource::LastNumber => last_number(response),
            };
            if let Some(a) = found {
                if !a.trim().is_empty() {
                    return Some((*src, a));
                }
            }
        }
        None
    }
}

/// Whether two answers (already extracted) are mathematically the same.
pub fn equivalent(gold: &str, pred: &str) -> bool {
    let (g, p) = (normalize(gold), normalize(pred));
    if g.text.is_empty() || p.text.is_empty() {
        return false;
    }
    if g.text == p.text && g.percent == p.percent {
        return true;
    }
    if let Some(gl) = choice_letter(&g.text) {
        return choice_letter(&p.text).or_else(|| labelled_choice(&p.text)) == Some(gl);
    }
    match (expr::parse(&g.text), expr::parse(&p.text)) {
        (Ok(ge), Ok(pe)) => {
            if same(&ge, &pe) || expansion_of(&g.text, &pe) || expansion_of(&p.text, &ge) {
                return true;
            }
            // A percent may be written as the number of percent or as a fraction.
            let hundred = |e: &Expr| {
                Expr::Div(
                    Box::new(e.clone()),
                    Box::new(Expr::Num(num_rational::BigRational::from_integer(
                        100.into(),
                    ))),
                )
            };
            (p.percent && !g.percent && same(&ge, &hundred(&pe)))
                || (g.percent && !p.percent && same(&hundred(&ge), &pe))
        }
        _ => loose_text(&g.text) == loose_text(&p.text),
    }
}

/// Fewest fractional digits of a decimal read as a non-terminating fraction's expansion.
pub const MIN_EXPANSION_DIGITS: usize = 6;

/// The letter of an answer that names a choice together with its value: `(B) 12` (from
/// `\textbf{(B)}\ 12`), with no other choice named after it.
fn labelled_choice(s: &str) -> Option<char> {
    let rest = s.trim().strip_prefix('(')?;
    let mut chars = rest.chars();
    let (letter, close) = (chars.next()?, chars.next()?);
    if !('A'..='E').contains(&letter) || close != ')' {
        return None;
    }
    let value = chars.as_str();
    let names_another = ('A'..='E').any(|c| value.contains(&format!("({c})")));
    (!names_another).then_some(letter)
}

/// Whether `decimal` is a plain decimal of at least [`MIN_EXPANSION_DIGITS`] fractional digits
/// that equals the exact value of `other` — a fraction whose expansion does not terminate —
/// rounded (half away from zero) or truncated to that many digits.
fn expansion_of(decimal: &str, other: &Expr) -> bool {
    use num_bigint::BigInt;
    use num_rational::BigRational;
    use num_traits::{Signed, Zero};
    let t = decimal.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let Some((int, frac)) = digits.split_once('.') else {
        return false;
    };
    if int.is_empty()
        || !(MIN_EXPANSION_DIGITS..=100).contains(&frac.len())
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let Some(value) = other.eval_exact(&expr::Budget::default()) else {
        return false;
    };
    // Only 2 and 5 divide a power of ten: any other factor means the expansion never ends.
    let mut d = value.denom().clone();
    for p in [2u32, 5] {
        let p = BigInt::from(p);
        while (&d % &p).is_zero() {
            d /= &p;
        }
    }
    if d == BigInt::from(1) {
        return false;
    }
    let Ok(written) = expr::parse(t) else {
        return false;
    };
    let Some(written) = written.eval_exact(&expr::Budget::default()) else {
        return false;
    };
    let scale = BigRational::from_integer(num_traits::pow(BigInt::from(10), frac.len()));
    let scaled = &value * &scale;
    let truncated = scaled.trunc();
    let half = BigRational::new(BigInt::from(1), BigInt::from(2));
    let rounded = if scaled.is_negative() {
        (&scaled - &half).ceil()
    } else {
        (&scaled + &half).floor()
    };
    written == truncated / &scale || written == rounded / &scale
}

/// Text comparison for answers that do not parse: no spaces, braces or enclosing parentheses.
fn loose_text(s: &str) -> String {
    let mut t: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '{' && *c != '}')
        .collect::<String>()
        .to_lowercase();
    while t.starts_with('(') && t.ends_with(')') && balanced(&t[1..t.len() - 1]) {
        t = t[1..t.len() - 1].to_string();
    }
    t
}

fn balanced(s: &str) -> bool {
    let mut depth = 0i64;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// Drops `x =` on one side when the other is a bare value.
fn strip_eq(e: &Expr) -> &Expr {
    match e {
        Expr::Eq(l, r) if matches!(**l, Expr::Var(_)) => r,
        _ => e,
    }
}

fn expand_pm(e: &Expr) -> Option<Vec<Expr>> {
    match e {
        Expr::PlusMinus(a, b) => Some(vec![
            Expr::Add(a.clone(), b.clone()),
            Expr::Sub(a.clone(), b.clone()),
        ]),
        _ => None,
    }
}

/// Structural equivalence: collections element by element, scalars by value.
fn same(a: &Expr, b: &Expr) -> bool {
    match (a, b) {
        (Expr::Eq(l1, r1), Expr::Eq(l2, r2)) => {
            (same(l1, l2) && same(r1, r2)) || (same(l1, r2) && same(r1, l2))
        }
        (Expr::Eq(..), _) | (_, Expr::Eq(..)) => {
            let (x, y) = (strip_eq(a), strip_eq(b));
            if std::ptr::eq(x, a) && std::ptr::eq(y, b) {
                return false;
            }
            same(x, y)
        }
        (Expr::Set(x), Expr::Set(y)) => same_multiset(x, y),
        (Expr::Set(x), Expr::Seq(_, y, _)) | (Expr::Seq(_, y, _), Expr::Set(x)) => {
            // A bare list "1, 2" against a bracketed "(1, 2)": same elements in the same order.
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Expr::Matrix(x), Expr::Matrix(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(r, s)| r.len() == s.len() && r.iter().zip(s).all(|(p, q)| same(p, q)))
        }
        (Expr::Seq(o1, x, c1), Expr::Seq(o2, y, c2)) => {
            o1 == o2 && c1 == c2 && x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => match (expand_pm(a), expand_pm(b)) {
            (Some(x), Some(y)) => same_multiset(&x, &y),
            (Some(x), None) => matches!(b, Expr::Set(y) if same_multiset(&x, y)),
            (None, Some(y)) => matches!(a, Expr::Set(x) if same_multiset(x, &y)),
            (None, None) => same_value(a, b),
        },
    }
}

fn same_multiset(x: &[Expr], y: &[Expr]) -> bool {
    if x.len() != y.len() {
        return false;
    }
    let mut used = vec![false; y.len()];
    x.iter().all(
        |p| match (0..y.len()).find(|&j| !used[j] && same(p, &y[j])) {
            Some(j) => {
                used[j] = true;
                true
            }
            None => false,
        },
    )
}

fn has_inf(e: &Expr) -> bool {
    match e {
        Expr::Const(Const::Inf) => true,
        Expr::Neg(a) => has_inf(a),
        Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) => has_inf(a) || has_inf(b),
        _ => false,
    }
}

/// Relative closeness of two complex values.
fn close(a: Complex64, b: Complex64) -> bool {
    (a - b).norm() <= 1e-9 * (1.0 + a.norm().max(b.norm()))
}

/// Scalar equivalence: exact when both sides are rational, else by evaluation (at random
/// points when there are variables).
fn same_value(a: &Expr, b: &Expr) -> bool {
    if has_inf(a) || has_inf(b) {
        return a == b;
    }
    let budget = Budget::default();
    if let (Some(x), Some(y)) = (a.eval_exact(&budget), b.eval_exact(&budget)) {
        return x == y;
    }
    let mut vars = BTreeSet::new();
    a.vars(&mut vars);
    b.vars(&mut vars);
    if vars.is_empty() {
        let none = |_: &str| None;
        return match (a.eval_num(&none), b.eval_num(&none)) {
            (Some(x), Some(y)) => close(x, y),
            _ => a == b,
        };
    }
    if vars.len() > 8 {
        return a == b;
    }
    // Deterministic points, so a verdict never changes between runs.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let names: Vec<String> = vars.into_iter().collect();
    let mut agreed = 0;
    for _ in 0..8 {
        let point: Vec<f64> = names.iter().map(|_| rng.random_range(0.5..3.5)).collect();
        let env = |n: &str| {
            names
                .iter()
                .position(|m| m == n)
                .map(|i| Complex64::new(point[i], 0.0))
        };
        match (a.eval_num(&env), b.eval_num(&env)) {
            (Some(x), Some(y)) if close(x, y) => agreed += 1,
            (None, None) => {}
            _ => return false,
        }
    }
    agreed >= 3
}

impl Verifier for MathVerifier {
    fn name(&self) -> &str {
        "math"
    }

    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
        let gold_text = ground_truth_text(ground_truth);
        // A full reference solution may be given as the ground truth: use its boxed answer.
        let gold = last_boxed(&gold_text)
            .map(str::to_owned)
            .unwrap_or(gold_text);
        if gold.trim().is_empty() {
            return Verdict::error("empty ground truth");
        }
        let Some((src, answer)) = self.extract(response) else {
            return Verdict::no_answer("no answer found");
        };
        if answer.len() > self.max_answer_len {
            return Verdict::wrong(
                0.0,
                format!(
                    "answer of {} bytes is longer than the {} allowed",
                    answer.len(),
                    self.max_answer_len
                ),
            );
        }
        let shown: String = answer.chars().take(200).collect();
        if equivalent(&gold, &answer) {
            Verdict::correct(format!("{src:?}: {shown}"))
        } else {
            Verdict::wrong(0.0, format!("{src:?}: {shown} (expected {gold})"))
        }
    }
}
