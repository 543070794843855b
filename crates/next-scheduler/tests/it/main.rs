//! The predict-extend loop on a tiny model. One test binary per crate: each module is one area.

mod jump;
mod scheduler;
mod verl;
