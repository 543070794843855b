"""A TRL-style reward file: batch functions f(prompts, completions, **kwargs) -> list[float]."""
from verl_math import extract


def accuracy_reward(prompts, completions, ground_truth, **kwargs):
    return [1.0 if extract(c) == str(g).strip() else 0.0 for c, g in zip(completions, ground_truth)]


def weighted_reward(prompts, completions, ground_truth, weight, **kwargs):
    # `weight` is a key of each row's extra_info, passed as a column as TRL passes dataset columns.
    return [w * (extract(c) == str(g).strip()) - 0.01 * len(p) for p, c, g, w in zip(prompts, completions, ground_truth, weight)]


def short_list(prompts, completions, **kwargs):
    return [1.0]
