"""The TRL engine's driver (shipped inside `next`, run with the project's Python or under
`accelerate launch`): trains TRL's GRPOTrainer with a PEFT LoRA adapter to a stop step without
changing the learning-rate schedule of the whole run, and mirrors every checkpoint into the run
layout the predict-extend scheduler reads (`global_step_N/actor/lora_adapter`, `metrics.jsonl`
under verl's names, `latest_checkpointed_iteration.txt`). `prepare` builds the TRL checkpoint a
jumped segment resumes from.

    python driver.py train SPEC.json
    python driver.py prepare SPEC.json

Exit status: 0 done, 2 refused input (the message says which file or key), other: a crash.
"""
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LATEST = "latest_checkpointed_iteration.txt"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
OPTIMIZER = "optimizer.pt"


class Refused(Exception):
    """Input the driver will not run with; exit status 2."""


def atomic_write(path, text):
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_dir(build, target):
    """Moves a directory built under a temporary name to `target`, replacing an old one."""
    if os.path.exists(target):
        old = target + ".old-%d" % os.getpid()
        os.replace(target, old)
        os.replace(build, target)
        shutil.rmtree(old)
    else:
        os.replace(build, target)


def copy_adapter(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in ADAPTER_FILES:
        path = os.path.join(src, name)
        if not os.path.isfile(path):
            raise Refused("%s has no %s: not a PEFT adapter" % (src, name))
        shutil.copy2(path, os.path.join(dst, name))


# ----------------------------------------------------------------------------------- metrics

# TRL's log keys under verl's names (the rest are kept under `trl/`).
NAMES = {
    "reward": "critic/score/mean",
    "reward_std": "critic/score/std",
    "loss": "actor/pg_loss",
    "grad_norm": "actor/grad_norm",
    "learning_rate": "actor/lr",
    "entropy": "actor/entropy",
    "completions/mean_length": "response_length/mean",
    "completions/max_length": "response_length/max",
    "completions/clipped_ratio": "response_length/clip_ratio",
    "kl": "actor/kl_loss",
    "frac_reward_zero_std": "critic/zero_std_frac",
    "step_time": "timing_s/step",
}


def verl_names(logs):
    out = {}
    for k, v in logs.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        out[NAMES.get(k, "trl/" + k)] = float(v)
    return out


def truncate_metrics(path, step):
    """Drops rows after `step` (a crashed segment's steps are trained again)."""
    if not os.path.isfile(path):
        return
    keep = [l for l in open(path) if l.strip() and json.loads(l)["step"] <= step]
    atomic_write(path, "".join(keep))


# ------------------------------------------------------------------------------------ reward


def make_reward(spec, run):
    """A TRL reward function that scores completions with a long-lived `next verify --serve`
    (one verifier implementation for every engine; one child per process, so under
    `accelerate launch` every rank scores its own shard)."""
    from next_verify import NextVerify

    verify = NextVerify(spec["next"], spec["verify_args"],
                        log=os.path.join(run, "trl", "verify.log"))

    def text(x):
        if isinstance(x, list):  # conversational: a list of messages
            return "".join(m.get("content", "") for m in x if isinstance(m, dict))
        return x

    def reward(prompts, completions, ground_truth, data_source, extra_info=None, **kw):
        extra = extra_info if extra_info is not None else [None] * len(completions)
        rows = []
        for p, c, g, s, e in zip(prompts, completions, ground_truth, data_source, extra):
            e = json.loads(e) if isinstance(e, str) else e
            rows.append({"prompt": text(p), "response": text(c), "ground_truth": json.loads(g),
                         "data_source": s, "extra_info": e})
        return [float(r["reward"]) for r in verify.score(rows)]

    reward.__name__ = "next_verify"
    return reward


# ------------------------------------------------------------------------------------- train


def dataset(path):
    from datasets import Dataset

    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                rows.append({
                    "prompt": r["prompt"],
                    "ground_truth": json.dumps(r["ground_truth"]),
                    "data_source": r.get("data_source", ""),
                    # Arrow needs one type per column: ground truths (text, numbers or objects)
                    # and extra_info travel as JSON text.
                    "extra_info": json.dumps(r.get("extra_info")),
                })
            except (ValueError, KeyError) as e:
                raise Refused("%s:%d: %s" % (path, i, e))
    if not rows:
        raise Refused("%s has no rows" % path)
    return Dataset.from_list(rows)


def check_optimizer(ckpt, model):
    """Refuses an optimizer state whose shapes are not the adapter's (a stale `optimizer.pt`
    makes torch's fused Adam crash the process instead of failing)."""
    import torch

    path = os.path.join(ckpt, OPTIMIZER)
    if not os.path.isfile(path):
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ids = [i for g in state["param_groups"] for i in g["params"]]
    if len(ids) != len(params):
        raise Refused("%s holds moments for %d tensors, the adapter has %d: a stale optimizer state "
                      "(delete it to restart the moments)" % (path, len(ids), len(params)))
    for i, (n, p) in zip(ids, params):
        s = state["state"].get(i)
        if s is not None and tuple(s["exp_avg"].shape) != tuple(p.shape):
            raise Refused("%s: the moments of %s have shape %s, the adapter's tensor %s: a stale "
                          "optimizer state" % (path, n, tuple(s["exp_avg"].shape), tuple(p.shape)))


def world_size():
    """The processes training together (`WORLD_SIZE`, which `accelerate launch` and torchrun set;
    1 without a launcher)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        world = 0
    if world < 1:
        raise Refused("WORLD_SIZE=%r is not a positive number of processes" % text)
    return world


def batch_args(spec, world):
    """The GRPOConfig batch fields that make one optimizer step take `prompts_per_step` prompts
    x `n` samples in all, whatever the number of processes: TRL's global batch is
    per_device_train_batch_size x processes x gradient_accumulation_steps completions (the
    generation batch is that, once per step, unless `[engine.trl]` says otherwise)."""
    extra = spec.get("extra") or {}
    accum = extra.get("gradient_accumulation_steps", 1)
    total = spec["prompts_per_step"] * spec["n"]
    if not isinstance(accum, int) or accum < 1 or total % (world * accum) != 0:
        raise Refused("trainer.prompts_per_step x rollout.n = %d x %d = %d completions per step do "
                      "not split evenly over %d processes (WORLD_SIZE) x %r gradient accumulation "
                      "steps: change trainer.prompts_per_step, rollout.n or the number of processes"
                      % (spec["prompts_per_step"], spec["n"], total, world, accum))
    return {"per_device_train_batch_size": total // (world * accum),
            "gradient_accumulation_steps": accum}


def check_batch(spec, cfg, world):
    """Refuses a GRPOConfig whose optimizer step is not `prompts_per_step` x `n` completions over
    `world` processes (an `[engine.trl]` batch field, or a launcher TRL disagrees with)."""
    if cfg.world_size != world:
        raise Refused("WORLD_SIZE says %d processes, but TRL runs in %d" % (world, cfg.world_size))
    step = cfg.per_device_train_batch_size * cfg.world_size * cfg.gradient_accumulation_steps
    if step != spec["prompts_per_step"] * spec["n"]:
        raise Refused("per_device_train_batch_size %d x %d processes x gradient_accumulation_steps "
                      "%d = %d completions per step, not trainer.prompts_per_step x rollout.n = "
                      "%d x %d (leave per_device_train_batch_size to the engine)"
                      % (cfg.per_device_train_batch_size, cfg.world_size,
                         cfg.gradient_accumulation_steps, step, spec["prompts_per_step"], spec["n"]))


def prompts_seen(args, step):
    """The prompts TRL has drawn by optimizer step `step`, over all processes: one generation
    batch (generation_batch_size / num_generations prompts) every steps_per_generation x
    num_iterations micro-steps, from the first."""
    micro = step * args.gradient_accumulation_steps
    every = args.steps_per_generation * args.num_iterations
    return -(-micro // every) * (args.generation_batch_size // args.num_generations)


def train(spec):
    import torch
    import transformers
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    run = spec["run"]
    out = os.path.join(run, "trl")
    os.makedirs(out, exist_ok=True)
    transformers.set_seed(spec["seed"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    latest = None
    if os.path.isfile(os.path.join(run, LATEST)):
        latest = int(open(os.path.join(run, LATEST)).read().strip())
    resume = os.path.join(out, "checkpoint-%d" % latest) if latest is not None else None
    if resume is not None and not os.path.isdir(resume):
        raise Refused("%s says step %d, but %s is missing" % (os.path.join(run, LATEST), latest, resume))
    stop_at = spec["stop_at"]
    world = world_size()
    batch = batch_args(spec, world)
    if latest is not None and latest >= stop_at:
        return
    if int(os.environ.get("RANK", "0")) == 0:
        truncate_metrics(os.path.join(run, "metrics.jsonl"), latest or 0)

    tok = transformers.AutoTokenizer.from_pretrained(spec["model"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    lora = spec["lora"]
    if resume is not None:
        # The checkpoint's adapter config decides the rank (a jump grows it); TRL makes a fresh
        # adapter of it and the resume loads the weights. Handing TRL a PeftModel with those
        # weights instead would make them its KL reference (beta != 0), not the base model.
        peft_config = LoraConfig.from_pretrained(resume)
        peft_config.inference_mode = False
    else:
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=lora["target_modules"], use_rslora=lora["use_rslora"],
                                 task_type="CAUSAL_LM")
    args = dict(
        output_dir=out,
        learning_rate=spec["lr"],
        weight_decay=spec["weight_decay"],
        max_grad_norm=spec["grad_clip"] if spec["grad_clip"] > 0 else 1e9,
        lr_scheduler_type=spec["schedule"],
        warmup_steps=spec["warmup_steps"],
        num_generations=spec["n"],
        max_completion_length=spec["max_new_tokens"],
        temperature=spec["temperature"],
        top_p=spec["top_p"],
        top_k=spec["top_k"],
        beta=spec["kl_coef"],
        epsilon=spec["clip_ratio"],
        num_iterations=spec["ppo_epochs"],
        max_steps=spec["steps"],
        logging_steps=1,
        save_strategy="steps",
        save_steps=spec["save_every"],
        report_to=[],
        seed=spec["seed"],
        data_seed=spec["seed"],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    args.update(batch)
    args.update(spec.get("extra") or {})
    cfg = GRPOConfig(**args)
    check_batch(spec, cfg, world)
    trainer = GRPOTrainer(model=model, reward_funcs=make_reward(spec, run), args=cfg,
                          train_dataset=dataset(spec["train"]), processing_class=tok,
                          peft_config=peft_config)
    trainer.add_callback(make_mirror()(spec, trainer))
    if resume is not None:
        check_optimizer(resume, trainer.model)
    trainer.train(resume_from_checkpoint=resume)


def mirror_step(spec, trainer, step):
    """Writes checkpoint `step` in the scheduler's layout, after TRL finished writing its own."""
    run = spec["run"]
    ckpt = os.path.join(run, "trl", "checkpoint-%d" % step)
    target = os.path.join(run, "global_step_%d" % step)
    build = target + ".tmp-%d" % os.getpid()
    shutil.rmtree(build, ignore_errors=True)
    copy_adapter(ckpt, os.path.join(build, "actor", "lora_adapter"))
    seen = prompts_seen(trainer.args, step)
    state = {"step": step, "seed": spec["seed"], "data_epoch": seen // spec["rows"],
             "data_index": seen % spec["rows"]}
    with open(os.path.join(build, "actor", "trainer_state.json"), "w") as f:
        json.dump(state, f)
    publish_dir(build, target)
    atomic_write(os.path.join(run, LATEST), "%d\n" % step)


def make_mirror():
    import transformers

    class Mirror(transformers.TrainerCallback):
        """Stops at `stop_at` (saving there), mirrors checkpoints and logs."""

        def __init__(self, spec, trainer):
            self.spec, self.trainer = spec, trainer

        def on_train_begin(self, args, state, control, **kw):
            initial = os.path.join(self.spec["run"], "initial_adapter")
            if state.global_step == 0 and args.process_index == 0 and not os.path.isdir(initial):
                build = initial + ".tmp-%d" % os.getpid()
                self.trainer.model.save_pretrained(build)
                publish_dir(build, initial)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= self.spec["stop_at"]:
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if args.process_index != 0 or not logs or "loss" not in logs:
                return
            row = {"step": state.global_step, "data": verl_names(logs)}
            with open(os.path.join(self.spec["run"], "metrics.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")

        def on_save(self, args, state, control, **kw):
            if args.process_index == 0:
                mirror_step(self.spec, self.trainer, state.global_step)

    return Mirror


# ----------------------------------------------------------------------------------- prepare


def prepare(spec):
    """The TRL checkpoint a jumped segment resumes from: `from`'s checkpoint (LR scheduler, RNG,
    trainer state) with the jumped adapter, and the optimizer moments either zero-padded for
    the added rank (`keep`) or cleared (`fresh`; the step counts and learning rates stay)."""
    import torch
    import transformers
    from peft import PeftModel

    src, adapter, target = spec["from"], spec["adapter"], spec["out"]
    if not os.path.isdir(src):
        raise Refused("the checkpoint %s is missing" % src)
    build = target + ".tmp-%d" % os.getpid()
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(src, build, ignore=shutil.ignore_patterns(*ADAPTER_FILES, OPTIMIZER))
    copy_adapter(adapter, build)
    opt_path = os.path.join(src, OPTIMIZER)
    if os.path.isfile(opt_path):
        state = torch.load(opt_path, map_location="cpu", weights_only=True)
        base = transformers.AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        old = PeftModel.from_pretrained(base, src, is_trainable=True)
        check_optimizer(src, old)
        names = [n for n, p in old.named_parameters() if p.requires_grad]
        ids = [i for g in state["param_groups"] for i in g["params"]]
        if spec["moments"] == "keep":
            new_rank = json.load(open(os.path.join(adapter, "adapter_config.json")))["r"]
            for i, n in zip(ids, names):
                s = state["state"].get(i)
                if s is None:
                    continue
                for key in ("exp_avg", "exp_avg_sq"):
                    t = s[key]
                    # lora_A is [r, in] and lora_B [out, r]: the jump's factors are appended.
                    dim = 0 if ".lora_A." in n else 1
                    pad = new_rank - t.shape[dim]
                    if pad < 0:
                        raise Refused("%s has rank %d, below the checkpoint's" % (adapter, new_rank))
                    shape = list(t.shape)
                    shape[dim] = pad
                    s[key] = torch.cat([t, t.new_zeros(shape)], dim=dim)
        else:
            state["state"] = {}
        torch.save(state, os.path.join(build, OPTIMIZER))
    publish_dir(build, target)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("train", "prepare"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    spec = json.load(open(sys.argv[2]))
    try:
        if sys.argv[1] == "train":
            train(spec)
        else:
            prepare(spec)
    except Refused as e:
        print("trl engine: %s" % e, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
