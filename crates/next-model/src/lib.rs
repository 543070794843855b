//! `next-model`: a Llama / Qwen2-family decoder in libtorch with LoRA, HF and PEFT checkpoint I/O.
//!
//! Loads and saves Hugging Face model directories (`config.json`, safetensors, tokenizer files)
//! and PEFT LoRA adapters exactly as `transformers` and `peft` do, runs batched left-padded
//! forward passes with a KV cache, and decodes greedily or with seeded sampling.
//!
//! Architecture invariant: this crate knows nothing of RL, rewards or run directories; it is a
//! model library. It never prints; it logs with `tracing`. Loading a checkpoint checks every
//! tensor's name and shape against `config.json`; decoding with a seed is deterministic on CPU.
//!
//! Entry points: [`Model::load`] (an HF directory), [`Model::add_lora`] /
//! [`Model::load_adapter`] / [`Model::save_adapter`] (PEFT adapters), [`generate()`] (batched
//! decoding), [`Model::token_logprobs`] (the policy's log-probabilities for a loss),
//! [`Tokenizer`] (tokenizer.json and the chat template), [`gguf`] (import of GGUF files).
//!
//! ```
//! use next_model::{generate, LoadOptions, LoraConfig, Model, SamplingParams, TargetModules, Tokenizer};
//! # fn main() -> next_model::Result<()> {
//! // A tiny random Llama-family model written as an HF directory (the `testing` feature).
//! let base = next_model::testing::rust_model(7);
//! let tok = Tokenizer::load(base.path())?;
//! let mut model = Model::load(base.path(), LoadOptions::default())?;
//! let lora = LoraConfig {
//!     r: 4,
//!     alpha: 8.0,
//!     dropout: 0.0,
//!     targets: TargetModules::from_names(&["all-linear".to_string()]),
//!     use_rslora: false,
//! };
//! model.add_lora(&lora, 0)?;
//! let stop = model.stop_tokens(&tok);
//! let params = SamplingParams {
//!     max_new_tokens: 4,
//!     temperature: 0.0,
//!     top_p: 1.0,
//!     top_k: 0,
//!     seed: 0,
//!     eos_token_ids: stop.eos,
//!     pad_token_id: stop.pad,
//! };
//! let out = generate(&model, &[tok.encode("12+3=", false)?], &params)?;
//! assert!(out.tokens[0].len() <= 4);
//! // The adapter as PEFT writes it.
//! let adapter = tempfile::tempdir().expect("temporary directory");
//! model.save_adapter(adapter.path(), None)?;
//! assert!(adapter.path().join("adapter_model.safetensors").exists());
//! # Ok(())
//! # }
//! ```

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
mod stop;
pub mod tokenizer;

pub use config::{Arch, Config};
pub use device::{DeviceName, Dtype};
pub use error::{Error, Result};
pub use generate::{
    generate, generate_with, Generation, GenerationConfig, SamplingParams, StopTokens,
};
pub use lora::{LoraConfig, TargetModules};
pub use model::{
    Batch, FactorLine, FactorTerms, Jump, JumpTerms, KvCache, LoadOptions, Model, RankOneTerms,
};
pub use tch::{Device, Kind, Tensor};
pub use tokenizer::{ChatMessage, Tokenizer};

#[cfg(feature = "testing")]
pub mod testing;
