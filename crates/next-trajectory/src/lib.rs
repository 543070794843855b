//! `next-trajectory`: the low-rank trajectory of LoRA training, computed from the adapters'
//! thin factors instead of merged full matrices.
//!
//! So far this crate holds the core of the extraction (`factored`): the top singular triplets of
//! a difference of two LoRA updates, exactly, from QR factorisations of the stacked factors and
//! an SVD of a core of at most 2r x 2r, plus sign alignment across checkpoints. Checkpoint
//! readers, the on-disk store and `next extract` are not built yet.
//!
//! Architecture invariant: never depends on tch or on the model crate; it works on plain f64
//! matrices so that it can read any trainer's checkpoints.

pub mod factored;

/// Errors of the trajectory computations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    NotFinite(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
