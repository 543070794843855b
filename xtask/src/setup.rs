//! `cargo xtask setup`: the project-local Python environment (`.venv`) with torch 2.11.0 and
//! the reference packages, and the `.libtorch` link that `.cargo/config.toml` points tch at.
//!
//! Idempotent: a stamp records the requirements installed; when it matches and the link is
//! valid, setup returns at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, root};

const STAMP: &str = ".next-setup-stamp";

fn find_torch(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let torch = entry?.path().join("site-packages/torch");
        if torch.join("lib").is_dir() {
            return Ok(torch);
        }
    }
    bail!("torch is not installed in {}", venv.display())
}

pub fn run() -> Result<()> {
    let root = root();
    let venv = root.join(".venv");
    let reqs_path = root.join("scripts/requirements.txt");
    let reqs = fs::read_to_string(&reqs_path)
        .with_context(|| format!("reading {}", reqs_path.display()))?;
    let stamp = venv.join(STAMP);
    let link = root.join(".libtorch");
    let up_to_date = fs::read_to_string(&stamp)
        .map(|s| s == reqs)
        .unwrap_or(false)
        && link.join("lib").is_dir();
    if up_to_date {
        eprintln!(
            "xtask: setup: .venv is up to date ({})",
            reqs_path.display()
        );
        return Ok(());
    }
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("xtask: setup: creating {}", venv.display());
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    eprintln!(
        "xtask: setup: installing {} (torch is a ~4.6 GB CUDA wheel; it runs on CPU)",
        reqs_path.display()
    );
    util::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "-r",
            ])
            .arg(&reqs_path),
    )?;
    let torch = find_torch(&venv)?;
    let target = torch.strip_prefix(&root).unwrap_or(&torch).to_path_buf();
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    eprintln!("xtask: setup: {} -> {}", link.display(), target.display());
    fs::write(&stamp, reqs).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!("xtask: setup: done");
    Ok(())
}
