"""TRL side of `cargo xtask bench train`: seconds per GRPO step with TRL's GRPOTrainer on the
same base model, prompts per step, group size, max new tokens, LoRA rank and threads as ours.
Prints JSON with the mean step time and its split into generation / verification / update."""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="JSONL rows with prompt and ground_truth")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(line) for line in open(a.data)]
    ds = Dataset.from_list([{"prompt": r["prompt"], "ground_truth": r["ground_truth"]} for r in rows])
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(a.model)
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    verify_s = []

    def reward(completions, ground_truth, **kw):
        t0 = time.perf_counter()
        out = [1.0 if c.strip() == g else 0.0 for c, g in zip(completions, ground_truth)]
        verify_s.append(time.perf_counter() - t0)
        return out

    cfg = GRPOConfig(
        output_dir=os.path.join(os.path.dirname(a.out), "trl-run"),
        learning_rate=1e-3,
        per_device_train_batch_size=a.prompts_per_step * a.n,
        num_generations=a.n,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        beta=0.0,
        max_steps=a.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    peft_cfg = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft_cfg)
    gen_s = []
    inner = trainer.model.generate

    def timed_generate(*args, **kw):
        t0 = time.perf_counter()
        out = inner(*args, **kw)
        gen_s.append(time.perf_counter() - t0)
        return out

    trainer.model.generate = timed_generate
    step_s = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_s.append(time.perf_counter() - self.t0)

    trainer.add_callback(Timer())
    trainer.train()
    # The first step warms up caches; average the rest.
    skip = 1 if len(step_s) > 2 else 0
    res = {
        "trl": __import__("trl").__version__,
        "steps_timed": len(step_s) - skip,
        "step_s": statistics.mean(step_s[skip:]),
        "gen_s": statistics.mean(gen_s[skip:]) if len(gen_s) > skip else None,
        "verify_s": statistics.mean(verify_s[skip:]) if len(verify_s) > skip else None,
    }
    if res["gen_s"] is not None and res["verify_s"] is not None:
        res["update_s"] = res["step_s"] - res["gen_s"] - res["verify_s"]
    print(json.dumps(res))
    json.dump(res, open(a.out, "w"))


if __name__ == "__main__":
    main()
