//! A user's Python reward function as a [`Verifier`]: verl's `compute_score(data_source,
//! solution_str, ground_truth, extra_info)` or TRL's `f(prompts, completions, **columns)`, run by
//! a pool of long-lived worker processes that receive batches over a pipe.
//!
//! The reward file is trusted code, as in verl and TRL: it runs with the user's rights, outside
//! the sandbox that model-written code gets (`code`). What is bounded is its effect on a run: a
//! call that raises, overruns its time, or returns something other than a finite number becomes
//! an `error` verdict with the message; a worker that dies is restarted and its batch retried
//! once, and a batch that kills it again is scored one row at a time, so that only the row that
//! kills it is an `error`; a file or function that cannot be loaded is an [`Error`] at start-up.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Error, Item, Result, Verdict, VerdictKind, Verifier};

const WORKER: &str = include_str!("reward_worker.py");

/// How long a worker may take to import the reward file (heavy imports such as torch included).
const STARTUP: Duration = Duration::from_secs(120);

/// Time a worker gets beyond its own alarms before it is killed (the alarm cannot interrupt a
/// function stuck in C code).
const GRACE: Duration = Duration::from_secs(5);

/// `FILE:NAME`: a Python file and the function in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RewardFn {
    pub file: PathBuf,
    pub name: String,
}

impl FromStr for RewardFn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.rsplit_once(':') {
            Some((file, name))
                if !file.is_empty()
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                Ok(RewardFn {
                    file: file.into(),
                    name: name.into(),
                })
            }
            _ => Err(Error::Config(format!(
                "reward function `{s}`: expected FILE:NAME, e.g. `my_reward.py:compute_score`"
            ))),
        }
    }
}

impl fmt::Display for RewardFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.name)
    }
}

impl RewardFn {
    /// The same function with its file taken from `cwd` when relative.
    pub fn absolute(&self, cwd: &Path) -> RewardFn {
        RewardFn {
            file: cwd.join(&self.file),
            name: self.name.clone(),
        }
    }
}

/// Which calling convention the function follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// From the signature: a `solution_str` parameter means verl, `completions` TRL.
    #[default]
    Auto,
    /// `compute_score(data_source, solution_str, ground_truth, extra_info)` per row, returning
    /// a number or a dict with `score` (its other keys become the verdict's extras).
    Verl,
    /// `f(prompts, completions, **columns) -> list[float]` per batch; the columns are
    /// `ground_truth`, `data_source`, `extra_info` and each key of `extra_info`.
    Trl,
}

impl Style {
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Auto => "auto",
            Style::Verl => "verl",
            Style::Trl => "trl",
        }
    }
}

impl FromStr for Style {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Style::Auto),
            "verl" => Ok(Style::Verl),
            "trl" => Ok(Style::Trl),
            _ => Err(Error::Config(format!(
                "reward function style `{s}`: expected auto, verl or trl"
            ))),
        }
    }
}

/// How the workers run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The interpreter (see `next_files::python::interpreter`).
    pub python: PathBuf,
    pub style: Style,
    /// Worker processes (started as batches need them).
    pub workers: usize,
    /// Seconds per row: a verl call gets this much, a TRL batch call this much per completion.
    pub timeout_s: f64,
}

/// A running worker: its process, the pipe to it, and a thread reading its replies.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a call got no reply.
enum Failure {
    /// Past the deadline: the worker was killed.
    Timeout,
    /// The worker exited (or closed its pipe) mid-call.
    Died(String),
}

impl Worker {
    /// Starts a worker for `f` and waits for it to load the function; returns the style it
    /// resolved.
    fn start(f: &RewardFn, opts: &Options) -> Result<(Worker, Style)> {
        let mut child = Command::new(&opts.python)
            .arg("-c")
            .arg(WORKER)
            .arg(&f.file)
            .arg(&f.name)
            .arg(opts.style.as_str())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Io {
                context: format!(
                    "starting {} for the reward function {f}",
                    opts.python.display()
                ),
                source,
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("next-reward-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Io {
                context: "starting a reward worker's reader thread".into(),
                source,
            })?;
        let mut w = Worker {
            child,
            stdin,
            replies,
        };
        let hello = match w.replies.recv_timeout(STARTUP) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::Config(format!(
                    "reward function {f}: the worker did not load it within {} s",
                    STARTUP.as_secs()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Config(format!(
                    "reward function {f}: the worker ({}) exited before loading it ({})",
                    opts.python.display(),
                    w.exit_status()
                )))
            }
        };
        let hello: Value = serde_json::from_str(&hello).unwrap_or(Value::Null);
        if let Some(msg) = hello.get("error").and_then(Value::as_str) {
            return Err(Error::Config(format!("reward function {f}: {msg}")));
        }
        let style = match hello.get("style").and_then(Value::as_str) {
            Some("verl") => Style::Verl,
            Some("trl") => Style::Trl,
            _ => {
                return Err(Error::Config(format!(
                    "reward function {f}: unexpected greeting from the worker: {hello}"
                )))
            }
        };
        Ok((w, style))
    }

    /// How the process ended; one that closed its pipe but lingers is killed after a second.
    fn exit_status(&mut self) -> String {
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(Some(s)) => return s.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return format!("status unknown: {e}"),
            }
        }
        let _ = self.child.kill();
        "closed its pipe and was killed".into()
    }

    /// Sends one batch and waits for its reply until `deadline`.
    fn call(&mut self, request: &str, deadline: Duration) -> Result<Vec<Value>, Failure> {
        let sent = self
            .stdin
            .write_all(request.as_bytes())
            .and_then(|()| self.stdin.write_all(b"\n"))
            .and_then(|()| self.stdin.flush());
        if sent.is_err() {
            return Err(Failure::Died(self.exit_status()));
        }
        match self.replies.recv_timeout(deadline) {
            Ok(line) => {
                let reply: Value = serde_json::from_str(&line)
                    .map_err(|e| Failure::Died(format!("unreadable reply ({e})")))?;
                match reply.get("results") {
                    Some(Value::Array(results)) => Ok(results.clone()),
                    _ => Err(Failure::Died(format!("unexpected reply {reply}"))),
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                Err(Failure::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(Failure::Died(self.exit_status())),
        }
    }
}

/// The idle workers and how many exist.
struct Workers {
    idle: Vec<Worker>,
    live: usize,
}

/// A Python reward function behind the [`Verifier`] trait.
pub struct PythonReward {
    f: RewardFn,
    opts: Options,
    style: Style,
    label: String,
    workers: Mutex<Workers>,
    freed: Condvar,
}

impl fmt::Debug for PythonReward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PythonReward")
            .field("fn", &self.f.to_string())
            .field("style", &self.style)
            .finish()
    }
}

impl PythonReward {
    /// Loads `f` in a first worker (so a missing file, a syntax error or a missing name fails
    /// here, naming file and function); more workers start as batches need them.
    pub fn start(f: RewardFn, opts: Options) -> Result<Self> {
        let (first, style) = Worker::start(&f, &opts)?;
        Ok(PythonReward {
            label: f.to_string(),
            f,
            opts: Options {
                style,
                workers: opts.workers.max(1),
                ..opts
            },
            style,
            workers: Mutex::new(Workers {
                idle: vec![first],
                live: 1,
            }),
            freed: Condvar::new(),
        })
    }

    /// The style the function follows (resolved from its signature when asked for `auto`).
    pub fn style(&self) -> Style {
        self.style
    }

    /// An idle worker, a new one when fewer than `workers` run, else the next one freed.
    fn checkout(&self) -> Result<Worker> {
        let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(worker) = w.idle.pop() {
                return Ok(worker);
            }
            if w.live < self.opts.workers {
                w.live += 1;
                drop(w);
                return Worker::start(&self.f, &self.opts)
                    .map(|(worker, _)| worker)
                    .inspect_err(|_| self.retire());
            }
            w = self.freed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn checkin(&self, worker: Worker) {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .idle
            .push(worker);
        self.freed.notify_one();
    }

    /// A worker is gone for good (killed or failed to start): its slot is free again.
    fn retire(&self) {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).live -= 1;
        self.freed.notify_one();
    }

    fn verdict(&self, result: &Value) -> Verdict {
        if let Some(msg) = result.get("error").and_then(Value::as_str) {
            return Verdict::error(format!("{}: {msg}", self.label));
        }
        let Some(score) = result.get("score").and_then(Value::as_f64) else {
            return Verdict::error(format!("{}: malformed result {result}", self.label));
        };
        let extra_json = result.get("extra").cloned().unwrap_or(Value::Null);
        let extras = extra_json.as_object().cloned().unwrap_or_default();
        // verl's convention: a dict's `acc` says whether the answer was right; else any
        // positive score counts as correct.
        let correct = match extras.get("acc") {
            Some(Value::Bool(b)) => *b,
            Some(v) => v.as_f64().is_some_and(|x| x > 0.0),
            None => score > 0.0,
        };
        let detail = if extras.is_empty() {
            format!("score {score}")
        } else {
            format!("score {score}; {extra_json}")
        };
        Verdict {
            reward: score,
            correct,
            kind: if correct {
                VerdictKind::Correct
            } else {
                VerdictKind::Wrong
            },
            detail,
            extra: extras
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::Bool(b) => Some((k.clone(), f64::from(u8::from(*b)))),
                    _ => v.as_f64().map(|x| (k.clone(), x)),
                })
                .collect(),
        }
    }

    fn all_error(&self, n: usize, msg: &str) -> Vec<Verdict> {
        (0..n)
            .map(|_| Verdict::error(format!("{}: {msg}", self.label)))
            .collect()
    }

    /// A fresh worker in the slot of one that died or was killed; when none starts, the slot
    /// is freed.
    fn restart(&self) -> Result<Worker> {
        Worker::start(&self.f, &self.opts)
            .map(|(w, _)| w)
            .inspect_err(|_| self.retire())
    }

    /// How long a worker has to answer a call of `rows` rows: `timeout_s` per row, and
    /// [`GRACE`].
    fn deadline(&self, rows: usize) -> Duration {
        Duration::from_secs_f64(self.opts.timeout_s.max(0.0) * rows as f64) + GRACE
    }

    /// `rows` as one call to `worker`, within [`Self::deadline`].
    fn ask(&self, worker: &mut Worker, rows: &[Value]) -> Result<Vec<Verdict>, Failure> {
        let request = json!({"rows": rows, "timeout": self.opts.timeout_s}).to_string();
        let results = worker.call(&request, self.deadline(rows.len()))?;
        Ok(if results.len() == rows.len() {
            results.iter().map(|r| self.verdict(r)).collect()
        } else {
            self.all_error(
                rows.len(),
                &format!(
                    "the worker answered {} rows of {}",
                    results.len(),
                    rows.len()
                ),
            )
        })
    }

    /// The rows of a batch that killed its worker twice, each in a call of its own, so that
    /// only a row that kills the worker again (or overruns its time) fails; the others are
    /// scored as usual, in order. Each row has a budget of one restart, for the worker it
    /// killed, so a batch of B rows starts at most B + 2 workers in all (two for the batch,
    /// then one per row): a function that always exits costs B + 2 starts, not more, and one
    /// that exits on one row costs 3. (A TRL function then sees batches of one completion.)
    fn one_at_a_time(&self, worker: Worker, rows: &[Value], died: &str) -> Vec<Verdict> {
        tracing::warn!(
            "reward worker for {} died on a batch twice ({died}); scoring its {} rows one at a time",
            self.label,
            rows.len()
        );
        let n = rows.len();
        let mut worker = Ok(worker);
        let mut out = Vec::with_capacity(n);
        for (k, row) in rows.iter().enumerate() {
            let w = match worker.as_mut() {
                Ok(w) => w,
                Err(e) => {
                    out.push(Verdict::error(format!(
                        "{}: the worker died and could not be restarted: {e}",
                        self.label
                    )));
                    continue;
                }
            };
            let why = match self.ask(w, std::slice::from_ref(row)) {
                Ok(mut v) => {
                    out.push(v.pop().expect("one verdict per row"));
                    continue;
                }
                Err(Failure::Died(status)) => format!(
                    "the worker died on this row (row {} of a batch of {n}: {status}), \
                     alone as in its batch; the function may exit the process",
                    k + 1
                ),
                Err(Failure::Timeout) => format!(
                    "the worker overran its time on this row (row {} of a batch of {n}: {} s) \
                     and was killed",
                    k + 1,
                    self.deadline(1).as_secs_f64()
                ),
            };
            out.push(Verdict::error(format!("{}: {why}", self.label)));
            // This row's one restart: the next row (or batch) needs a live worker.
            worker = self.restart().map_err(|e| e.to_string());
        }
        if let Ok(w) = worker {
            self.checkin(w);
        }
        out
    }
}

impl Verifier for PythonReward {
    fn name(&self) -> &str {
        &self.label
    }

    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
        let context = crate::Context::default();
        let item = Item {
            response,
            ground_truth,
            context: &context,
        };
        self.verify_batch(&[item])
            .pop()
            .unwrap_or_else(|| Verdict::error("no verdict"))
    }

    fn verify_batch(&self, items: &[Item<'_>]) -> Vec<Verdict> {
        if items.is_empty() {
            return Vec::new();
        }
        let rows: Vec<Value> = items
            .iter()
            .map(|i| {
                json!({
                    "response": i.response,
                    "ground_truth": i.ground_truth,
                    "prompt": i.context.prompt,
                    "data_source": i.context.data_source,
                    "extra_info": i.context.extra_info,
                })
            })
            .collect();
        let mut worker = match self.checkout() {
            Ok(w) => w,
            Err(e) => return self.all_error(items.len(), &format!("no worker: {e}")),
        };
        // The batch in one call; a worker that dies is restarted and the batch sent once more.
        let mut died = String::new();
        for _attempt in 0..2 {
            match self.ask(&mut worker, &rows) {
                Ok(verdicts) => {
                    self.checkin(worker);
                    return verdicts;
                }
                Err(Failure::Timeout) => {
                    drop(worker);
                    self.retire();
                    return self.all_error(
                        items.len(),
                        &format!(
                            "the worker overran its time ({} s for this batch) and was killed",
                            self.deadline(items.len()).as_secs_f64()
                        ),
                    );
                }
                Err(Failure::Died(status)) => {
                    tracing::warn!(
                        "reward worker for {} died ({status}); restarting it",
                        self.label
                    );
                    died = status;
                    drop(worker);
                    worker = match self.restart() {
                        Ok(w) => w,
                        Err(e) => {
                            return self.all_error(
                                items.len(),
                                &format!("the worker died and could not be restarted: {e}"),
                            )
                        }
                    };
                }
            }
        }
        if rows.len() == 1 {
            self.checkin(worker);
            return self.all_error(
                1,
                &format!(
                    "the worker died on this row twice ({died}); the function may exit the process"
                ),
            );
        }
        // Twice: some row kills the worker (say it calls os._exit); find it.
        self.one_at_a_time(worker, &rows, &died)
    }
}
