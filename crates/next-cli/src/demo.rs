//! `next demo`: the model stack end to end on a tiny random model — build and save an HF
//! directory, load it back, fit a LoRA adapter to single-digit sums, save/reload the adapter,
//! merge it, and check that every representation generates the same answers.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use next_model::{
    generate, Batch, Config, Kind, LoadOptions, LoraConfig, Model, SamplingParams, TargetModules,
    Tensor, Tokenizer,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (base/, adapter/, merged/, summary.json).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Optimisation steps of the LoRA fit.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    lora_r: i64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Every `a+b=` prompt with one-digit operands and its answer.
fn problems() -> Vec<(String, String)> {
    (0..10)
        .flat_map(|a| (0..10).map(move |b| (format!("{a}+{b}="), format!("{}", a + b))))
        .collect()
}

fn greedy_answers(model: &Model, tok: &Tokenizer, prompts: &[Vec<i64>]) -> Result<Vec<String>> {
    let params = SamplingParams {
        max_new_tokens: 4,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
        eos_token_ids: tok.eos_token_id.into_iter().collect(),
        pad_token_id: tok.pad_token_id.unwrap_or(0),
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

pub fn run(a: Args) -> Result<()> {
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
    let base_dir = a.out.join("base");
    Model::random(config, a.seed, 0.02, LoadOptions::default())?.save(&base_dir)?;
    tok.save(&base_dir)?;
    let tok = Tokenizer::load(&base_dir)?;
    let mut model = Model::load(&base_dir, LoadOptions::default())?;
    let lora = LoraConfig {
        r: a.lora_r,
        alpha: 2.0 * a.lora_r as f64,
        dropout: 0.0,
        targets: TargetModules::AllLinear,
        use_rslora: false,
    };
    model.add_lora(&lora, a.seed)?;

    let data = problems();
    let prompts: Vec<Vec<i64>> = data
        .iter()
        .map(|(p, _)| tok.encode(p, false))
        .collect::<Result<_, _>>()?;
    let eos = tok.eos_token_id.context("tokenizer has no EOS")?;
    let mut seqs = Vec::new();
    let mut answer_len = Vec::new();
    for ((p, ans), ids) in data.iter().zip(&prompts) {
        let mut s = ids.clone();
        let ans_ids = tok.encode(ans, false)?;
        answer_len.push(ans_ids.len() as i64 + 1);
        s.extend(ans_ids);
        s.push(eos);
        seqs.push(s);
        ensure!(!p.is_empty());
    }
    let batch = Batch::left_padded(&seqs, tok.pad_token_id.unwrap_or(0), model.device())?;
    // Loss on the answer tokens and EOS: the last `answer_len` positions of each row.
    let width = batch.input_ids.size()[1];
    let pos = Tensor::arange(width - 1, (Kind::Int64, model.device())).view([1, -1]);
    let start = Tensor::from_slice(&answer_len).view([-1, 1]).neg() + width - 1;
    let loss_mask = pos.ge_tensor(&start).to_kind(Kind::Float);

    let before = accuracy(&greedy_answers(&model, &tok, &prompts)?, &data);
    // Adam (AdamW without decay), the trainer's resumable implementation.
    let params: Vec<Tensor> = model
        .lora_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let optim = next_trainer::config::OptimConfig {
        lr: a.lr,
        ..Default::default()
    };
    let mut opt = next_trainer::optim::AdamW::new(&params, &optim);
    let bar = ProgressBar::new(a.steps as u64).with_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} loss {msg} [{elapsed}<{eta}]",
    )?);
    let mut first_loss = None;
    let mut loss_v = f64::NAN;
    model.set_train(true);
    for _ in 0..a.steps {
        let lp = model.token_logprobs(&batch, 1.0)?;
        let loss = -(lp * &loss_mask).sum(Kind::Float) / loss_mask.sum(Kind::Float);
        loss.backward();
        opt.step(&params, a.lr);
        loss_v = loss.double_value(&[]);
        ensure!(loss_v.is_finite(), "loss became {loss_v}");
        first_loss.get_or_insert(loss_v);
        bar.set_message(format!("{loss_v:.4}"));
        bar.inc(1);
    }
    bar.finish();
    model.set_train(false);
    let answers = greedy_answers(&model, &tok, &prompts)?;
    let after = accuracy(&answers, &data);

    let adapter_dir = a.out.join("adapter");
    model.save_adapter(&adapter_dir, Some(&base_dir.display().to_string()))?;
    let mut reloaded = Model::load(&base_dir, LoadOptions::default())?;
    reloaded.load_adapter(&adapter_dir)?;
    ensure!(
        greedy_answers(&reloaded, &tok, &prompts)? == answers,
        "the reloaded adapter generates differently"
    );
    let merged_dir = a.out.join("merged");
    reloaded.merge_adapter()?;
    reloaded.save(&merged_dir)?;
    tok.save(&merged_dir)?;
    let merged = Model::load(&merged_dir, LoadOptions::default())?;
    ensure!(
        greedy_answers(&merged, &tok, &prompts)? == answers,
        "the merged model generates differently"
    );

    let summary = serde_json::json!({
        "problems": data.len(), "steps": a.steps, "lr": a.lr, "lora_r": a.lora_r, "seed": a.seed,
        "loss_first": first_loss, "loss_last": loss_v,
        "greedy_accuracy_before": before, "greedy_accuracy_after": after,
        "base": base_dir, "adapter": adapter_dir, "merged": merged_dir,
    });
    next_model::io::write_json(&a.out.join("summary.json"), &summary)?;
    eprintln!(
        "demo: loss {:.3} -> {loss_v:.3}, greedy accuracy {:.0}% -> {:.0}% on {} sums; adapter reload and merge agree",
        first_loss.unwrap_or(f64::NAN),
        100.0 * before,
        100.0 * after,
        data.len()
    );
    println!("{}", a.out.join("summary.json").display());
    Ok(())
}
