//! The trainer on a small random model: a NaN loss stops the run and keeps the last good
//! checkpoint, checkpoints load in PEFT, and data splits come from the config. One test binary
//! per crate: each module is one area.

mod train;
