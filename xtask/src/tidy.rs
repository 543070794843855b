//! `cargo xtask tidy`: the architecture invariants of ARCHITECTURE.md, checked as code.
//! Also an ordinary `#[test]`, so `cargo test` enforces them.

use std::collections::{BTreeMap, BTreeSet};
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
const CLI_MODULE_LINES: usize = 150;
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
    bad.extend(module_cycles(&root));
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

/// Import circles between a crate's top-level modules.
///
/// Two modules that import from each other are one module in two files: neither can be read,
/// tested or moved without the other, and the circle tends to grow. So within each crate the
/// top-level modules (`src/X.rs` or `src/X/`; `lib.rs`/`main.rs` are the root that assembles
/// them, and may use anything) must reference each other without a cycle; what two modules
/// share belongs in a leaf module that both import. An edge is any `crate::X` path outside a
/// comment (`use crate::X`, `use crate::{X, ..}`, `crate::X::f()`), tests included.
fn module_cycles(root: &Path) -> Vec<String> {
    let mut src_dirs = vec![root.join("xtask/src")];
    for parent in ["crates", "examples"] {
        if let Ok(entries) = fs::read_dir(root.join(parent)) {
            src_dirs.extend(entries.flatten().map(|e| e.path().join("src")));
        }
    }
    src_dirs.sort();
    let mut bad = Vec::new();
    for src in src_dirs.iter().filter(|d| d.is_dir()) {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        // The top-level module a file belongs to, or None for the crate root.
        let module_of = |f: &Path| -> Option<String> {
            let first = f.strip_prefix(src).ok()?.components().next()?;
            let name = first.as_os_str().to_string_lossy();
            let name = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            (name != "lib" && name != "main").then_some(name)
        };
        let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
        // from -> to -> where the first such reference is (for the message).
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for f in &files {
            let Some(from) = module_of(f) else { continue };
            let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
            let text = fs::read_to_string(f).unwrap_or_default();
            for (line, to) in crate_refs(&text) {
                if to != from && modules.contains(&to) {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("{rel}:{line}"));
                }
            }
        }
        let reach = |start: &str| -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![start.to_string()];
            while let Some(m) = todo.pop() {
                for next in edges.get(&m).into_iter().flat_map(|t| t.keys()) {
                    if seen.insert(next.clone()) {
                        todo.push(next.clone());
                    }
                }
            }
            seen
        };
        let reaches: BTreeMap<&String, BTreeSet<String>> =
            modules.iter().map(|m| (m, reach(m))).collect();
        // A cycle is a set of modules that all reach each other (a strongly connected
        // component); each is reported once, with the references that close it.
        let mut reported = BTreeSet::new();
        for m in &modules {
            if reported.contains(m) || !reaches[m].contains(m) {
                continue;
            }
            let cycle: BTreeSet<&String> = modules
                .iter()
                .filter(|o| reaches[m].contains(*o) && reaches[*o].contains(m))
                .collect();
            reported.extend(cycle.iter().map(|s| s.to_string()));
            let links: Vec<String> = cycle
                .iter()
                .flat_map(|a| {
                    edges[*a]
                        .iter()
                        .filter(|(b, _)| cycle.contains(b))
                        .map(move |(b, at)| format!("{a} -> {b} ({at})"))
                })
                .collect();
            let krate = src
                .parent()
                .unwrap_or(src)
                .strip_prefix(root)
                .unwrap_or(src);
            bad.push(format!(
                "{}: modules {} import each other ({}); move what they share into a leaf module",
                krate.display(),
                cycle
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                links.join(", ")
            ));
        }
    }
    bad
}

/// Every `crate::X` reference in `text` outside `//` comments, as (line, X); a group
/// `crate::{a, b::c}` (possibly over several lines) gives each of its first segments.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let code: Vec<char> = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let word_at = |i: usize| -> String { code[i..].iter().take_while(|c| ident(**c)).collect() };
    let line_at = |i: usize| 1 + code[..i].iter().filter(|c| **c == '\n').count();
    let needle: Vec<char> = "crate::".chars().collect();
    let mut refs = Vec::new();
    let mut i = 0;
    while i + needle.len() <= code.len() {
        // `crate::` and not the tail of another path such as `next_crate::`.
        if code[i..i + needle.len()] != needle[..] || (i > 0 && ident(code[i - 1])) {
            i += 1;
            continue;
        }
        let start = i + needle.len();
        if code.get(start) == Some(&'{') {
            let mut depth = 0;
            let mut item_start = true;
            for (j, &c) in code.iter().enumerate().skip(start) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && ident(c) => {
                        refs.push((line_at(j), word_at(j)));
                        item_start = false;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            refs.push((line_at(start), word_at(start)));
        }
        i = start;
    }
    refs
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
