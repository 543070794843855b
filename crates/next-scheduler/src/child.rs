//! Running an engine's external trainer (the TRL driver, verl's `main_ppo`): its output
//! appended to a log in the run, its progress polled while it runs, and the end of the log
//! quoted when it fails.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::{Error, Result};

/// Runs `cmd` to its end with standard output and error appended to `log` (after a `header`
/// line), calling `poll` about twice a second meanwhile and once after it exits. `what` names
/// the program in the error when it cannot be started.
pub(crate) fn run(
    mut cmd: Command,
    log: &Path,
    header: &str,
    what: &str,
    mut poll: impl FnMut(),
) -> Result<ExitStatus> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(crate::io(dir))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(crate::io(log))?;
    writeln!(out, "== {header}").map_err(crate::io(log))?;
    let err = out.try_clone().map_err(crate::io(log))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start {what}: {e}")))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(crate::io(log))? {
            break status;
        }
        poll();
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    poll();
    Ok(status)
}

/// The last 20 lines of a log.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
