"""The verl engine's reward function (shipped inside `next`; verl loads it through
`reward.custom_reward_function.path`): every response is judged by `next verify --serve`, the
verifier every engine shares, started once per reward worker.

Its settings (the `next` binary, `next verify`'s arguments, a log file) are in `reward.json`
next to this file, so that no Hydra override has to carry them.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from next_verify import NextVerify  # noqa: E402

_settings = json.load(open(os.path.join(HERE, "reward.json")))
_verify = NextVerify(_settings["next"], _settings["verify_args"], log=_settings.get("log"))


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's per-response reward: the verdict's reward as `score`, with `correct` beside it
    (verl logs a dict's other keys as reward_extra_info)."""
    # The ground truth travels as JSON text, so that structured answers (countdown's target
    # and numbers) keep their shape through verl's dataset loader.
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    # verl passes no prompt: a reward function sees an empty one.
    row = {"response": solution_str, "ground_truth": truth, "data_source": data_source,
           "extra_info": dict(extra_info or {})}
    verdict = _verify.score([row])[0]
    return {"score": float(verdict["reward"]), "correct": float(bool(verdict["correct"]))}
