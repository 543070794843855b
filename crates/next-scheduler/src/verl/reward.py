"""The verl engine's reward function (shipped inside `next`; verl loads it through
`reward.custom_reward_function.path`): every response is judged by `next verify --serve`, the
verifier every engine shares, started once per reward worker.

Its settings (the `next` binary, `next verify`'s arguments, a log file) are in `reward.json`
next to this file, so that no Hydra override has to carry them.
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from next_verify import NextVerify  # noqa: E402

_settings = json.load(open(os.path.join(HERE, "reward.json")))
_verify = NextVerify(_settings["next"], _settings["verify_args"], log=_settings.get("log"))


# The extra keys returned so far: verl collects each key of the returned dicts into a list per
# batch and needs every list as long as the batch, so a row without them (an `error` verdict)
# gets them as 0, as its score is.
_extra_keys = set()


def extras(verdict):
    """The numbers a Python reward function returned beside its score (bools as 0 or 1), as the
    in-process trainer logs them under `reward_extra/<key>/mean`: the verdict's `extra`."""
    extra = verdict.get("extra")
    out = {}
    for k, v in (extra if isinstance(extra, dict) else {}).items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(v) and k not in ("score", "correct"):
            out[str(k)] = float(v)
    _extra_keys.update(out)
    return {k: out.get(k, 0.0) for k in sorted(_extra_keys)}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's per-response reward: the verdict's reward as `score`, with `correct` and a Python
    reward function's numeric extras beside it (verl keeps a dict's other keys as
    reward_extra_info and logs them in its validation metrics)."""
    # The ground truth travels as JSON text, so that structured answers (countdown's target
    # and numbers) keep their shape through verl's dataset loader.
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    # verl passes no prompt: a reward function sees an empty one.
    row = {"response": solution_str, "ground_truth": truth, "data_source": data_source,
           "extra_info": dict(extra_info or {})}
    verdict = _verify.score([row])[0]
    out = extras(verdict)
    out.update(score=float(verdict["reward"]), correct=float(bool(verdict["correct"])))
    return out
