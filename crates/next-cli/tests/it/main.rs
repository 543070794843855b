//! The `next` binary end to end, as users call it. One test binary per crate: each module is one area.

mod cli;
mod engine_trl;
mod engine_verl;
mod experiment;
mod extract;
mod import;
mod reasoning_gym;
mod run;
mod study;
mod train;
mod verify;

use std::process::{Command, Output};

/// Runs the `next` binary built for these tests.
pub fn next(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_next"))
        .args(args)
        .output()
        .expect("run next")
}

/// The stdout of a run that must succeed (fails the test with both streams otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
