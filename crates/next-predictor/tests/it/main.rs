//! Predictors on synthetic trajectories, their saved fits against the reference network, and the λ search. One test binary per crate: each module is one area.

mod predictors;
mod reference;
mod search;
