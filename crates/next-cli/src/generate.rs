//! `next generate`: greedy or seeded sampling from an HF model directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_model::{
    generate, ChatMessage, DeviceName, Dtype, LoadOptions, Model, SamplingParams, Tokenizer,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Prompt text (encoded with the tokenizer's special tokens, as transformers does).
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message with the tokenizer's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// 0 disables top-k filtering.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler (the same seed gives the same text on the same device).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceName,
    /// The compute dtype [default: the dtype in config.json].
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Print {"token_ids": [...], "text": "..."} with the generated ids only.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let opts = LoadOptions {
        dtype: a.dtype.map(Dtype::kind),
        device: a.device.device()?,
    };
    let tokenizer = Tokenizer::load(&a.model)?;
    let mut model = Model::load(&a.model, opts)?;
    if let Some(adapter) = &a.adapter {
        model.load_adapter(adapter)?;
    }
    let ids = if a.chat {
        let text = tokenizer.apply_chat_template(
            &[ChatMessage {
                role: "user".into(),
                content: a.prompt.clone(),
            }],
            true,
        )?;
        tokenizer.encode(&text, false)?
    } else {
        tokenizer.encode(&a.prompt, true)?
    };
    let stop = model.stop_tokens(&tokenizer);
    let params = SamplingParams {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        eos_token_ids: stop.eos,
        pad_token_id: stop.pad,
    };
    let out = generate(&model, &[ids], &params).context("generation failed")?;
    let tokens = &out.tokens[0];
    let text = tokenizer.decode(tokens, true)?;
    if a.json {
        println!("{}", serde_json::json!({"token_ids": tokens, "text": text}));
    } else {
        println!("{text}");
    }
    Ok(())
}
