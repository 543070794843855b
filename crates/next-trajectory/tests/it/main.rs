//! Extraction against dense SVDs and PEFT, and the factored top triplets. One test binary per crate: each module is one area.

mod extract;
mod factored;
