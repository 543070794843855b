//! `next-files`: how every crate of the workspace reads and writes files, in one place.
//!
//! - [`json`]: JSON files read with the offending key path named in errors, written atomically.
//! - [`atomic`]: [`atomic::write`] replaces a file so that readers see the old or the whole new
//!   one; [`atomic::Staging`] builds a directory under a temporary name beside its target and
//!   publishes it by rename, so a directory appears whole or not at all; [`atomic::copy_files`]
//!   fills one with an adapter's files.
//! - [`fingerprint`]: size and modification time of files, to notice them changing.
//! - [`peft`]: the names PEFT gives adapter files and tensors.
//! - [`python`]: which Python interpreter runs the project's helper scripts.
//!
//! Invariants: no dependency on libtorch or on any other crate of the workspace (every crate may
//! use this one); every error names the file (and the key) at fault; nothing here prints.
//!
//! ```
//! # fn main() -> next_files::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("state.json");
//! next_files::json::write(&path, &serde_json::json!({"step": 3}))?;
//! let back: serde_json::Value = next_files::json::read(&path)?;
//! assert_eq!(back["step"], 3);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

pub mod atomic;
pub mod fingerprint;
pub mod json;
pub mod peft;
pub mod python;
pub mod resolved;

/// What can go wrong with a file; every variant names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: missing {what}")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: key `{key}`: {msg}")]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`; a missing file says so as [`Error::Missing`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Missing { path, .. }
            | Error::Json { path, .. }
            | Error::Invalid { path, .. } => path,
        }
    }
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
