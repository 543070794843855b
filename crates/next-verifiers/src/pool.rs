//! A bounded pool that runs verifications concurrently (tokio, `spawn_blocking` under a
//! semaphore) and hands back every verdict in input order; nothing is lost under load.
//! Consecutive jobs of one verifier reach it as one batch ([`Verifier::verify_batch`]).

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::{Error, Item, Result, Verdict, Verifier};

/// The row a response answers, beyond its ground truth: what reward functions written for verl
/// (`data_source`, `extra_info`) and TRL (the prompt, the dataset's columns) read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The prompt as the model saw it (rendered text).
    pub prompt: String,
    pub data_source: String,
    /// The row's `extra_info` (null when it has none).
    pub extra_info: Value,
}

/// One response to judge.
#[derive(Clone)]
pub struct Job {
    pub verifier: Arc<dyn Verifier>,
    pub response: String,
    pub ground_truth: Value,
    /// Shared by the `n` responses of one prompt.
    pub context: Arc<Context>,
}

impl Job {
    /// A job with an empty context (enough for every built-in verifier).
    pub fn new(verifier: Arc<dyn Verifier>, response: String, ground_truth: Value) -> Self {
        Job {
            verifier,
            response,
            ground_truth,
            context: Arc::default(),
        }
    }
}

/// Verifies `run` (consecutive jobs with their indices), handing each maximal stretch of jobs
/// with the same verifier to it as one batch.
fn verify_run(run: &[(usize, Job)]) -> Vec<(usize, Verdict)> {
    let mut out = Vec::with_capacity(run.len());
    for stretch in run.chunk_by(|a, b| Arc::ptr_eq(&a.1.verifier, &b.1.verifier)) {
        let items: Vec<Item<'_>> = stretch
            .iter()
            .map(|(_, j)| Item {
                response: &j.response,
                ground_truth: &j.ground_truth,
                context: &j.context,
            })
            .collect();
        let verdicts = stretch[0].1.verifier.verify_batch(&items);
        let got = verdicts.len();
        let mut verdicts = verdicts.into_iter();
        for (i, _) in stretch {
            out.push((
                *i,
                verdicts.next().unwrap_or_else(|| {
                    Verdict::error(format!(
                        "verifier `{}` returned {got} verdicts for {} responses",
                        stretch[0].1.verifier.name(),
                        stretch.len()
                    ))
                }),
            ));
        }
    }
    out
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("verifier", &self.verifier.name())
            .field("response_len", &self.response.len())
            .finish()
    }
}

/// Runs jobs with at most `workers` verifications in flight.
#[derive(Debug)]
pub struct Pool {
    runtime: tokio::runtime::Runtime,
    workers: usize,
}

impl Pool {
    pub fn new(workers: usize) -> Result<Self> {
        let workers = workers.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(workers)
            .enable_time()
            .thread_name("next-verify")
            .build()
            .map_err(|source| Error::Io {
                context: "starting the verifier pool".into(),
                source,
            })?;
        Ok(Pool { runtime, workers })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Verifies every job; `on_done(index, verdict)` is called as each finishes (for progress
    /// bars and streaming output). Returns the verdicts in input order.
    ///
    /// Jobs go to the workers in runs of consecutive jobs, about eight runs per worker: a task
    /// per job costs more than checking a short math answer, while eight runs per worker still
    /// spread slow jobs (code in the sandbox) evenly.
    pub fn run(&self, jobs: Vec<Job>, mut on_done: impl FnMut(usize, &Verdict)) -> Vec<Verdict> {
        let n = jobs.len();
        let per_run = n.div_ceil(self.workers * 8).max(1);
        let sem = Arc::new(Semaphore::new(self.workers));
        let mut out: Vec<Option<Verdict>> = vec![None; n];
        let mut jobs = jobs.into_iter().enumerate().peekable();
        self.runtime.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            while jobs.peek().is_some() {
                let run: Vec<(usize, Job)> = jobs.by_ref().take(per_run).collect();
                let sem = sem.clone();
                let first = run[0].0;
                let len = run.len();
                set.spawn(async move {
                    let _permit = sem
                        .acquire_owned()
                        .await
                        .expect("semaphore is never closed");
                    tokio::task::spawn_blocking(move || verify_run(&run))
                        .await
                        .unwrap_or_else(|e| {
                            (first..first + len)
                                .map(|i| (i, Verdict::error(format!("verifier task failed: {e}"))))
                                .collect()
                        })
                });
            }
            while let Some(res) = set.join_next().await {
                // A join error can only be a panic in our own task wrapper; keep it per row.
                for (i, v) in res.into_iter().flatten() {
                    on_done(i, &v);
                    out[i] = Some(v);
                }
            }
        });
        out.into_iter()
            .map(|v| v.unwrap_or_else(|| Verdict::error("verification was lost")))
            .collect()
    }
}
