//! Conformance with transformers and PEFT, and bad model inputs. One test binary per crate: each module is one area.

mod bad_input;
mod conformance;
mod decode;
