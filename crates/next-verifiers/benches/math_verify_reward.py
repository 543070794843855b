"""A realistic verl-style reward for `cargo xtask bench verifiers`: HF math-verify per call
(milliseconds each), where worker processes pay off."""
from math_verify import parse, verify


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    try:
        return float(verify(parse("$" + ground_truth + "$"), parse(solution_str)))
    except Exception:
        return 0.0
