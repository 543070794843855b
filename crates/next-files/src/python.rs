//! Which Python runs the project's helper scripts (reasoning-gym rows, reward functions, the
//! TRL driver): one rule, so every caller finds the same interpreter.

use std::path::{Path, PathBuf};

/// The environment variable that names the interpreter.
pub const ENV: &str = "NEXT_PYTHON";

/// The environment variable that names verl's interpreter.
pub const VERL_ENV: &str = "NEXT_VERL_PYTHON";

/// verl's interpreter (it pins its own transformers, so it lives apart from the project's):
/// `explicit` if given, else `$NEXT_VERL_PYTHON`, else the checkout's `.venv-verl` (made by
/// `cargo xtask setup --with verl`) when it exists, else `python3` from `PATH`.
pub fn verl_interpreter(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os(VERL_ENV) {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-verl/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// `explicit` if given, else `$NEXT_PYTHON`, else the project's `.venv` (made by `cargo xtask
/// setup`) when this build sits in the checkout that has one, else `python3` from `PATH`.
pub fn interpreter(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os(ENV) {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}
