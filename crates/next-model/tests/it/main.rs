//! Conformance with transformers and PEFT, bad model inputs, and jump candidates decoded
//! together. One test binary per crate: each module is one area.

mod bad_input;
mod conformance;
mod decode;
mod jump;
