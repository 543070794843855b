"""A stand-in for verl's Python in the verl engine's end-to-end test (verl trains only on GPUs).

Run as `python -m verl.trainer.main_ppo OVERRIDES...` it behaves as verl 0.9.1 does at the
engine's seams, from the overrides alone: it starts from `lora_adapter_path` (or resumes its own
last checkpoint with resume_mode=auto, or takes the step counter of `resume_from_path` with
load_contents=[extra]), "trains" by moving the LoRA factors deterministically, scores two rows
per step through the shipped `reward.py` (so `next verify --serve` really runs), logs rows to
$VERL_FILE_LOGGER_PATH (truncating it, as verl's file logger does), and saves every save_freq
steps and at the end in verl's layout (world size 1: model, optim and extra-state shards,
fsdp_config.json, lora_train_meta.json with an int alpha, data.pt, and the commit mark last).
$FAKE_VERL_CRASH_AT=N exits with an error before step N; $FAKE_VERL_EXIT_AT=N exits with status 0
before step N (a verl that stops early, e.g. on a misread step count). Every launch is recorded in
`<default_local_dir>/launches.jsonl`. Any other invocation runs the real Python
($FAKE_VERL_REAL_PYTHON) with the same arguments (the engine's exporter).
"""
import importlib.util
import json
import os
import sys


def overrides(argv):
    out = {}
    for a in argv:
        k, v = a.split("=", 1)
        if len(v) >= 2 and v[0] == v[-1] == "'":
            v = v[1:-1]
        out[k.lstrip("+")] = v
    return out


def live(key):
    return key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
        ".lora_B.weight", ".lora_B.default.weight")


def main_ppo(argv):
    import torch
    from safetensors.torch import load_file

    o = overrides(argv)
    out = o["trainer.default_local_dir"]
    stop, save = int(o["trainer.total_training_steps"]), int(o["trainer.save_freq"])
    mode = o["trainer.resume_mode"]
    adapter = o["actor_rollout_ref.model.lora_adapter_path"]
    contents = o["actor_rollout_ref.actor.checkpoint.load_contents"]
    os.makedirs(out, exist_ok=True)
    config = json.load(open(os.path.join(adapter, "adapter_config.json")))
    if int(o["actor_rollout_ref.model.lora_rank"]) != config["r"]:
        sys.exit("lora_rank %s is not the adapter's rank %s" % (o["actor_rollout_ref.model.lora_rank"], config["r"]))
    weights = {live(k): v for k, v in load_file(os.path.join(adapter, "adapter_model.safetensors")).items()}
    step, source = 0, None
    latest = os.path.join(out, "latest_checkpointed_iteration.txt")
    if mode == "auto" and os.path.exists(latest):
        step = int(open(latest).read())
        source = os.path.join(out, "global_step_%d" % step)
        weights = torch.load(os.path.join(source, "actor", "model_world_size_1_rank_0.pt"))
    elif mode == "resume_path":
        source = o["trainer.resume_from_path"]
        step = int(source.split("global_step_")[-1])
        for f in ("data.pt", "actor/extra_state_world_size_1_rank_0.pt"):
            if not os.path.exists(os.path.join(source, f)):
                sys.exit("resume_from_path lacks %s" % f)
        if contents != "[extra]":
            sys.exit("a jumped segment must load only the extra state, got %s" % contents)
    with open(os.path.join(out, "launches.jsonl"), "a") as f:
        f.write(json.dumps({"mode": mode, "from": source, "start": step, "stop": stop,
                            "load_contents": contents, "rank": config["r"]}) + "\n")
    spec = importlib.util.spec_from_file_location("reward", o["reward.custom_reward_function.path"])
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    rows = [json.loads(l) for l in open(o["data.train_files"]) if l.strip()][:2]
    logger = os.environ["VERL_FILE_LOGGER_PATH"]
    if o["ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"] != logger:
        sys.exit("the logger path differs between the override and the environment")
    log = open(logger, "w")
    crash = int(os.environ.get("FAKE_VERL_CRASH_AT", "0"))
    early = int(os.environ.get("FAKE_VERL_EXIT_AT", "0"))
    for s in range(step + 1, stop + 1):
        if s == crash:
            sys.exit("fake verl: crashed before step %d" % s)
        if s == early:
            print("fake verl: stopping early before step %d" % s)
            sys.exit(0)
        g = torch.Generator().manual_seed(s)
        weights = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in sorted(weights.items())}
        # The first row answered right, the second wrong: a mean score of 0.5.
        scores = [reward.compute_score(r["data_source"], json.loads(r["reward_model"]["ground_truth"]) if i == 0 else "x",
                                       r["reward_model"]["ground_truth"], r["extra_info"])["score"]
                  for i, r in enumerate(rows)]
        log.write(json.dumps({"step": s, "data": {"critic/score/mean": sum(scores) / len(scores),
                                                  "timing_s/step": 0.01, "training/global_step": s}}) + "\n")
        log.flush()
        if s % save == 0 or s == stop:
            d = os.path.join(out, "global_step_%d" % s)
            actor = os.path.join(d, "actor")
            os.makedirs(actor, exist_ok=True)
            torch.save(weights, os.path.join(actor, "model_world_size_1_rank_0.pt"))
            torch.save({}, os.path.join(actor, "optim_world_size_1_rank_0.pt"))
            torch.save({"lr_scheduler": None}, os.path.join(actor, "extra_state_world_size_1_rank_0.pt"))
            json.dump({"FSDP_version": 2, "world_size": 1}, open(os.path.join(actor, "fsdp_config.json"), "w"))
            json.dump({"r": config["r"], "lora_alpha": int(config["lora_alpha"]), "task_type": "CAUSAL_LM"},
                      open(os.path.join(actor, "lora_train_meta.json"), "w"))
            torch.save({"cursor": s}, os.path.join(d, "data.pt"))
            open(latest, "w").write(str(s))


if __name__ == "__main__":
    if sys.argv[1:3] == ["-m", "verl.trainer.main_ppo"]:
        main_ppo(sys.argv[3:])
    else:
        real = os.environ["FAKE_VERL_REAL_PYTHON"]
        os.execv(real, [real] + sys.argv[1:])
