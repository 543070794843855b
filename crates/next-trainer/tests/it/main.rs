//! The trainer: a NaN loss stops the run and keeps the last good checkpoint, checkpoints load
//! in PEFT, and the update's fast paths (skipped sequences, chunked head) equal the slow ones. One test binary
//! per crate: each module is one area.

mod bases;
mod train;
mod update;
