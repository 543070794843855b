//! Sampling and validation. One test binary per crate: each module is one area.

mod sample;
