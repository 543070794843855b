//! The `next` binary end to end, as users call it. One test binary per crate: each module is one area.

mod callback;
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

/// Runs Python `code` with `args` in the project's interpreter (the one the engines and reward
/// workers use); its stdout, trimmed (fails the test with both streams otherwise).
pub fn python<S: AsRef<std::ffi::OsStr>>(code: &str, args: &[S]) -> String {
    let out = Command::new(next_files::python::interpreter(None))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    ok(out).trim().to_string()
}

/// A copy of the workspace's tiny test base (2-digit sums, pretrained once per test binary) in
/// `dir/base`, which a test may change.
pub fn tiny_base(dir: &std::path::Path) -> std::path::PathBuf {
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(next_trainer::testing::base()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), base.join(e.file_name())).unwrap();
    }
    base
}

/// `n` rows of the embedded 2-digit addition task's `split` as JSONL in `path`.
pub fn add2_rows(path: &std::path::Path, split: &str, n: usize) {
    ok(next(&[
        "data",
        "gen",
        "--task",
        "add2",
        "--split",
        split,
        "--n",
        &n.to_string(),
        "--out",
        path.to_str().unwrap(),
    ]));
}
