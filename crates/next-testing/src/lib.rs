//! `next-testing`: what the workspace's tests share, for every crate's own `tests/` — where the
//! workspace is, the project's Python (`.venv`, made by `cargo xtask setup`), and the Python
//! reference (`tests/python/hf_reference.py`: transformers, PEFT and torch) that conformance
//! tests compare against. A dev-dependency only; no libtorch, so any crate can use it.
//!
//! ```
//! let root = next_testing::workspace_root();
//! assert!(root.join("Cargo.toml").exists());
//! ```
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (two levels above this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The project's Python (installed by `cargo xtask setup`).
pub fn python() -> PathBuf {
    let py = workspace_root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `cargo xtask setup` (or `cargo xtask test`)",
        py.display()
    );
    py
}

/// Runs `tests/python/hf_reference.py` with `args` and returns its stdout; fails the test with
/// the script's stderr when it fails.
pub fn reference(args: &[&str]) -> String {
    let script = workspace_root().join("tests/python/hf_reference.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .env("NEXT_TEST_THREADS", "1")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "hf_reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
