//! `next demo`: the model stack end to end on a tiny random model — build and save an HF
//! directory, load it back, fit a LoRA adapter to single-digit sums with the trainer's AdamW,
//! save and reload the adapter, merge it, and check that every representation generates the
//! same answers.

use std::path::{Path, PathBuf};

use next_model::{
    generate, Batch, Config, Kind, LoadOptions, LoraConfig, Model, SamplingParams, TargetModules,
    Tensor, Tokenizer,
};
use serde::Serialize;

use crate::{Error, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Optimisation steps of the LoRA fit.
    pub steps: usize,
    pub lr: f64,
    pub lora_r: i64,
    pub seed: u64,
}

/// What came out (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub problems: usize,
    pub steps: usize,
    pub lr: f64,
    pub lora_r: i64,
    pub seed: u64,
    pub loss_first: f64,
    pub loss_last: f64,
    pub greedy_accuracy_before: f64,
    pub greedy_accuracy_after: f64,
    pub base: PathBuf,
    pub adapter: PathBuf,
    pub merged: PathBuf,
}

/// Every `a+b=` prompt with one-digit operands and its answer.
fn problems() -> Vec<(String, String)> {
    (0..10)
        .flat_map(|a| (0..10).map(move |b| (format!("{a}+{b}="), format!("{}", a + b))))
        .collect()
}

fn greedy_answers(model: &Model, tok: &Tokenizer, prompts: &[Vec<i64>]) -> Result<Vec<String>> {
    let stop = model.stop_tokens(tok);
    let params = SamplingParams {
        max_new_tokens: 4,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
        eos_token_ids: stop.eos,
        pad_token_id: stop.pad,
    };
    let g = generate(model, prompts, &params)?;
    g.tokens.iter().map(|t| Ok(tok.decode(t, true)?)).collect()
}

fn accuracy(answers: &[String], data: &[(String, String)]) -> f64 {
    answers
        .iter()
        .zip(data)
        .filter(|(a, (_, gold))| a == &gold)
        .count() as f64
        / data.len() as f64
}

/// Runs the demo into `out` (`base/`, `adapter/`, `merged/`, `summary.json`); `on_step` gets
/// each step's loss.
pub fn run(
    o: &DemoOptions,
    out: &Path,
    on_step: &mut dyn FnMut(usize, f64),
) -> Result<DemoSummary> {
    let tok = Tokenizer::char_level("0123456789+=")?;
    let config = Config::from_value(
        Path::new("<demo config>"),
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": tok.vocab_size(), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "torch_dtype": "float32",
        }),
    )?;
    let base_dir = out.join("base");
    Model::random(config, o.seed, 0.02, LoadOptions::default())?.save(&base_dir)?;
    tok.save(&base_dir)?;
    let tok = Tokenizer::load(&base_dir)?;
    let mut model = Model::load(&base_dir, LoadOptions::default())?;
    let lora = LoraConfig {
        r: o.lora_r,
        alpha: 2.0 * o.lora_r as f64,
        dropout: 0.0,
        targets: TargetModules::AllLinear,
        use_rslora: false,
    };
    model.add_lora(&lora, o.seed)?;

    let data = problems();
    let prompts: Vec<Vec<i64>> = data
        .iter()
        .map(|(p, _)| tok.encode(p, false))
        .collect::<next_model::Result<_>>()?;
    let stop = model.stop_tokens(&tok);
    let eos = *stop
        .eos
        .first()
        .ok_or_else(|| Error::Config("the demo tokenizer has no EOS".into()))?;
    let mut seqs = Vec::new();
    let mut answer_len = Vec::new();
    for ((_, ans), ids) in data.iter().zip(&prompts) {
        let mut s = ids.clone();
        let ans_ids = tok.encode(ans, false)?;
        answer_len.push(ans_ids.len() + 1);
        s.extend(ans_ids);
        s.push(eos);
        seqs.push(s);
    }
    let batch = Batch::left_padded(&seqs, stop.pad, model.device())?;
    // Loss on the answer tokens and EOS.
    let loss_mask = batch.suffix_mask(&answer_len);

    let before = accuracy(&greedy_answers(&model, &tok, &prompts)?, &data);
    // Adam (AdamW without decay), the trainer's resumable implementation.
    let params: Vec<Tensor> = model
        .lora_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let optim = crate::config::OptimSection {
        lr: o.lr,
        ..Default::default()
    };
    let mut opt = crate::optim::AdamW::new(&params, &optim);
    let mut first_loss = None;
    let mut loss_v = f64::NAN;
    model.set_train(true);
    for step in 0..o.steps {
        let lp = model.token_logprobs(&batch, 1.0)?;
        let loss = -(lp * &loss_mask).sum(Kind::Float) / loss_mask.sum(Kind::Float);
        loss.backward();
        opt.step(&params, o.lr);
        loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() {
            return Err(Error::Numerics(format!(
                "loss became {loss_v} at step {step}"
            )));
        }
        first_loss.get_or_insert(loss_v);
        on_step(step + 1, loss_v);
    }
    model.set_train(false);
    let answers = greedy_answers(&model, &tok, &prompts)?;
    let after = accuracy(&answers, &data);

    let adapter_dir = out.join("adapter");
    model.save_adapter(&adapter_dir, Some(&base_dir.display().to_string()))?;
    let mut reloaded = Model::load(&base_dir, LoadOptions::default())?;
    reloaded.load_adapter(&adapter_dir)?;
    if greedy_answers(&reloaded, &tok, &prompts)? != answers {
        return Err(Error::Numerics(
            "the reloaded adapter generates differently".into(),
        ));
    }
    let merged_dir = out.join("merged");
    reloaded.merge_adapter()?;
    reloaded.save(&merged_dir)?;
    tok.save(&merged_dir)?;
    let merged = Model::load(&merged_dir, LoadOptions::default())?;
    if greedy_answers(&merged, &tok, &prompts)? != answers {
        return Err(Error::Numerics(
            "the merged model generates differently".into(),
        ));
    }
    let summary = DemoSummary {
        problems: data.len(),
        steps: o.steps,
        lr: o.lr,
        lora_r: o.lora_r,
        seed: o.seed,
        loss_first: first_loss.unwrap_or(f64::NAN),
        loss_last: loss_v,
        greedy_accuracy_before: before,
        greedy_accuracy_after: after,
        base: base_dir,
        adapter: adapter_dir,
        merged: merged_dir,
    };
    next_files::json::write(&out.join("summary.json"), &summary)?;
    Ok(summary)
}
