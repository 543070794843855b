//! `config.resolved.toml`: the configuration a run really used (defaults filled in, paths
//! absolute), written beside its outputs by every command and engine that trains.

use std::path::Path;

use crate::{Error, Result};

/// The file name, in a run directory.
pub const FILE: &str = "config.resolved.toml";

/// Writes `cfg` as TOML to `path` atomically.
pub fn write<T: serde::Serialize>(path: &Path, cfg: &T) -> Result<()> {
    let text = toml::to_string_pretty(cfg).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        key: String::new(),
        msg: format!("cannot write the configuration as TOML: {e}"),
    })?;
    crate::atomic::write(path, text.as_bytes())
}
