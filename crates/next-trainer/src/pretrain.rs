//! `next pretrain`: the embedded base model — a tiny Llama-layout decoder trained from scratch
//! on the embedded task with corrupted answers (carries dropped), so that it is capable but
//! unreliable: the right answer keeps substantial probability while greedy decoding is often
//! wrong, which is the state RL improves. Deterministic by seed; cached by configuration.

use std::path::{Path, PathBuf};
use std::time::Instant;

use next_model::{Batch, Config, Kind, LoadOptions, Model, Tensor, Tokenizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::config::{OptimSection, PretrainSection};
use crate::optim::{learning_rate, AdamW};
use crate::tasks::{self, Split, Task};
use crate::{Error, Result};

/// What `pretrain` produced.
#[derive(Debug, Clone)]
pub struct Pretrained {
    pub dir: PathBuf,
    /// The cached model was reused (its configuration matched).
    pub reused: bool,
    /// Greedy exact-match accuracy on the validation split.
    pub val_accuracy: f64,
    pub seconds: f64,
}

/// Progress of a pretraining run, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct PretrainProgress {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    /// Greedy validation accuracy, at evaluation steps.
    pub val_accuracy: Option<f64>,
}

const META: &str = "pretrain.json";

/// Greedy exact-match accuracy of `model` on addition rows.
pub fn greedy_accuracy(model: &Model, tok: &Tokenizer, rows: &[crate::data::Row]) -> Result<f64> {
    let stop = model.stop_tokens(tok);
    let prompts: Vec<Vec<i64>> = rows
        .iter()
        .map(|r| r.render(tok).and_then(|t| tok.encode(&t, false)))
        .collect::<next_model::Result<_>>()?;
    let mut correct = 0;
    for (chunk, rows) in prompts.chunks(512).zip(rows.chunks(512)) {
        let params = next_model::SamplingParams {
            max_new_tokens: 8,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            eos_token_ids: stop.eos.clone(),
            pad_token_id: stop.pad,
        };
        let g = next_model::generate(model, chunk, &params)?;
        for (ids, row) in g.tokens.iter().zip(rows) {
            let text = tok.decode(ids, true)?;
            correct += (Some(text.as_str()) == row.ground_truth.as_str()) as usize;
        }
    }
    Ok(correct as f64 / rows.len().max(1) as f64)
}

/// The base model of `cfg`: `model.path` when it names one; else the embedded base — the one
/// shipped in the repository's `bases/` when its pretraining settings are these (the same
/// starting point on every machine: pretraining in float32 follows each CPU's kernels), else
/// pretrained (or reused from its cache) into `pretrain.out`. `model.path` names it afterwards.
/// Returns what pretraining did, if it was asked for.
pub fn ensure_base(
    cfg: &mut crate::TrainConfig,
    progress: &mut dyn FnMut(PretrainProgress),
) -> Result<Option<Pretrained>> {
    if !cfg.model.path.is_empty() {
        return Ok(None);
    }
    let res = match shipped(&cfg.pretrain, &shipped_dir())? {
        Some(r) => r,
        None => pretrain(&cfg.pretrain, Path::new(&cfg.pretrain.out), progress)?,
    };
    cfg.model.path = res.dir.display().to_string();
    Ok(Some(res))
}

/// Where the shipped bases are: `bases/` of the checkout this binary was built in.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bases")
}

/// The checksum list of the shipped bases.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// The base in `bases` (a directory of bases with a `SHA256SUMS` list) pretrained with `cfg`, if
/// there is one; its files are checked against their checksums first.
pub fn shipped(cfg: &PretrainSection, bases: &Path) -> Result<Option<Pretrained>> {
    // The thread count changes how a base would be computed here, not which base is wanted:
    // a shipped base is the canonical bytes for its settings whatever the threads.
    let without_threads = |mut v: Value| {
        if let Some(m) = v.as_object_mut() {
            m.remove("threads");
        }
        v
    };
    let wanted = without_threads(cache_key(cfg)?);
    let Ok(entries) = std::fs::read_dir(bases) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let Ok(meta) = next_files::json::read::<Value>(&dir.join(META)) else {
            continue;
        };
        if without_threads(meta["config"].clone()) != wanted {
            continue;
        }
        verify(bases, &dir)?;
        tracing::info!("using the shipped base {}", dir.display());
        return Ok(Some(Pretrained {
            dir: dir.canonicalize().unwrap_or(dir),
            reused: true,
            val_accuracy: meta["val_accuracy"].as_f64().unwrap_or(f64::NAN),
            seconds: 0.0,
        }));
    }
    Ok(None)
}

/// Checks every file of the base `dir` listed in `bases/SHA256SUMS`.
fn verify(bases: &Path, dir: &Path) -> Result<()> {
    use sha2::Digest;
    let list = bases.join(CHECKSUMS);
    let text = std::fs::read_to_string(&list).map_err(|e| next_files::Error::io(&list, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut checked = 0;
    for (i, line) in text.lines().enumerate() {
        let Some((sum, file)) = line.split_once("  ") else {
            return Err(Error::Data(format!(
                "{}:{}: expected `<sha256>  <file>`",
                list.display(),
                i + 1
            )));
        };
        if file.split('/').next() != Some(name.as_str()) {
            continue;
        }
        let path = bases.join(file);
        let bytes = std::fs::read(&path).map_err(|e| next_files::Error::io(&path, e))?;
        let got = format!("{:x}", sha2::Sha256::digest(&bytes));
        if got != sum {
            return Err(Error::Data(format!(
                "{}: checksum {got} does not match {} in {}; restore the file from git",
                path.display(),
                sum,
                list.display()
            )));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(Error::Data(format!(
            "{} lists no file of the shipped base {}",
            list.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// What identifies a pretrained base: everything that shapes the model, not where it is written.
fn cache_key(cfg: &PretrainSection) -> Result<Value> {
    let mut wanted = serde_json::to_value(cfg).map_err(|e| Error::Config(e.to_string()))?;
    if let Some(m) = wanted.as_object_mut() {
        m.remove("out");
    }
    Ok(wanted)
}

/// Trains (or reuses) the embedded base model in `out`.
pub fn pretrain(
    cfg: &PretrainSection,
    out: &Path,
    progress: &mut dyn FnMut(PretrainProgress),
) -> Result<Pretrained> {
    let start = Instant::now();
    let wanted = cache_key(cfg)?;
    if let Ok(text) = std::fs::read_to_string(out.join(META)) {
        if let Ok(meta) = serde_json::from_str::<Value>(&text) {
            if meta["config"] == wanted && out.join("model.safetensors").exists() {
                tracing::info!("reusing the pretrained base in {}", out.display());
                return Ok(Pretrained {
                    dir: out.to_owned(),
                    reused: true,
                    val_accuracy: meta["val_accuracy"].as_f64().unwrap_or(f64::NAN),
                    seconds: 0.0,
                });
            }
        }
    }
    let task = cfg.task;
    let Task::Add { digits } = task else {
        return Err(Error::Config(format!(
            "pretraining supports the addition tasks, not `{}`",
            task.name()
        )));
    };
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads);
    }
    tch::manual_seed(cfg.seed as i64);
    let tok = Tokenizer::char_level(task.alphabet())?;
    let eos = tok
        .eos_token_id
        .ok_or_else(|| Error::Config("tokenizer has no EOS".into()))?;
    let pad = tok.pad_token_id.unwrap_or(0);
    let config = Config::from_value(
        Path::new("<pretrain config>"),
        json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": tok.vocab_size(), "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.heads,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false, "max_position_embeddings": 64,
            "hidden_act": "silu", "eos_token_id": eos, "pad_token_id": pad, "bos_token_id": null, "torch_dtype": "float32",
        }),
    )?;
    let model = Model::random(config, cfg.seed, 0.02, LoadOptions::default())?;
    let params: Vec<Tensor> = model
        .named_weights()
        .into_iter()
        .map(|(_, t)| t.set_requires_grad(true))
        .collect();
    let optim_cfg = OptimSection {
        lr: cfg.lr,
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-8,
        weight_decay: 0.01,
        warmup_steps: cfg.warmup_steps,
        ..OptimSection::default()
    };
    let mut opt = AdamW::new(&params, &optim_cfg);
    let train = tasks::generate(task, Split::Train, cfg.train_size, cfg.seed)?;
    let val = tasks::generate(task, Split::Val, 500, cfg.seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_0001);
    let prompt_ids: Vec<Vec<i64>> = train
        .iter()
        .map(|r| r.render(&tok).and_then(|t| tok.encode(&t, false)))
        .collect::<next_model::Result<_>>()?;
    let mut last_loss = f64::NAN;
    let mut val_accuracy = f64::NAN;
    for step in 0..cfg.steps {
        let mut seqs = Vec::with_capacity(cfg.batch);
        let mut answer_lens = Vec::with_capacity(cfg.batch);
        for _ in 0..cfg.batch {
            let i = rng.random_range(0..train.len());
            let (a, b) = (
                train[i].extra_info["a"].as_u64().unwrap_or(0),
                train[i].extra_info["b"].as_u64().unwrap_or(0),
            );
            let answer = tasks::add_answer(a, b, digits, Some((cfg.drop_carry, &mut rng)));
            let mut s = prompt_ids[i].clone();
            let ans = tok.encode(&answer, false)?;
            answer_lens.push(ans.len() + 1);
            s.extend(ans);
            s.push(eos);
            seqs.push(s);
        }
        let batch = Batch::left_padded(&seqs, pad, model.device())?;
        let mask = batch.suffix_mask(&answer_lens);
        let lp = model.token_logprobs(&batch, 1.0)?;
        let loss = -(lp * &mask).sum(Kind::Float) / mask.sum(Kind::Float);
        loss.backward();
        crate::optim::clip_grad_norm(&params, 1.0);
        opt.step(&params, learning_rate(&optim_cfg, step, cfg.steps));
        last_loss = loss.double_value(&[]);
        if !last_loss.is_finite() {
            return Err(Error::Numerics(format!(
                "pretraining loss became {last_loss} at step {step}"
            )));
        }
        let eval = (step + 1) % 250 == 0 || step + 1 == cfg.steps;
        let acc = if eval {
            val_accuracy = tch::no_grad(|| greedy_accuracy(&model, &tok, &val))?;
            Some(val_accuracy)
        } else {
            None
        };
        progress(PretrainProgress {
            step: step + 1,
            steps: cfg.steps,
            loss: last_loss,
            val_accuracy: acc,
        });
    }
    for p in &params {
        let _ = p.set_requires_grad(false);
    }
    // Written beside its target and renamed: a killed run leaves no half-written base.
    let staging = next_files::atomic::Staging::new(out)?;
    model.save(staging.path())?;
    tok.save(staging.path())?;
    let seconds = start.elapsed().as_secs_f64();
    let meta = json!({"config": wanted, "val_accuracy": val_accuracy, "final_loss": last_loss, "seconds": seconds});
    next_files::json::write(&staging.path().join(META), &meta)?;
    staging.publish(next_files::atomic::Existing::Replace)?;
    Ok(Pretrained {
        dir: out.to_owned(),
        reused: false,
        val_accuracy,
        seconds,
    })
}
