"""Predict-extend for people who keep their own TRL training script.

`PredictExtendCallback` is a `transformers.TrainerCallback`. Every `every` optimizer steps, right
after the trainer saved `checkpoint-N`, it runs the `next` binary on the run's checkpoints:
`next extract` (the rank-1 trajectory, incremental), then `next extend --search grid` (fit the
predictor, score every λ of the grid against λ = 0 by greedy generation on your selection rows
with the verifier, write the chosen adapter). In `apply` mode a chosen jump (λ > 0) replaces the
live PEFT adapter's weights with the jumped rank-(r+k) adapter and updates the optimizer in
place (AdamW moments zero-padded for the added rank, or cleared); in `shadow` mode it only
predicts, scores and logs. Every decision is a line of `<output_dir>/next/predict_extend.jsonl`
(λ, the candidates' scores, the seconds it took) and a `predict_extend/*` entry in the
trainer's logs.

    from next_predict_extend import PredictExtendCallback
    cb = PredictExtendCallback(base_model="Qwen/...", select_data="select.jsonl", every=50,
                               horizon=50, mode="apply")
    trainer = GRPOTrainer(..., peft_config=LoraConfig(...), callbacks=[cb])

The selection rows are `next`'s dataset rows (JSONL or Parquet: `prompt`, `ground_truth`,
`data_source`); keep them apart from the data you report accuracy on. `save_steps` must divide
`every` and `horizon` (the trajectory is read from saved checkpoints; do not let
`save_total_limit` delete a checkpoint before it was extracted: extraction runs at every save).
Not supported: DeepSpeed (its optimizer owns sharded parameter copies) and FSDP.
"""
import json
import os
import shutil
import subprocess
import time

import transformers

__all__ = ["PredictExtendCallback"]

MODES = ("shadow", "apply")


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


class PredictExtendCallback(transformers.TrainerCallback):
    def __init__(self, base_model, select_data, every, horizon, mode="shadow",
                 predictor="linear-relex", grid=(0.5, 1.0, 2.0), fixed_lambda=None, rank=1,
                 keep_moments=True,
                 select_size=256, max_new_tokens=256, verifier="auto", reward_fn=None,
                 device="cpu", dtype="f32", next_bin=None, first=None, work_dir=None):
        """
        base_model: the HF directory of the base model (the scorer loads it with the adapter).
        select_data: rows λ is chosen on; select_size of them are used.
        every: jump every this many steps (from `first`, default `every`); horizon: steps ahead
        the predictor looks. mode: "shadow" (score and log only) or "apply".
        predictor: one of `next extend --predictor`'s merged-trajectory methods. grid: λ values
        tried besides 0; fixed_lambda: jump by this λ without a search instead. rank: rank-1 terms added per jump. keep_moments: zero-pad AdamW's
        moments for the added rank (else clear them for the jumped tensors).
        verifier / reward_fn: `next verify`'s verifier name, or a reward function FILE:NAME.
        device, dtype: where the scorer runs ("cpu"/"cuda", "f32"/"bf16").
        next_bin: the `next` binary (default $NEXT_BIN, else `next` on PATH).
        work_dir: default `<output_dir>/next`.
        """
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (MODES, mode))
        if every <= 0 or horizon <= 0:
            raise ValueError("every and horizon must be positive")
        self.base_model, self.select_data = os.path.abspath(base_model), os.path.abspath(select_data)
        self.every, self.horizon, self.mode = every, horizon, mode
        self.first = first if first is not None else every
        self.predictor, self.grid, self.rank = predictor, list(grid), rank
        self.fixed_lambda = fixed_lambda
        self.keep_moments = keep_moments
        self.select_size, self.max_new_tokens = select_size, max_new_tokens
        self.verifier, self.reward_fn = verifier, reward_fn
        self.device, self.dtype = device, dtype
        self.next_bin = next_bin or os.environ.get("NEXT_BIN") or shutil.which("next") or "next"
        self.work_dir = work_dir

    # ------------------------------------------------------------------------------ set-up

    def on_train_begin(self, args, state, control, **kw):
        if args.save_strategy != "steps" or self.every % args.save_steps or self.horizon % args.save_steps:
            raise ValueError("PredictExtendCallback: save_strategy must be 'steps' with save_steps "
                             "(%s) dividing every (%d) and horizon (%d)"
                             % (args.save_steps, self.every, self.horizon))
        if getattr(args, "deepspeed", None):
            raise ValueError("PredictExtendCallback does not support DeepSpeed")
        if self.mode == "apply" and args.world_size > 1:
            raise ValueError("PredictExtendCallback: apply mode runs in a single process (every "
                             "rank would have to change its model in step); use shadow mode, or "
                             "`next run` with [engine] kind = \"trl\" for many GPUs")
        self.out = os.path.abspath(args.output_dir)
        self.work = os.path.abspath(self.work_dir or os.path.join(self.out, "next"))
        os.makedirs(self.work, exist_ok=True)
        self._write_config()

    def _write_config(self):
        """The config `next extend --search` reads from its run directory: the base, the
        selection rows and the verifier."""
        lines = [
            "[model]", "path = %s" % _toml(self.base_model), "device = %s" % _toml(self.device),
            "dtype = %s" % _toml(self.dtype), "",
            "[data]", "train = %s" % _toml(self.select_data), "val = %s" % _toml(self.select_data),
            "select = %s" % _toml(self.select_data), "val_size = %d" % self.select_size,
            "select_size = %d" % self.select_size, "",
            "[rollout]", "max_new_tokens = %d" % self.max_new_tokens, "",
        ]
        if self.reward_fn or self.verifier != "auto":
            lines += ["[reward]", "fn = %s" % _toml(self.reward_fn or self.verifier), ""]
        path = os.path.join(self.work, "config.resolved.toml")
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(lines))
        os.replace(path + ".tmp", path)

    # ------------------------------------------------------------------------------ a jump

    def _next(self, *args):
        r = subprocess.run([self.next_bin] + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("%s %s failed (%d): %s" % (self.next_bin, args[0], r.returncode,
                                                          r.stderr.strip()[-2000:]))
        return r

    def on_save(self, args, state, control, model=None, optimizer=None, **kw):
        step = state.global_step
        if not state.is_world_process_zero:
            return
        if step < self.first or (step - self.first) % self.every:
            return
        t0 = time.time()
        ckpt = os.path.join(self.out, "checkpoint-%d" % step)
        store = os.path.join(self.work, "trajectory")
        self._next("extract", "--run", self.out, "--format", "trl", "--out", store,
                   "--target-gap", self.horizon)
        t1 = time.time()
        jump = os.path.join(self.work, "jump-%d" % step)
        shutil.rmtree(jump, ignore_errors=True)
        if self.fixed_lambda is None:
            choose = ["--search", "grid", "--grid", ",".join(repr(float(g)) for g in self.grid)]
        else:
            choose = ["--lambda", repr(float(self.fixed_lambda))]
        self._next("extend", "--run", self.work, "--store", store, "--adapter", ckpt,
                   "--predictor", self.predictor, "--horizon", self.horizon, "--rank", self.rank,
                   "--out", jump, *choose)
        record = json.load(open(os.path.join(jump, "extend.json")))
        applied = self.mode == "apply" and record["lambda"] > 0
        if applied:
            grow_adapter(model, jump, optimizer, self.keep_moments)
        row = {
            "step": step, "mode": self.mode, "predictor": record["predictor"],
            "lambda": record["lambda"], "applied": applied, "rank": record["r"],
            "candidates": [[c["lambda"], c["score"]] for c in record["candidates"]],
            "seconds": {"extract": t1 - t0, "fit": record["fit_seconds"],
                        "search": record["search_seconds"], "total": time.time() - t0},
            "adapter": jump,
        }
        with open(os.path.join(self.work, "predict_extend.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        state.log_history.append({"step": step, "predict_extend/lambda": record["lambda"],
                                  "predict_extend/applied": float(applied),
                                  "predict_extend/seconds": row["seconds"]["total"]})
        print("predict-extend at step %d: λ %g (%s), %.1fs" % (
            step, record["lambda"], "applied" if applied else self.mode, row["seconds"]["total"]))


def _unwrap(model):
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    return model


def grow_adapter(model, adapter_dir, optimizer, keep_moments):
    """Makes the live PEFT `model`'s active adapter the one in `adapter_dir` (same modules, a
    rank r' >= r), replacing its LoRA parameters and `optimizer`'s references to them: AdamW's
    moments are zero-padded for the added rank when `keep_moments`, else cleared."""
    import torch
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file

    config = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    weights = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    r, alpha = config["r"], config["lora_alpha"]
    peft_model = _unwrap(model)
    name = peft_model.active_adapter
    replaced = {}
    for path, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or name not in module.lora_A:
            continue
        for factor in ("lora_A", "lora_B"):
            key = "%s.%s.weight" % (path, factor)
            if key not in weights:
                raise ValueError("%s has no %s" % (adapter_dir, key))
            layer = getattr(module, factor)[name]
            old = layer.weight
            new = torch.nn.Parameter(weights[key].to(device=old.device, dtype=old.dtype),
                                     requires_grad=old.requires_grad)
            layer.weight = new
            if factor == "lora_A":
                layer.out_features = r
            else:
                layer.in_features = r
            replaced[old] = new
        module.r[name] = r
        module.lora_alpha[name] = alpha
        module.scaling[name] = alpha / (r ** 0.5 if config.get("use_rslora") else r)
    if not replaced:
        raise ValueError("the model has no LoRA layers of adapter %r" % name)
    peft_model.peft_config[name].r = r
    peft_model.peft_config[name].lora_alpha = alpha
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    for group in opt.param_groups:
        group["params"] = [replaced.get(p, p) for p in group["params"]]
    for old, new in replaced.items():
        state = opt.state.pop(old, None)
        if not state or not keep_moments:
            continue
        padded = {}
        for k, v in state.items():
            if torch.is_tensor(v) and v.shape == old.shape and v.shape != new.shape:
                z = torch.zeros_like(new, memory_format=torch.contiguous_format)
                z[tuple(slice(0, n) for n in v.shape)] = v
                padded[k] = z
            else:
                padded[k] = v
        opt.state[new] = padded
