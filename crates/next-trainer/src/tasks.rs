//! The embedded task family, generated procedurally and deterministically by seed, with
//! disjoint train / validation / test splits: fixed-width addition at several difficulty levels
//! and countdown.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::row::{Prompt, Row};
use crate::{Error, Result};

/// Which split a problem belongs to (decided by a hash of the problem itself, so the splits are
/// disjoint whatever the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Split {
    Train,
    Val,
    Test,
}

/// A task of the embedded family; written in configs by name (`add3`, `countdown4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Task {
    /// `abc+def=` → the sum with `digits + 1` digits, zero-padded.
    Add { digits: u32 },
    /// Countdown with `numbers` operands from 1..=25.
    Countdown { numbers: usize },
}

impl TryFrom<String> for Task {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        Task::parse(&s).map_err(|e| match e {
            Error::Config(m) => m,
            other => other.to_string(),
        })
    }
}

impl From<Task> for String {
    fn from(t: Task) -> String {
        t.name()
    }
}

impl Task {
    /// Parses `add2`, `add3`, `add4`, `countdown3`, `countdown4`.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "unknown task `{name}` (available: add2, add3, add4, countdown3, countdown4)"
            ))
        };
        if let Some(d) = name.strip_prefix("add") {
            let digits: u32 = d.parse().map_err(|_| bad())?;
            if (1..=6).contains(&digits) {
                return Ok(Task::Add { digits });
            }
        }
        if let Some(n) = name.strip_prefix("countdown") {
            let numbers: usize = n.parse().map_err(|_| bad())?;
            if (2..=5).contains(&numbers) {
                return Ok(Task::Countdown { numbers });
            }
        }
        Err(bad())
    }

    pub fn name(self) -> String {
        match self {
            Task::Add { digits } => format!("add{digits}"),
            Task::Countdown { numbers } => format!("countdown{numbers}"),
        }
    }

    /// The `data_source` of its rows (it selects the verifier).
    pub fn data_source(&self) -> String {
        match self {
            Task::Add { .. } => format!("arith_{}", self.name()),
            Task::Countdown { .. } => "countdown".into(),
        }
    }

    /// Every character its prompts and answers use (for the character tokenizer).
    pub fn alphabet(&self) -> &'static str {
        match self {
            Task::Add { .. } => "0123456789+=",
            Task::Countdown { .. } => "0123456789+-*/()=,:<>answer",
        }
    }
}

fn split_of(key: u64) -> Split {
    // SplitMix64 finaliser: a fixed hash, independent of any seed.
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    match (z ^ (z >> 31)) % 100 {
        0..=79 => Split::Train,
        80..=89 => Split::Val,
        _ => Split::Test,
    }
}

/// The answer of `a + b` with `digits + 1` digits; with `drop_carry`, each carry is lost with
/// that probability (the corrupted pretraining data of the embedded base model).
pub fn add_answer(
    a: u64,
    b: u64,
    digits: u32,
    drop_carry: Option<(f64, &mut ChaCha8Rng)>,
) -> String {
    let width = digits as usize + 1;
    let Some((p, rng)) = drop_carry else {
        return format!("{:0width$}", a + b);
    };
    let (mut x, mut y, mut carry) = (a, b, 0u64);
    let mut out = Vec::with_capacity(width);
    for _ in 0..width {
        let s = x % 10 + y % 10 + carry;
        out.push(char::from(b'0' + (s % 10) as u8));
        carry = s / 10;
        if carry > 0 && rng.random::<f64>() < p {
            carry = 0;
        }
        x /= 10;
        y /= 10;
    }
    out.iter().rev().collect()
}

/// `n` distinct problems of `task` from `split`, deterministic given `seed`.
pub fn generate(task: Task, split: Split, n: usize, seed: u64) -> Result<Vec<Row>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a5c_0000 ^ split as u64);
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::with_capacity(n);
    let mut attempts = 0usize;
    while rows.len() < n {
        attempts += 1;
        if attempts > 100 * n + 10_000 {
            return Err(Error::Config(format!(
                "task {} has fewer than {n} distinct {split:?} problems",
                task.name()
            )));
        }
        match task {
            Task::Add { digits } => {
                let lo = 10u64.pow(digits - 1);
                let hi = 10u64.pow(digits);
                let (a, b) = (rng.random_range(lo..hi), rng.random_range(lo..hi));
                let key = a * hi + b;
                if split_of(key) != split || !seen.insert(key) {
                    continue;
                }
                rows.push(Row {
                    data_source: task.data_source(),
                    prompt: Prompt::Text(format!("{a}+{b}=")),
                    ground_truth: json!(add_answer(a, b, digits, None)),
                    extra_info: json!({"task": task.name(), "split": split, "a": a, "b": b}),
                });
            }
            Task::Countdown { numbers } => {
                let nums: Vec<u64> = (0..numbers).map(|_| rng.random_range(1..=25)).collect();
                // A target reachable by applying + - * in order to a shuffled copy.
                let mut order = nums.clone();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                let mut target = order[0] as i64;
                for &x in &order[1..] {
                    target = match rng.random_range(0..3) {
                        0 => target + x as i64,
                        1 if target > x as i64 => target - x as i64,
                        _ => target * x as i64,
                    };
                }
                if !(1..=999).contains(&target) {
                    continue;
                }
                let mut sorted = nums.clone();
                sorted.sort_unstable();
                let key = sorted.iter().fold(target as u64, |k, &x| k * 31 + x);
                if split_of(key) != split || !seen.insert(key) {
                    continue;
                }
                let list: Vec<String> = nums.iter().map(u64::to_string).collect();
                rows.push(Row {
                    data_source: task.data_source(),
                    prompt: Prompt::Text(format!("{}:{target}=", list.join(","))),
                    ground_truth: json!({"target": target, "numbers": nums}),
                    extra_info: json!({"task": task.name(), "split": split}),
                });
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint_and_deterministic() {
        let task = Task::parse("add3").unwrap();
        let train = generate(task, Split::Train, 2000, 1).unwrap();
        let val = generate(task, Split::Val, 500, 1).unwrap();
        let again = generate(task, Split::Train, 2000, 1).unwrap();
        assert_eq!(train, again);
        let t: std::collections::HashSet<_> =
            train.iter().map(|r| format!("{:?}", r.prompt)).collect();
        assert!(val.iter().all(|r| !t.contains(&format!("{:?}", r.prompt))));
        assert_ne!(
            generate(task, Split::Train, 50, 2).unwrap(),
            train[..50].to_vec()
        );
    }

    #[test]
    fn answers_and_dropped_carries() {
        assert_eq!(add_answer(579, 0, 3, None), "0579");
        assert_eq!(add_answer(999, 1, 3, None), "1000");
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // With every carry dropped, 999 + 1 loses all of them.
        assert_eq!(add_answer(999, 1, 3, Some((1.0, &mut rng))), "0990");
        assert_eq!(add_answer(123, 456, 3, Some((1.0, &mut rng))), "0579");
    }

    #[test]
    fn countdown_targets_are_reachable() {
        let rows = generate(Task::parse("countdown3").unwrap(), Split::Train, 50, 3).unwrap();
        assert_eq!(rows.len(), 50);
        assert!(Task::parse("mul9").is_err());
    }
}
