//! Model throughput benchmark (run by `cargo xtask bench model`, which also runs the
//! transformers reference on the same weights and prints the ratios).
//!
//! Usage: `model --dir DIR --threads N --out FILE.json`. Creates the benchmark models in DIR
//! (a tiny one and a ~100M-parameter Llama) if missing, then measures batched greedy decoding
//! and LoRA forward+backward tokens/s.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use next_model::{
    generate, Batch, Config, Kind, LoadOptions, LoraConfig, Model, SamplingParams, TargetModules,
    Tensor,
};
use serde_json::json;

/// (name, hidden, layers, heads, kv heads, ffn, vocab)
const MODELS: [(&str, i64, i64, i64, i64, i64, i64); 2] = [
    ("tiny", 128, 3, 4, 4, 352, 16),
    ("llama-100m", 768, 12, 12, 4, 2048, 8192),
];
const DECODE_BATCH: usize = 32;
const PROMPT_LEN: usize = 16;
const NEW_TOKENS: usize = 64;
const TRAIN_BATCH: i64 = 8;
const TRAIN_LEN: i64 = 64;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn ensure_model(dir: &Path, spec: (&str, i64, i64, i64, i64, i64, i64)) -> PathBuf {
    let (name, h, l, nh, nkv, f, v) = spec;
    let path = dir.join(name);
    if path.join("model.safetensors").exists() {
        return path;
    }
    let cfg = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v,
        "hidden_size": h, "intermediate_size": f, "num_hidden_layers": l, "num_attention_heads": nh,
        "num_key_value_heads": nkv, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "max_position_embeddings": 512, "torch_dtype": "float32",
        "bos_token_id": null, "eos_token_id": null, "pad_token_id": 0,
    });
    let cfg = Config::from_value(Path::new("<bench>"), cfg).expect("config");
    Model::random(cfg, 0, 0.02, LoadOptions::default())
        .expect("model")
        .save(&path)
        .expect("save");
    path
}

/// Deterministic pseudo-random token ids in [1, vocab).
fn tokens(n: usize, vocab: i64, salt: u64) -> Vec<i64> {
    (0..n as u64)
        .map(|i| 1 + ((i * 2654435761 + salt * 40503) % (vocab as u64 - 1)) as i64)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = PathBuf::from(arg("--dir").expect("--dir DIR"));
    let threads: i32 = arg("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    let out = PathBuf::from(arg("--out").expect("--out FILE"));
    tch::set_num_threads(threads);
    let mut results = Vec::new();
    for spec in MODELS {
        let path = ensure_model(&dir, spec);
        let reps = if spec.0 == "tiny" { 5 } else { 2 };
        let mut model = Model::load(&path, LoadOptions::default()).expect("load");
        let vocab = model.config.vocab_size;
        let prompts: Vec<Vec<i64>> = (0..DECODE_BATCH)
            .map(|i| tokens(PROMPT_LEN, vocab, i as u64))
            .collect();
        let params = SamplingParams {
            max_new_tokens: NEW_TOKENS,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            eos_token_ids: vec![],
            pad_token_id: 0,
        };
        let mut decode = Vec::new();
        for r in 0..=reps {
            let t0 = Instant::now();
            let g = generate(&model, &prompts, &params).expect("generate");
            let s = t0.elapsed().as_secs_f64();
            assert!(g.tokens.iter().all(|t| t.len() == NEW_TOKENS));
            if r > 0 {
                decode.push((DECODE_BATCH * NEW_TOKENS) as f64 / s);
            }
        }
        let lora = LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: TargetModules::AllLinear,
            use_rslora: false,
        };
        model.add_lora(&lora, 0).expect("lora");
        let seqs: Vec<Vec<i64>> = (0..TRAIN_BATCH)
            .map(|i| tokens(TRAIN_LEN as usize, vocab, 100 + i as u64))
            .collect();
        let batch = Batch::left_padded(&seqs, 0, model.device()).expect("batch");
        let params_lora: Vec<Tensor> = model
            .lora_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let mut train = Vec::new();
        for r in 0..=reps {
            let t0 = Instant::now();
            let lp = model.token_logprobs(&batch, 1.0).expect("forward");
            let loss = -lp.mean(Kind::Float);
            loss.backward();
            for p in &params_lora {
                let mut g = p.grad();
                let _ = g.zero_();
            }
            let s = t0.elapsed().as_secs_f64();
            if r > 0 {
                train.push((TRAIN_BATCH * TRAIN_LEN) as f64 / s);
            }
        }
        let row = json!({
            "model": spec.0, "params": model.named_weights().iter().map(|(_, t)| t.numel()).sum::<usize>(),
            "decode_tokens_per_s": median(decode), "train_tokens_per_s": median(train),
        });
        eprintln!("ours {row}");
        results.push(row);
    }
    let doc = json!({
        "threads": threads, "decode_batch": DECODE_BATCH, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
        "train_batch": TRAIN_BATCH, "train_len": TRAIN_LEN, "results": results,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).expect("write results");
}
