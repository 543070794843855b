//! Reading configuration: a TOML file plus dotted `--set key=value` overrides, validated into the
//! library's typed config with the offending key named. Only this crate reads config files.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

/// Parses `key=value` overrides into `table` (`value` as TOML, or a bare string).
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .with_context(|| format!("--set {spec}: expected key=value"))?;
    let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {spec}: `{p}` is not a table"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Reads `file` (if any) and applies `sets`; returns the table and how to name its origin.
fn table(file: Option<&Path>, sets: &[String]) -> Result<(toml::Table, String)> {
    let mut table = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read config {}", f.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("config {} is not valid TOML", f.display()))?
        }
        None => toml::Table::new(),
    };
    for s in sets {
        apply_override(&mut table, s)?;
    }
    let origin = file.map_or("defaults".to_string(), |f| f.display().to_string());
    Ok((table, origin))
}

fn from_table<T: DeserializeOwned>(table: toml::Table, origin: &str) -> Result<T> {
    match serde_path_to_error::deserialize(toml::Value::Table(table)) {
        Ok(v) => Ok(v),
        Err(e) => {
            let key = e.path().to_string();
            bail!(
                "config {origin} (with --set overrides): key `{key}`: {}",
                e.into_inner()
            )
        }
    }
}

/// Loads `file` (if any), applies `sets`, and deserialises; errors name the file and the key.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, sets: &[String]) -> Result<T> {
    let (table, origin) = table(file, sets)?;
    from_table(table, &origin)
}

/// Loads a config made of `next train`'s tables plus the tables of `E` (`[scheduler]`,
/// `[experiment]`, named in `extra`). The two parts are read separately so that an error names
/// its key (through `#[serde(flatten)]` serde loses the path).
pub fn load_with<E: DeserializeOwned>(
    file: Option<&Path>,
    sets: &[String],
    extra: &[&str],
) -> Result<(next_trainer::TrainConfig, E)> {
    let (mut train, origin) = table(file, sets)?;
    let mut rest = toml::Table::new();
    for key in extra {
        if let Some(v) = train.remove(*key) {
            rest.insert(key.to_string(), v);
        }
    }
    Ok((from_table(train, &origin)?, from_table(rest, &origin)?))
}

/// The config as TOML, written as `config.resolved.toml` beside a run's outputs.
pub fn to_toml<T: serde::Serialize>(cfg: &T) -> Result<String> {
    toml::to_string_pretty(cfg).context("serialising the resolved config")
}

/// Writes the resolved configuration next to a run's outputs.
pub fn write_resolved<T: serde::Serialize>(path: &Path, cfg: &T) -> Result<()> {
    Ok(next_files::resolved::write(path, cfg)?)
}

/// The working directory, against which a config's relative paths are made absolute.
pub fn cwd() -> Result<std::path::PathBuf> {
    std::env::current_dir().context("cannot read the current directory")
}
