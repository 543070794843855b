"""The verl engine's exporter (shipped inside `next`, run with verl's Python): the LoRA adapter of
one verl FSDP checkpoint (`global_step_N/actor/model_world_size_W_rank_R.pt`, written with
`checkpoint.save_lora_only`) as a PEFT adapter directory with the true `lora_alpha`.

verl 0.9 writes no adapter directory while it trains, and its model merger truncates alpha to
an integer (0 when below 1); the alpha here comes from the adapter the segment started from.

    python export.py SPEC.json     # {"actor": DIR, "out": DIR, "config": adapter_config.json}

Exit status: 0 done, 2 refused input (the message names the file), other: a crash.
"""
import json
import os
import sys

REFUSED = 2


class Refused(Exception):
    """A checkpoint that cannot be exported; exit status 2."""


def shard_paths(actor):
    config = os.path.join(actor, "fsdp_config.json")
    if not os.path.isfile(config):
        raise Refused("%s is missing: not a complete verl FSDP checkpoint" % config)
    world = json.load(open(config)).get("world_size")
    if not isinstance(world, int) or world < 1:
        raise Refused("%s: no positive integer `world_size`" % config)
    paths = [os.path.join(actor, "model_world_size_%d_rank_%d.pt" % (world, r)) for r in range(world)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise Refused("%d of %d model shards are missing, e.g. %s" % (len(missing), world, missing[0]))
    return paths


def merge(key, pieces):
    """One tensor from its per-rank pieces: DTensor shards are concatenated along their shard
    dimension in rank order, replicated ones (and plain tensors) must agree on every rank."""
    import torch
    from torch.distributed.tensor import DTensor

    if isinstance(pieces[0], DTensor):
        placements = pieces[0].placements
        if len(placements) != 1:
            raise Refused("%s: a %d-D device mesh (FSDP with TP/HSDP) is not supported" % (key, len(placements)))
        local = [p._local_tensor for p in pieces]
        if placements[0].is_shard():
            return torch.cat(local, dim=placements[0].dim).contiguous()
        pieces = local
    for rank, p in enumerate(pieces[1:], start=1):
        if p.shape != pieces[0].shape or not torch.equal(p, pieces[0]):
            raise Refused("%s differs between rank 0 and rank %d and is not sharded" % (key, rank))
    return pieces[0]


def peft_key(key):
    """`...q_proj.lora_A.default.weight` (a live PEFT model's name) as saved in an adapter file."""
    key = key.replace("._fsdp_wrapped_module", "").replace("_fsdp_wrapped_module.", "")
    key = key.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
    if not key.startswith("base_model.model."):
        key = "base_model.model." + key
    return key


def export(spec):
    import torch
    from safetensors.torch import save_file

    actor, out = spec["actor"], spec["out"]
    shards = [torch.load(p, map_location="cpu", weights_only=False) for p in shard_paths(actor)]
    keys = sorted(k for k in shards[0] if ".lora_A." in k or ".lora_B." in k)
    if not keys:
        raise Refused("%s: the model shards hold no LoRA weights (was lora_rank > 0?)" % actor)
    tensors = {}
    for k in keys:
        pieces = []
        for rank, s in enumerate(shards):
            if k not in s:
                raise Refused("%s: rank %d's shard has no %s" % (actor, rank, k))
            pieces.append(s[k])
        tensors[peft_key(k)] = merge(k, pieces).float().contiguous()
    ranks = {t.shape[0] for k, t in tensors.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise Refused("%s: LoRA ranks differ between modules: %s" % (actor, sorted(ranks)))
    r = ranks.pop()
    config = json.load(open(spec["config"]))
    if config.get("r") != r:
        raise Refused("%s: the checkpoint has rank %d, the segment's adapter config (%s) rank %s"
                      % (actor, r, spec["config"], config.get("r")))
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def main():
    try:
        export(json.load(open(sys.argv[1])))
    except Refused as e:
        print("refused: %s" % e, file=sys.stderr)
        sys.exit(REFUSED)


if __name__ == "__main__":
    main()
