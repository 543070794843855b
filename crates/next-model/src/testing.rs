//! Fixture models for the workspace's test suites (a character-level tokenizer, small random
//! models built by transformers or by this crate), on top of `next-testing`'s Python reference.
//! Enabled by the `testing` feature only.

use std::path::Path;

use crate::{Config, LoadOptions, Model, Tokenizer};

/// Characters of the fixture tokenizer.
pub const ALPHABET: &str = "0123456789+-*=abcdefghij ";

pub use next_testing::{python, reference, workspace_root};

/// A temporary directory holding the character-level fixture tokenizer.
pub fn tokenizer_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    Tokenizer::char_level(ALPHABET)
        .expect("char tokenizer")
        .save(dir.path())
        .expect("save tokenizer");
    dir
}

/// A small random model built and saved by transformers (`arch`: llama, llama-bias, qwen2,
/// qwen3), with the fixture tokenizer.
pub fn hf_model(arch: &str, tied: bool, gqa: bool, seed: u64) -> tempfile::TempDir {
    hf_model_with(arch, tied, gqa, seed, false)
}

/// As [`hf_model`], optionally saved as several safetensors shards with an index.
pub fn hf_model_with(
    arch: &str,
    tied: bool,
    gqa: bool,
    seed: u64,
    sharded: bool,
) -> tempfile::TempDir {
    let dir = tokenizer_dir();
    let path = dir.path().to_str().expect("utf-8 path");
    let flag = |b: bool| (b as u8).to_string();
    let (tied, gqa, shard, seed) = (flag(tied), flag(gqa), flag(sharded), seed.to_string());
    reference(&[
        "make-model",
        "--arch",
        arch,
        "--tied",
        &tied,
        "--gqa",
        &gqa,
        "--seed",
        &seed,
        "--out",
        path,
        "--shard",
        &shard,
    ]);
    dir
}

/// A small random Llama built by this crate (no Python), saved with the fixture tokenizer.
pub fn rust_model(seed: u64) -> tempfile::TempDir {
    let dir = tokenizer_dir();
    let tok = Tokenizer::load(dir.path()).expect("tokenizer");
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tok.vocab_size(),
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "torch_dtype": "float32",
    });
    let config = Config::from_value(Path::new("<test>"), config).expect("config");
    let model = Model::random(config, seed, 0.2, LoadOptions::default()).expect("random model");
    model.save(dir.path()).expect("save model");
    dir
}
