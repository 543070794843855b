//! The trainer: a NaN loss stops the run and keeps the last good checkpoint, checkpoints load
//! in PEFT, the update's fast paths (skipped sequences, chunked head) equal the slow ones, and
//! Parquet datasets read as their JSONL twins. One test binary
//! per crate: each module is one area.

mod bases;
mod data;
mod train;
mod update;
