//! `next-trajectory`: the low-rank trajectory of a training run, computed from LoRA adapters'
//! thin factors instead of merged full matrices, and kept in a crash-safe store.
//!
//! - `layout` finds a run's checkpoint series (this project, verl, TRL/PEFT, full weights).
//! - `adapter` / `tensors` read PEFT adapters and safetensors lazily from memory maps.
//! - `factored` computes the top singular triplets of a LoRA update or of the difference of
//!   two, exactly, from the factors; `full` does it for dense deltas by Lanczos.
//! - `series` opens a checkpoint series once and checks it is consistent; `extract` plans the
//!   global / local / target records a series allows and fills the store;
//!   `store` is the versioned, checksummed, append-only on-disk format.
//! - `analyze` summarises a store (rank-1 energy, direction stability, linearity of σ1).
//!
//! Architecture invariant: never depends on tch or on the model crate; it works on plain f64
//! matrices so that it can read any trainer's checkpoints. A store is written append-only with
//! checksums, so an extraction killed midway resumes from its last complete record.
//!
//! Entry points: [`layout`] to find a run's checkpoints, [`extract`] to fill a store,
//! [`store::Store`] to read it, [`factored::top_k_difference`] for one update's triplets.
//!
//! ```
//! use nalgebra::DMatrix;
//! use next_trajectory::factored::{top_k_difference, Factors};
//! # fn main() -> next_trajectory::Result<()> {
//! // A rank-1 LoRA update 2 · B A with |B| = 3 and |A| = 1: its σ1 is 6, all of its energy.
//! let b = DMatrix::from_row_slice(3, 1, &[1.0, 2.0, 2.0]);
//! let a = DMatrix::from_row_slice(1, 2, &[0.6, 0.8]);
//! let t = top_k_difference(Some(&Factors::new(2.0, &b, &a)), None, 1)?;
//! assert!((t.sigma[0] - 6.0).abs() < 1e-12);
//! assert!((t.energy() - 1.0).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

pub mod adapter;
pub mod analyze;
pub mod extract;
pub mod factored;
pub mod full;
pub mod layout;
mod series;
pub mod store;
mod tensors;

/// Errors of reading checkpoints, computing factors and keeping the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] next_files::Error),
    /// A checkpoint file whose content is not what it should be (names file and key/tensor).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// The checkpoint series as a whole (missing step, rank change, bad gaps).
    #[error("{0}")]
    Layout(String),
    /// The store is corrupted, truncated or was made differently.
    #[error("trajectory store {}: {msg}", path.display())]
    Store { path: PathBuf, msg: String },
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    NotFinite(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        next_files::Error::io(path, source).into()
    }
    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_owned(),
            msg: msg.into(),
        }
    }
    pub(crate) fn store(path: &Path, msg: impl Into<String>) -> Self {
        Self::Store {
            path: path.to_owned(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
