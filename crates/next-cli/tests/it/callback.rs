//! The TRL callback package (`python/next_predict_extend`) in a user's own training script: TRL's
//! GRPOTrainer with a PEFT LoRA adapter on a tiny base, 6 steps, the callback acting at step 4.
//! In shadow mode it scores λ ∈ {0, 1} with `next extend --search` and logs, and the adapter
//! keeps its rank; in apply mode it jumps by λ = 1 and the live model continues at rank r + 1
//! with zero-padded moments, and training goes on.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::ok;

/// A user's script: the embedded base as an HF model, an exact-match reward, the callback.
const SCRIPT: &str = r#"
import json, sys
import torch, transformers
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer
from next_predict_extend import PredictExtendCallback

base, train, select, out, mode, next_bin = sys.argv[1:7]
transformers.set_seed(3)
torch.set_num_threads(1)
rows = [json.loads(l) for l in open(train) if l.strip()]
data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["ground_truth"]} for r in rows])

def exact(prompts, completions, answer, **kw):
    return [float(c.strip().startswith(a)) for c, a in zip(completions, answer)]

tok = transformers.AutoTokenizer.from_pretrained(base)
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
args = GRPOConfig(output_dir=out, learning_rate=5e-3, per_device_train_batch_size=16,
                  num_generations=4, max_completion_length=4, max_steps=6, logging_steps=1,
                  save_strategy="steps", save_steps=2, report_to=[], seed=3, use_cpu=True,
                  dataloader_num_workers=0, disable_tqdm=True, lr_scheduler_type="constant")
# Shadow mode searches λ in {0, 1}; apply mode jumps by λ = 1 without a search, so that the
# test always grows the live adapter.
choose = dict(grid=[1.0]) if mode == "shadow" else dict(fixed_lambda=1.0)
cb = PredictExtendCallback(base_model=base, select_data=select, every=4, horizon=2, mode=mode,
                           predictor="linear-relex", select_size=32, max_new_tokens=4,
                           next_bin=next_bin, **choose)
trainer = GRPOTrainer(model=model, reward_funcs=exact, args=args, train_dataset=data,
                      processing_class=tok, peft_config=LoraConfig(r=4, lora_alpha=8,
                      target_modules="all-linear", task_type="CAUSAL_LM"), callbacks=[cb])
trainer.train()
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
print(json.dumps({"losses": losses}))
"#;

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python")
}

fn rank(checkpoint: &Path) -> u64 {
    let text = std::fs::read_to_string(checkpoint.join("adapter_config.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["r"]
        .as_u64()
        .unwrap()
}

/// Trains the script in `mode` under `dir`; the decision rows and the losses.
fn train(dir: &Path, base: &Path, mode: &str) -> (Vec<Value>, Vec<f64>) {
    let (train, select) = (dir.join("train.jsonl"), dir.join("select.jsonl"));
    if !train.exists() {
        crate::add2_rows(&train, "train", 64);
        crate::add2_rows(&select, "test", 32);
    }
    let script = dir.join("train.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = dir.join(mode);
    let stdout = ok(Command::new(next_files::python::interpreter(None))
        .arg(&script)
        .args([base, &train, &select, &out])
        .arg(mode)
        .arg(env!("CARGO_BIN_EXE_next"))
        .env("PYTHONPATH", python_dir())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap());
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let losses = last["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let decisions = std::fs::read_to_string(out.join("next/predict_extend.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (decisions, losses)
}

#[test]
fn the_callback_scores_in_shadow_mode_and_grows_the_live_adapter_in_apply_mode() {
    let dir = tempfile::tempdir().unwrap();
    let base = crate::tiny_base(dir.path());
    for mode in ["shadow", "apply"] {
        let (decisions, losses) = train(dir.path(), &base, mode);
        assert_eq!(decisions.len(), 1, "{mode}: {decisions:?}");
        let d = &decisions[0];
        assert_eq!(
            (d["step"].clone(), d["mode"].clone()),
            (4.into(), mode.into())
        );
        let lambdas: Vec<f64> = d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_f64().unwrap())
            .collect();
        let want: &[f64] = if mode == "shadow" { &[0.0, 1.0] } else { &[] };
        assert_eq!(lambdas, want, "{mode}");
        assert!(d["seconds"]["total"].as_f64().unwrap() > 0.0);
        assert_eq!(losses.len(), 6, "{mode}: {losses:?}");
        assert!(losses.iter().all(|l| l.is_finite()), "{mode}: {losses:?}");
        let out = dir.path().join(mode);
        assert_eq!(rank(&out.join("checkpoint-4")), 4, "{mode}");
        // Shadow never touches the model; apply continues from the rank-5 jump.
        assert_eq!(d["applied"], mode == "apply", "{mode}: {d}");
        let want = if mode == "apply" { 5 } else { 4 };
        assert_eq!(rank(&out.join("checkpoint-6")), want, "{mode}: {d}");
    }
}
