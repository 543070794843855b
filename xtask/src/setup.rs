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
    let link = root.join(".libtorch");
    let venv = root.join(".venv");
    let installed = ensure(&venv, "scripts/requirements.txt", link.join("lib").is_dir())?;
    if installed || !link.join("lib").is_dir() {
        let torch = find_torch(&venv)?;
        let target = torch.strip_prefix(&root).unwrap_or(&torch).to_path_buf();
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {}", link.display()))?;
        eprintln!("xtask: setup: {} -> {}", link.display(), target.display());
    }
    Ok(())
}

/// `setup --with verl`: verl's own environment `.venv-verl` (it pins another transformers),
/// which the verl engine finds by itself.
pub fn verl() -> Result<()> {
    ensure(
        &root().join(".venv-verl"),
        "scripts/requirements-verl.txt",
        true,
    )?;
    Ok(())
}

/// Makes `venv` hold the requirements file `reqs` (relative to the root): nothing to do when
/// its stamp matches and `valid` (what else the caller needs is in place); else creates it
/// if needed and installs. Returns whether it installed.
fn ensure(venv: &Path, reqs: &str, valid: bool) -> Result<bool> {
    let reqs_path = root().join(reqs);
    let wanted = fs::read_to_string(&reqs_path)
        .with_context(|| format!("reading {}", reqs_path.display()))?;
    let stamp = venv.join(STAMP);
    let up_to_date = fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && valid;
    if up_to_date {
        eprintln!(
            "xtask: setup: {} is up to date ({})",
            venv.display(),
            reqs_path.display()
        );
        return Ok(false);
    }
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("xtask: setup: creating {}", venv.display());
        util::run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    eprintln!(
        "xtask: setup: installing {} into {} (torch is a ~4.6 GB CUDA wheel; it runs on CPU)",
        reqs_path.display(),
        venv.display()
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
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!("xtask: setup: {} done", venv.display());
    Ok(true)
}
