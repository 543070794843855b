//! `next generate`: greedy or seeded sampling from an HF model directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use next_model::{
    generate, ChatMessage, GenerationConfig, LoadOptions, Model, SamplingParams, Tokenizer,
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
    device: String,
    /// f32, bf16 or f16 (default: the dtype in config.json).
    #[arg(long)]
    dtype: Option<String>,
    /// Print {"token_ids": [...], "text": "..."} with the generated ids only.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let opts = LoadOptions {
        dtype: a
            .dtype
            .as_deref()
            .map(next_model::parse_dtype)
            .transpose()?,
        device: next_model::parse_device(&a.device)?,
    };
    let tokenizer = Tokenizer::load(&a.model)?;
    let mut model = Model::load(&a.model, opts)?;
    if let Some(adapter) = &a.adapter {
        model.load_adapter(adapter)?;
    }
    let gen_cfg = GenerationConfig::load(&a.model)?.unwrap_or_default();
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
    let eos = [&gen_cfg.eos_token_ids, &model.config.eos_token_ids]
        .into_iter()
        .find(|v| !v.is_empty())
        .cloned()
        .or_else(|| tokenizer.eos_token_id.map(|e| vec![e]))
        .unwrap_or_default();
    let pad = gen_cfg
        .pad_token_id
        .or(model.config.pad_token_id)
        .or(tokenizer.pad_token_id)
        .or(eos.first().copied())
        .unwrap_or(0);
    let params = SamplingParams {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        eos_token_ids: eos,
        pad_token_id: pad,
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
