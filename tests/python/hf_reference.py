"""Reference computations with transformers and PEFT for the conformance tests.

Each subcommand writes what the Rust side compares against; the tests call it with the project's
Python environment (set up by `cargo xtask setup`). Nothing here is imported by the product.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("NEXT_TEST_THREADS", "1")))


def small_config(arch, vocab, tied, gqa, eos, pad):
    import transformers

    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2 if gqa else 4,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=bool(tied),
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    if arch == "llama":
        return transformers.LlamaConfig(rope_theta=500.0, **common)
    if arch == "llama-bias":
        return transformers.LlamaConfig(attention_bias=True, mlp_bias=True, **common)
    if arch == "qwen2":
        return transformers.Qwen2Config(rope_theta=10000.0, **common)
    if arch == "qwen3":
        return transformers.Qwen3Config(head_dim=32, **common)
    raise SystemExit(f"unknown arch {arch}")


def cmd_make_model(a):
    import transformers

    tok = load_tokenizer(a.out)
    cfg = small_config(a.arch, len(tok), a.tied, a.gqa, tok.eos_token_id, tok.pad_token_id)
    torch.manual_seed(a.seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    # Non-trivial norm weights and biases, so that mistakes in them show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(a.out, **({"max_shard_size": "60KB"} if a.shard else {}))


def load_tokenizer(path, **kw):
    # Our tokenizer_config.json names PreTrainedTokenizerFast. AutoTokenizer in transformers 5
    # prefers the model type's own class (e.g. Qwen2's byte-level BPE), which would re-build a
    # different pipeline from the vocabulary; load the class the file declares.
    import transformers

    return transformers.PreTrainedTokenizerFast.from_pretrained(path, **kw)


def load_model(path, adapter):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter:
        import peft

        model = peft.PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model


def cmd_logits(a):
    import transformers
    from safetensors.torch import save_file

    tok = load_tokenizer(a.model, padding_side="left")
    model = load_model(a.model, a.adapter)
    prompts = json.loads(a.prompts)
    enc = tok(prompts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"]
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos)
    save_file(
        {
            "input_ids": enc["input_ids"].contiguous(),
            "attention_mask": mask.contiguous(),
            "logits": out.logits.float().contiguous(),
        },
        a.out,
    )


def cmd_generate(a):
    import transformers

    tok = load_tokenizer(a.model)
    model = load_model(a.model, a.adapter)
    enc = tok(a.prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=False)
    ids = out[0, enc["input_ids"].shape[1]:].tolist()
    json.dump({"token_ids": ids, "text": tok.decode(ids)}, sys.stdout)


def cmd_chat(a):
    tok = load_tokenizer(a.model)
    messages = json.loads(a.messages)
    sys.stdout.write(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def cmd_make_adapter(a):
    import peft
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    targets = a.targets if a.targets == "all-linear" else a.targets.split(",")
    cfg = peft.LoraConfig(
        r=a.r,
        lora_alpha=a.alpha,
        target_modules=targets,
        lora_dropout=0.0,
        use_rslora=a.rslora,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(a.seed)
    model = peft.get_peft_model(model, cfg)
    model.save_pretrained(a.out)


def cmd_peft_run(a):
    """A LoRA run's checkpoints as verl or TRL lay them out, written by PEFT, and what each
    global delta W_t - W_0 is according to PEFT (`get_delta_weight`, in float64)."""
    import peft
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    cfg = peft.LoraConfig(
        r=a.r,
        lora_alpha=a.alpha,
        target_modules=a.targets.split(",") if a.targets != "all-linear" else "all-linear",
        lora_dropout=0.0,
        use_rslora=a.rslora,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(a.seed)
    model = peft.get_peft_model(model, cfg)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    expected = {}
    for step in [int(s) for s in a.steps.split(",")]:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.add_(0.05 * torch.randn_like(p))
                    # Round to the saved dtype so that the file holds exactly these values.
                    p.copy_(p.to(dtype).float())
        if a.layout == "verl":
            out = os.path.join(a.out, f"global_step_{step}", "actor", "lora_adapter")
        else:
            out = os.path.join(a.out, f"checkpoint-{step}")
        model.to(dtype).save_pretrained(out)
        model.float()
        if a.layout == "trl":
            with open(os.path.join(out, "trainer_state.json"), "w") as f:
                json.dump({"global_step": step}, f)
        model.double()
        rows = {}
        for name, module in model.named_modules():
            if isinstance(module, peft.tuners.lora.LoraLayer) and "default" in module.lora_A:
                d = module.get_delta_weight("default")
                s = torch.linalg.svdvals(d)
                rows["base_model.model." + name.removeprefix("base_model.model.")] = {
                    "shape": list(d.shape),
                    "sigma1": s[0].item(),
                    "frobenius_sq": (d * d).sum().item(),
                    "scaling": module.scaling["default"],
                }
        expected[str(step)] = rows
        model.float()
    json.dump(expected, sys.stdout)


def cmd_full_run(a):
    """Full-weight checkpoints (no LoRA) of large matrices, and torch.linalg.svdvals of each
    W_t - W_0 in float64 as the reference for the full-parameter mode."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(a.seed)
    shapes = {
        "model.layers.0.mlp.down_proj.weight": (2048, 8192),
        "model.layers.0.mlp.up_proj.weight": (8192, 2048),
    }

    def save(d, ws):
        os.makedirs(d, exist_ok=True)
        save_file({k: v.contiguous() for k, v in ws.items()}, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{}")

    base = {k: 0.02 * torch.randn(s, generator=g) for k, s in shapes.items()}
    save(os.path.join(a.out, "base"), base)
    cur = dict(base)
    expected = {}
    for step in (1, 2):
        for k, (o, i) in shapes.items():
            u = torch.randn(o, 2, generator=g)
            v = torch.randn(2, i, generator=g)
            cur[k] = cur[k] + 1e-3 * (u @ v) + 1e-4 * torch.randn(o, i, generator=g)
        save(os.path.join(a.out, "run", f"checkpoint-{step}"), cur)
        expected[str(step)] = {
            k: torch.linalg.svdvals(cur[k].double() - base[k].double())[0].item()
            for k in shapes
        }
    json.dump(expected, sys.stdout)


def cmd_extended_check(a):
    """How far PEFT's merged delta of an extended adapter is from the original adapter's plus
    lambda * sum sigma u v^T (from the extension's prediction.safetensors)."""
    import peft
    import transformers
    from safetensors.torch import load_file

    def deltas(adapter):
        model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
        model = peft.PeftModel.from_pretrained(model, adapter)
        out = {}
        for name, module in model.named_modules():
            if isinstance(module, peft.tuners.lora.LoraLayer) and "default" in module.lora_A:
                stem = "base_model.model." + name.removeprefix("base_model.model.")
                out[stem] = module.get_delta_weight("default").double()
        return out, model.peft_config["default"].r

    d0, _ = deltas(a.adapter)
    d1, r1 = deltas(a.extended)
    pred = load_file(os.path.join(a.extended, "prediction.safetensors"))
    worst, jumped = 0.0, 0
    for stem, d in d0.items():
        want = d.clone()
        if stem + ".sigma" in pred:
            sg, u, v = (pred[stem + k].double() for k in (".sigma", ".u", ".v"))
            want += a.lam * (u.T * sg) @ v
            jumped += 1
        worst = max(worst, (d1[stem] - want).abs().max().item())
    json.dump({"max_abs_diff": worst, "modules": len(d0), "jumped": jumped, "r": r1}, sys.stdout)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--arch", required=True)
    m.add_argument("--tied", type=int, default=0)
    m.add_argument("--gqa", type=int, default=0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    m.add_argument("--shard", type=int, default=0)
    m.set_defaults(fn=cmd_make_model)
    ch = sub.add_parser("chat")
    ch.add_argument("--model", required=True)
    ch.add_argument("--messages", required=True)
    ch.set_defaults(fn=cmd_chat)
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--adapter")
    lg.add_argument("--prompts", required=True)
    lg.add_argument("--out", required=True)
    lg.set_defaults(fn=cmd_logits)
    g = sub.add_parser("generate")
    g.add_argument("--model", required=True)
    g.add_argument("--adapter")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.set_defaults(fn=cmd_generate)
    ad = sub.add_parser("make-adapter")
    ad.add_argument("--model", required=True)
    ad.add_argument("--out", required=True)
    ad.add_argument("--r", type=int, default=4)
    ad.add_argument("--alpha", type=float, default=8.0)
    ad.add_argument("--targets", default="all-linear")
    ad.add_argument("--rslora", action="store_true")
    ad.add_argument("--seed", type=int, default=0)
    ad.set_defaults(fn=cmd_make_adapter)
    pr = sub.add_parser("peft-run")
    pr.add_argument("--model", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--layout", choices=["verl", "trl"], required=True)
    pr.add_argument("--steps", default="10,20,30")
    pr.add_argument("--r", type=int, default=4)
    pr.add_argument("--alpha", type=float, default=8.0)
    pr.add_argument("--targets", default="all-linear")
    pr.add_argument("--rslora", action="store_true")
    pr.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    pr.add_argument("--seed", type=int, default=0)
    pr.set_defaults(fn=cmd_peft_run)
    fr = sub.add_parser("full-run")
    fr.add_argument("--out", required=True)
    fr.add_argument("--seed", type=int, default=0)
    fr.set_defaults(fn=cmd_full_run)
    ec = sub.add_parser("extended-check")
    ec.add_argument("--model", required=True)
    ec.add_argument("--adapter", required=True)
    ec.add_argument("--extended", required=True)
    ec.add_argument("--lam", type=float, required=True)
    ec.set_defaults(fn=cmd_extended_check)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
