//! `cargo xtask tidy`: the architecture invariants of ARCHITECTURE.md, checked as code.
//! Also an ordinary `#[test]`, so `cargo test` enforces them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::util::root;

/// Library crates that must never link libtorch.
const NO_TCH: &[&str] = &[
    "next-files",
    "next-testing",
    "next-verifiers",
    "next-trajectory",
];
/// Leaf crates: they depend on no other crate of the workspace, so every crate may use them.
const LEAF: &[&str] = &["next-files", "next-testing"];
/// The CLI is a thin shell: a subcommand module that grows past this many lines is doing
/// library work.
const CLI_MODULE_LINES: usize = 250;
/// The only packages allowed to use `anyhow`.
const ANYHOW_OK: &[&str] = &["next-cli", "xtask"];
/// The only package allowed to print (libraries log with `tracing`).
const PRINT_OK: &[&str] = &["next-cli", "xtask"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every violation, as a line naming the file.
pub fn violations() -> Vec<String> {
    let root = root();
    let mut bad = Vec::new();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    rust_files(&root.join("examples"), &mut files);
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_default();
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        if !text
            .lines()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.starts_with("//!"))
        {
            bad.push(format!(
                "{rel}: does not open with a `//!` line saying what it is for"
            ));
        }
        let ignore_attr = concat!("#[", "ignore");
        if text.contains(ignore_attr) {
            bad.push(format!("{rel}: contains an ignored test"));
        }
        let package = rel
            .strip_prefix("crates/")
            .or_else(|| rel.strip_prefix("examples/"))
            .and_then(|r| r.split('/').next())
            .unwrap_or("xtask");
        let in_src = rel.contains("/src/");
        if package == "next-cli" && in_src && text.lines().count() > CLI_MODULE_LINES {
            bad.push(format!(
                "{rel}: {} lines; a CLI module parses, calls one library function and prints (move the work into a library crate)",
                text.lines().count()
            ));
        }
        // A binary's `main` may print; the library code beside it may not.
        if in_src && !PRINT_OK.contains(&package) && !rel.ends_with("src/main.rs") {
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if ["println!(", "print!(", "eprintln!(", "eprint!(", "dbg!("]
                    .iter()
                    .any(|m| code.contains(m))
                {
                    bad.push(format!(
                        "{rel}:{}: library code prints; log with `tracing`",
                        i + 1
                    ));
                }
            }
        }
    }
    let Ok(crates) = fs::read_dir(root.join("crates")) else {
        return bad;
    };
    let mut manifests: Vec<(String, String)> = crates
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_to_string(e.path().join("Cargo.toml")).unwrap_or_default(),
            )
        })
        .collect();
    manifests.push((
        "xtask".into(),
        fs::read_to_string(root.join("xtask/Cargo.toml")).unwrap_or_default(),
    ));
    for (name, toml) in &manifests {
        let deps = |dep: &str| {
            toml.lines().any(|l| {
                l.trim_start().starts_with(&format!("{dep}."))
                    || l.trim_start().starts_with(&format!("{dep} "))
            })
        };
        if NO_TCH.contains(&name.as_str()) && (deps("tch") || deps("next-model")) {
            bad.push(format!("{name}/Cargo.toml: must not depend on tch"));
        }
        if LEAF.contains(&name.as_str())
            && toml.lines().any(|l| l.trim_start().starts_with("next-"))
        {
            bad.push(format!(
                "{name}/Cargo.toml: a leaf crate depends on no other crate of the workspace"
            ));
        }
        if name == "next-scheduler" && deps("next-model") {
            bad.push(format!(
                "{name}/Cargo.toml: sequences the trainer, store and predictors; the model is the trainer's"
            ));
        }
        if name == "next-predictor" && deps("next-model") {
            bad.push(format!(
                "{name}/Cargo.toml: works on stores and adapters, never on the model crate"
            ));
        }
        if !ANYHOW_OK.contains(&name.as_str()) && deps("anyhow") {
            bad.push(format!(
                "{name}/Cargo.toml: library crates use their own error type, not anyhow"
            ));
        }
        // next-files writes `config.resolved.toml` (every engine's runs record what they
        // trained with) and never parses TOML; reading config files is the CLI's alone.
        if !["next-cli", "next-files"].contains(&name.as_str()) && deps("toml") {
            bad.push(format!(
                "{name}/Cargo.toml: only next-cli reads config files (toml)"
            ));
        }
        if name == "xtask" && deps("tch") {
            bad.push("xtask/Cargo.toml: must not depend on tch".into());
        }
    }
    bad
}

pub fn run() -> Result<()> {
    let bad = violations();
    if bad.is_empty() {
        eprintln!("xtask: tidy: all invariants hold");
        return Ok(());
    }
    for b in &bad {
        eprintln!("{b}");
    }
    bail!("{} tidy violation(s)", bad.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn architecture_invariants_hold() {
        let bad = super::violations();
        assert!(bad.is_empty(), "tidy violations:\n{}", bad.join("\n"));
    }
}
