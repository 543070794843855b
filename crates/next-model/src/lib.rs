//! `next-model`: a Llama / Qwen2-family decoder in libtorch with LoRA, HF and PEFT checkpoint I/O.
//!
//! Loads and saves Hugging Face model directories (`config.json`, safetensors, tokenizer files)
//! and PEFT LoRA adapters exactly as `transformers` and `peft` do, runs batched left-padded
//! forward passes with a KV cache, and decodes greedily or with seeded sampling.
//!
//! Architecture invariant: this crate knows nothing of RL, rewards or run directories; it is a
//! model library. It never prints; it logs with `tracing`.

pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod io;
pub mod lora;
pub mod model;
mod rng;
pub mod tokenizer;

pub use config::{Arch, Config};
pub use error::{Error, Result};
pub use generate::{generate, Generation, GenerationConfig, SamplingParams};
pub use lora::{LoraConfig, TargetModules};
pub use model::{Batch, KvCache, LoadOptions, Model};
pub use tch::{Device, Kind, Tensor};
pub use tokenizer::{ChatMessage, Tokenizer};

/// Parses a device name: `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(Error::Usage(
                    "device `cuda` requested but CUDA is not available".into(),
                ))
            }
        }
        _ => match name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(i) if (i as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(i)),
            Some(i) => Err(Error::Usage(format!(
                "device cuda:{i} requested but only {} CUDA devices exist",
                tch::Cuda::device_count()
            ))),
            None => Err(Error::Usage(format!(
                "unknown device `{name}` (expected cpu, cuda or cuda:N)"
            ))),
        },
    }
}

/// Parses a dtype name: `f32`/`float32`, `bf16`/`bfloat16`, `f16`/`float16`.
pub fn parse_dtype(name: &str) -> Result<Kind> {
    config::parse_kind(name).ok_or_else(|| {
        Error::Usage(format!(
            "unknown dtype `{name}` (expected f32, bf16 or f16)"
        ))
    })
}

#[cfg(feature = "testing")]
pub mod testing;
