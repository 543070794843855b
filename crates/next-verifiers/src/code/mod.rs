//! `code`: runs the model's program with its tests in a sandbox and rewards passing.
//!
//! The program is the last fenced code block of the response (or the whole response). Tests are
//! `{"assert": "<python code run after the program>"}` or `{"io": [{"stdin", "stdout"}]}`.
//! `harness.py` (trusted, embedded) supervises each run: a new network namespace (no network), a
//! private `/tmp`, and a child per test that drops to a per-slot uid under limits on CPU time,
//! wall time, address space, processes, file size and open files, in its own process group.
//! After each run every process of the slot's uid is killed (daemons and `setsid` children
//! included). Where the platform refuses namespaces or uid switching (not root), the verdict's
//! detail says which protections were missing.
//!
//! A pass is reported through a per-run nonce that only the harness's runner prints after the
//! tests complete, so `sys.exit(0)` or `os._exit(0)` before the asserts is a failure. A program
//! written against this harness's internals (reading the runner's frames) could forge it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Verdict, Verifier};

const HARNESS: &str = include_str!("harness.py");

/// Resource limits of one test run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub wall_s: f64,
    pub cpu_s: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub open_files: u64,
    pub processes: u64,
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_s: 10.0,
            cpu_s: 10,
            memory_bytes: 1 << 30,
            file_bytes: 16 << 20,
            open_files: 64,
            processes: 64,
            output_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// The default limits with `seconds` of wall time and of CPU time (rounded up to whole
    /// seconds, as rlimits count).
    pub fn seconds(seconds: f64) -> Self {
        Limits {
            wall_s: seconds,
            cpu_s: seconds.ceil() as u64,
            ..Limits::default()
        }
    }
}

/// A sandbox uid held exclusively (across threads and processes) through a lock file, so that
/// sweeping "every process of this uid" can never hit another run.
struct Slot {
    uid: u32,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn acquire_slot() -> Result<Slot, String> {
    let dir = std::env::temp_dir().join("next-sandbox-locks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    loop {
        for uid in SANDBOX_UID_BASE..SANDBOX_UID_BASE + SLOTS {
            let path = dir.join(format!("{uid}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Ok(lock) =
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                return Ok(Slot { uid, _lock: lock });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The code verifier.
#[derive(Debug, Clone)]
pub struct CodeVerifier {
    /// The interpreter that runs programs (must be executable by the sandbox uids).
    pub python: PathBuf,
    pub limits: Limits,
    /// Reward the fraction of passing io cases instead of all-or-nothing.
    pub partial_credit: bool,
    /// Where sandbox directories are created (default: the system temporary directory).
    pub scratch: Option<PathBuf>,
}

/// First uid of the sandbox slots (unused by Debian's system and user ranges).
pub const SANDBOX_UID_BASE: u32 = 61_000;
const SLOTS: u32 = 64;

impl Default for CodeVerifier {
    fn default() -> Self {
        // The system interpreter: a per-user one (pyenv under /root) is not executable by the
        // sandbox uids.
        let python = ["/usr/bin/python3", "/bin/python3"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("python3"));
        CodeVerifier {
            python,
            limits: Limits::default(),
            partial_credit: false,
            scratch: None,
        }
    }
}

/// The last complete fenced code block of a response, or the whole response.
pub fn extract_program(response: &str) -> String {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in response.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(b) => blocks.push(b.join("\n")),
                None => current = Some(Vec::new()),
            }
        } else if let Some(b) = current.as_mut() {
            b.push(line);
        }
    }
    blocks.pop().unwrap_or_else(|| response.to_string())
}

#[derive(Debug)]
enum Tests {
    Assert(String),
    Io(Vec<(String, String)>),
}

fn parse_tests(gt: &Value) -> Result<Tests, String> {
    // Datasets often store the tests as a JSON string.
    let parsed;
    let gt = match gt {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| format!("ground truth is a string that is not JSON: {e}"))?;
            &parsed
        }
        v => v,
    };
    if let Some(code) = gt.get("assert").and_then(Value::as_str) {
        return Ok(Tests::Assert(code.to_string()));
    }
    if let Some(cases) = gt.get("io").and_then(Value::as_array) {
        let cases = cases
            .iter()
            .map(|c| {
                Some((
                    c.get("stdin")?.as_str()?.to_string(),
                    c.get("stdout")?.as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("each io case needs string `stdin` and `stdout`")?;
        if cases.is_empty() {
            return Err("empty io test list".into());
        }
        return Ok(Tests::Io(cases));
    }
    Err(
        r#"ground truth must be {"assert": "..."} or {"io": [{"stdin": "...", "stdout": "..."}]}"#
            .into(),
    )
}

/// Kills every process owned by `uid` (what the harness does, for when the harness itself had
/// to be killed).
fn sweep_uid(uid: u32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if owner == Some(uid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[derive(Debug, Deserialize)]
struct HarnessResult {
    status: String,
    detail: String,
}

#[derive(Debug, Deserialize)]
struct HarnessReport {
    results: Vec<HarnessResult>,
    isolation: Vec<String>,
}

impl CodeVerifier {
    fn run(&self, program: &str, tests: &Tests) -> Verdict {
        let builder = tempfile::Builder::new().prefix("next-sbx-").to_owned();
        let made = match &self.scratch {
            Some(d) => builder.tempdir_in(d),
            None => builder.tempdir(),
        };
        let dir = match made {
            Ok(d) => d,
            Err(e) => {
                return Verdict::error(format!("sandbox: cannot create a temporary directory: {e}"))
            }
        };
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        let mut job = json!({
            "dir": dir.path(), "limits": self.limits, "python": self.python,
        });
        let n_tests = match tests {
            Tests::Assert(code) => {
                if let Err(e) = write("solution.py", program).and_then(|_| write("tests.py", code))
                {
                    return Verdict::error(format!("sandbox: {e}"));
                }
                job["mode"] = "assert".into();
                1
            }
            Tests::Io(cases) => {
                if let Err(e) = write("solution.py", program) {
                    return Verdict::error(format!("sandbox: {e}"));
                }
                job["mode"] = "io".into();
                job["io"] = cases
                    .iter()
                    .map(|(i, o)| json!({"stdin": i, "stdout": o}))
                    .collect();
                cases.len()
            }
        };
        let slot = match acquire_slot() {
            Ok(s) => s,
            Err(e) => return Verdict::error(format!("sandbox: cannot take a uid slot: {e}")),
        };
        job["uid"] = slot.uid.into();
        let verdict = self.supervise(&job, n_tests, slot.uid);
        sweep_uid(slot.uid);
        verdict
    }

    fn supervise(&self, job: &Value, n_tests: usize, uid: u32) -> Verdict {
        use std::os::unix::process::CommandExt;
        let mut child = match Command::new(&self.python)
            .args(["-I", "-S", "-c", HARNESS])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return Verdict::error(format!(
                    "sandbox: cannot start {}: {e}",
                    self.python.display()
                ))
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            if let Err(e) = stdin.write_all(job.to_string().as_bytes()) {
                let _ = child.kill();
                let _ = child.wait();
                return Verdict::error(format!("sandbox: cannot send the job: {e}"));
            }
        }
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stdout).take(4 << 20).read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
            buf
        });
        let budget = Duration::from_secs_f64(n_tests as f64 * (self.limits.wall_s + 2.0) + 10.0);
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() > budget => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        if status.is_none() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.kill();
            let _ = child.wait();
            sweep_uid(uid);
        }
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if status.is_none() {
            return Verdict::timeout(format!(
                "sandbox supervisor exceeded {:.0}s",
                budget.as_secs_f64()
            ));
        }
        let report: HarnessReport = match serde_json::from_slice(&out) {
            Ok(r) => r,
            Err(_) => {
                let tail = String::from_utf8_lossy(&err);
                let tail: String = tail
                    .chars()
                    .rev()
                    .take(500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Verdict::error(format!(
                    "sandbox failed ({}): {tail}",
                    status.map(|s| s.to_string()).unwrap_or_default()
                ));
            }
        };
        self.judge(report)
    }

    fn judge(&self, report: HarnessReport) -> Verdict {
        let total = report.results.len().max(1);
        let passed = report.results.iter().filter(|r| r.status == "pass").count();
        let timeouts = report
            .results
            .iter()
            .filter(|r| r.status == "timeout")
            .count();
        let first_bad = report.results.iter().find(|r| r.status != "pass");
        let detail = format!(
            "{passed}/{total} passed{}; sandbox: {}",
            first_bad
                .map(|r| format!("; {}: {}", r.status, r.detail))
                .unwrap_or_default(),
            report.isolation.join(", ")
        );
        if passed == total {
            return Verdict::correct(detail);
        }
        let reward = if self.partial_credit {
            passed as f64 / total as f64
        } else {
            0.0
        };
        if timeouts > 0 && passed + timeouts == total {
            return Verdict {
                reward,
                ..Verdict::timeout(detail)
            };
        }
        Verdict::wrong(reward, detail)
    }
}

impl Verifier for CodeVerifier {
    fn name(&self) -> &str {
        "code"
    }

    fn verify(&self, response: &str, ground_truth: &Value) -> Verdict {
        let tests = match parse_tests(ground_truth) {
            Ok(t) => t,
            Err(e) => return Verdict::error(e),
        };
        let program = extract_program(response);
        if program.trim().is_empty() {
            return Verdict::no_answer("empty program");
        }
        self.run(&program, &tests)
    }
}
