//! `countdown`: the TinyZero rule — the expression in the last `<answer>...</answer>` must use
//! exactly the given numbers and evaluate to the target. Reward 1 when it does, 0.1 for a
//! well-formed but wrong answer, 0 when there is no answer.

use num_traits::{ToPrimitive, Zero};
use serde_json::Value;

use crate::math::expr::{self, Expr};
use crate::{Verdict, Verifier};

/// The Countdown verifier. Ground truth: `{"target": 24, "numbers": [1, 2, 3, 4]}`
/// (`"nums"` is accepted for `"numbers"`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Countdown;

pub const FORMAT_SCORE: f64 = 0.1;

/// The text inside the last `<answer>...</answer>`.
pub fn last_answer(response: &str) -> Option<&str> {
    let end = response.rfind("</answer>")?;
    let start = response[..end].rfind("<answer>")? + "<answer>".len();
    Some(response[start..end].trim())
}

fn parse_truth(v: &Value) -> Option<(i64, Vec<i64>)> {
    let target = v.get("target")?.as_i64()?;
    let nums = v.get("numbers").or_else(|| v.get("nums"))?.as_array()?;
    let nums = nums.iter().map(Value::as_i64).collect::<Option<Vec<_>>>()?;
    Some((target, nums))
}

impl Verifier for Countdown {
    fn name(&self) -> &str {
        "countdown"
    }

    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
        let Some((target, mut numbers)) = parse_truth(ground_truth) else {
            return Verdict::error(format!(
                "ground truth must be {{\"target\": int, \"numbers\": [int]}}, got {ground_truth}"
            ));
        };
        let Some(eq) = last_answer(response) else {
            return Verdict::no_answer("no <answer>...</answer>");
        };
        // Like TinyZero: only digits, operators, parentheses and spaces; an `= target` tail is allowed.
        let lhs = eq.split('=').next().unwrap_or("").trim();
        if lhs.is_empty()
            || !lhs
                .chars()
                .all(|c| c.is_ascii_digit() || "+-*/(). ".contains(c))
            || lhs.len() > 1000
        {
            return Verdict::wrong(
                FORMAT_SCORE,
                format!("not an arithmetic expression: {eq:?}"),
            );
        }
        let mut used: Vec<i64> = Vec::new();
        let mut cur = String::new();
        for c in lhs.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                cur.push(c);
            } else if !cur.is_empty() {
                match cur.parse() {
                    Ok(n) => used.push(n),
                    Err(_) => {
                        return Verdict::wrong(FORMAT_SCORE, format!("number too large in {eq:?}"))
                    }
                }
                cur.clear();
            }
        }
        used.sort_unstable();
        numbers.sort_unstable();
        if used != numbers {
            return Verdict::wrong(
                FORMAT_SCORE,
                format!("uses {used:?}, must use exactly {numbers:?}"),
            );
        }
        let value = expr::parse(lhs)
            .ok()
            .and_then(|e: Expr| e.eval_exact(&expr::Budget::default()));
        match value {
            Some(v)
                if !v.denom().is_zero()
                    && v == num_rational::BigRational::from_integer(target.into()) =>
            {
                Verdict::correct(format!("{lhs} = {target}"))
            }
            Some(v) => Verdict::wrong(
                FORMAT_SCORE,
                format!(
                    "{lhs} = {}, target {target}",
                    v.to_f64().unwrap_or(f64::NAN)
                ),
            ),
            None => Verdict::wrong(
                FORMAT_SCORE,
                format!("cannot evaluate {lhs:?} (division by zero?)"),
            ),
        }
    }
}
