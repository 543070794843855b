"""transformers side of `cargo xtask bench model`: the same models, batches and threads as
crates/next-model/benches/model.rs; writes tokens/s as JSON."""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402


def tokens(n, vocab, salt):
    return [1 + ((i * 2654435761 + salt * 40503) % (vocab - 1)) for i in range(n)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--ours", required=True, help="our results JSON (for the shapes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    spec = json.load(open(a.ours))
    results = []
    for row in spec["results"]:
        name = row["model"]
        reps = 5 if name == "tiny" else 2
        model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(a.dir, name), dtype=torch.float32).eval()
        vocab = model.config.vocab_size
        ids = torch.tensor([tokens(spec["prompt_len"], vocab, i) for i in range(spec["decode_batch"])])
        mask = torch.ones_like(ids)
        n_new = spec["new_tokens"]
        decode = []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new, min_new_tokens=n_new,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)
            s = time.perf_counter() - t0
            assert out.shape[1] == ids.shape[1] + n_new
            if r > 0:
                decode.append(spec["decode_batch"] * n_new / s)
        cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, cfg)
        batch = torch.tensor([tokens(spec["train_len"], vocab, 100 + i) for i in range(spec["train_batch"])])
        train = []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            logits = model(input_ids=batch).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch[:, 1:, None]).squeeze(-1)
            (-lp.mean()).backward()
            model.zero_grad(set_to_none=False)
            s = time.perf_counter() - t0
            if r > 0:
                train.append(spec["train_batch"] * spec["train_len"] / s)
        res = {"model": name, "decode_tokens_per_s": statistics.median(decode), "train_tokens_per_s": statistics.median(train)}
        print("transformers", json.dumps(res), flush=True)
        results.append(res)
    json.dump({"threads": a.threads, "transformers": transformers.__version__, "torch": torch.__version__, "results": results},
              open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
