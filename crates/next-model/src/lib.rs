//! `next-model`: a Llama / Qwen2-family decoder in libtorch with LoRA, HF and PEFT checkpoint I/O.
//!
//! Loads and saves Hugging Face model directories (`config.json`, safetensors, tokenizer files)
//! and PEFT LoRA adapters exactly as `transformers` and `peft` do, runs batched left-padded
//! forward passes with a KV cache, and decodes greedily or with seeded sampling.
//!
//! Architecture invariant: this crate knows nothing of RL, rewards or run directories; it is a
//! model library. It never prints; it logs with `tracing`.

pub mod config;
mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod io;
pub mod lora;
pub mod model;
pub mod peft;
mod rng;
pub mod tokenizer;

pub use config::{Arch, Config};
pub use device::{DeviceName, Dtype};
pub use error::{Error, Result};
pub use generate::{
    generate, generate_with, Generation, GenerationConfig, SamplingParams, StopTokens,
};
pub use lora::{LoraConfig, TargetModules};
pub use model::{Batch, JumpTerms, KvCache, LoadOptions, Model, RankOneTerms};
pub use tch::{Device, Kind, Tensor};
pub use tokenizer::{ChatMessage, Tokenizer};

#[cfg(feature = "testing")]
pub mod testing;
