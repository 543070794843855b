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


CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def fixture_bpe():
    """A byte-level BPE with ChatML specials, pre-tokenized as SmolLM2's (digits split one by
    one, then the GPT-2 regex), trained on a fixed corpus so that it is the same every time."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    corpus = [
        "What is 12 + 30? The answer is \\boxed{42}.",
        "Solve the problem and put the final answer in \\boxed{}.",
        "You are a helpful assistant. Think step by step, then answer.",
        "Jane has 3 apples and buys 4 more; how many apples does she have now?",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return tokens, merges


def llama_cpp_permute(w, n_head):
    # convert_hf_to_gguf.py's LlamaModel.permute: interleave the two RoPE halves of each head.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def cmd_make_gguf(a):
    """A small random Llama written as llama.cpp writes one: Q8_0 embeddings, Q4_1 projections,
    F32 norms, Q/K rows permuted, byte-level BPE vocabulary with ChatML template."""
    import gguf
    import numpy as np
    import transformers

    tokens, merges = fixture_bpe()
    cfg = transformers.LlamaConfig(
        vocab_size=len(tokens), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=bool(a.tied),
        initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    torch.manual_seed(a.seed)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("next-fixture")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(500.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    names = {
        "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    Q = gguf.GGMLQuantizationType
    for name, t in model.state_dict().items():
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue
        data = t.float().numpy()
        stem = name.rsplit(".", 1)[0]
        if stem.startswith("model.layers."):
            layer, module = stem[len("model.layers."):].split(".", 1)
            out = f"blk.{layer}.{names[module]}.weight"
            if module == "self_attn.q_proj":
                data = llama_cpp_permute(data, cfg.num_attention_heads)
            elif module == "self_attn.k_proj":
                data = llama_cpp_permute(data, cfg.num_key_value_heads)
        else:
            out = names[stem] + ".weight"
        if data.ndim == 1:
            w.add_tensor(out, np.ascontiguousarray(data, dtype=np.float32))
            continue
        qtype = Q.Q8_0 if out == "token_embd.weight" else Q.Q4_1
        w.add_tensor(out, gguf.quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_gguf_reference(a):
    """transformers' own GGUF loader on the file: encodings of `--texts`, greedy continuations of
    `--chats` (rendered with the file's chat template) and how far the logits of the imported
    directory (`--imported`, loaded by transformers) are from the GGUF's."""
    import transformers

    path = os.path.abspath(a.gguf)
    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    imported = transformers.AutoModelForCausalLM.from_pretrained(a.imported, dtype=torch.float32)
    texts = json.loads(a.texts)
    encodings = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    greedy, max_diff = [], 0.0
    for chat in json.loads(a.chats):
        text = tok.apply_chat_template([{"role": "user", "content": chat}], tokenize=False,
                                       add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            diff = (model(ids).logits - imported(ids).logits).abs().max().item()
            out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=a.max_new_tokens, do_sample=False)
        max_diff = max(max_diff, diff)
        greedy.append(out[0, ids.shape[1]:].tolist())
    json.dump({"encodings": encodings, "greedy": greedy, "max_logit_diff": max_diff}, sys.stdout)


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
    mg = sub.add_parser("make-gguf")
    mg.add_argument("--out", required=True)
    mg.add_argument("--tied", type=int, default=1)
    mg.add_argument("--seed", type=int, default=0)
    mg.set_defaults(fn=cmd_make_gguf)
    gr = sub.add_parser("gguf-reference")
    gr.add_argument("--gguf", required=True)
    gr.add_argument("--imported", required=True)
    gr.add_argument("--texts", required=True)
    gr.add_argument("--chats", required=True)
    gr.add_argument("--max-new-tokens", type=int, default=16)
    gr.set_defaults(fn=cmd_gguf_reference)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
