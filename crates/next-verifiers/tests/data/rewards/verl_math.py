"""A verl-style reward file, as a verl user writes one for custom_reward_function.path."""
import re


def extract(solution_str):
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", solution_str)
    if boxed:
        return boxed[-1].strip()
    numbers = re.findall(r"-?\d+(?:\.\d+)?", solution_str)
    return numbers[-1] if numbers else None


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    pred = extract(solution_str)
    correct = pred is not None and pred == str(ground_truth).strip()
    # A length penalty past 40 characters, as some recipes add.
    penalty = min(0.5, max(0, len(solution_str) - 40) / 100)
    return {
        "score": (1.0 if correct else 0.0) - penalty,
        "acc": correct,
        "pred": pred if pred is not None else "",
        "length_penalty": penalty,
    }


def plain_score(data_source, solution_str, ground_truth, extra_info=None):
    return float(extract(solution_str) == str(ground_truth).strip())
