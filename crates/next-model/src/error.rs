//! The error type of `next-model`: every variant names the file (and key) at fault.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file (I/O, a missing file, JSON, a key with a bad value).
    #[error(transparent)]
    File(#[from] next_files::Error),
    #[error("{path}: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: &'static str,
    },
    #[error("{path}: tensor `{key}` is missing")]
    MissingTensor { path: PathBuf, key: String },
    #[error("{path}: tensor `{key}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        got: Vec<i64>,
    },
    #[error("{path}: tensor `{key}` has dtype {dtype}, expected a floating-point dtype (F32, BF16, F16)")]
    TensorDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: not a valid safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("{path}: GGUF: {msg}")]
    Gguf { path: PathBuf, msg: String },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("{0}")]
    Usage(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        next_files::Error::io(path, source).into()
    }

    pub(crate) fn missing(path: impl Into<PathBuf>, what: &'static str) -> Self {
        next_files::Error::Missing {
            path: path.into(),
            what,
        }
        .into()
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        next_files::Error::Invalid {
            path: path.into(),
            key: key.into(),
            msg: msg.into(),
        }
        .into()
    }
}
