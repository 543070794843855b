//! A bounded pool that runs verifications concurrently (tokio, `spawn_blocking` under a
//! semaphore) and hands back every verdict in input order; nothing is lost under load.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::{Error, Result, Verdict, Verifier};

/// One response to judge.
#[derive(Clone)]
pub struct Job {
    pub verifier: Arc<dyn Verifier>,
    pub response: String,
    pub ground_truth: Value,
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
                    tokio::task::spawn_blocking(move || {
                        run.into_iter()
                            .map(|(i, job)| {
                                (i, job.verifier.verify(&job.response, &job.ground_truth))
                            })
                            .collect::<Vec<_>>()
                    })
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
