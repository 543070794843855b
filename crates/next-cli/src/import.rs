//! `next import gguf`: turn a llama.cpp GGUF file into an HF model directory.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import a Llama-architecture GGUF file (block types as candle-core reads them: Q4_0/1,
    /// Q5_0/1, Q8_0, k-quants, F16, F32; byte-level BPE vocabulary) as an HF directory (float32 safetensors, config.json, tokenizer.json, tokenizer_config.json with
    /// the chat template) that `next` and `transformers` load.
    ///
    /// Example: `next import gguf --input SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2`.
    Gguf(GgufArgs),
}

#[derive(Debug, clap::Args)]
pub struct GgufArgs {
    /// The GGUF file.
    #[arg(long)]
    input: PathBuf,
    /// The directory to create (must not exist; written next to it first, then renamed).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> Result<()> {
    let Command::Gguf(a) = cmd;
    eprintln!("importing {} ...", a.input.display());
    let started = std::time::Instant::now();
    let done = next_model::gguf::import(&a.input, &a.out)
        .with_context(|| format!("cannot import {}", a.input.display()))?;
    let types: Vec<String> = done
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    eprintln!(
        "imported {} into {} in {:.1} s: {} layers, {:.1}M parameters (tensors: {}), vocabulary {}",
        done.name.as_deref().unwrap_or("the model"),
        done.dir.display(),
        started.elapsed().as_secs_f64(),
        done.layers,
        done.parameters as f64 / 1e6,
        types.join(", "),
        done.vocab_size,
    );
    Ok(())
}
