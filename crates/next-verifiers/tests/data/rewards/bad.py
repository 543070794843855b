"""Reward functions that misbehave in every way a reward function can."""
import math
import os
import sys
import time


def raises(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "boom":
        raise ValueError("cannot parse " + solution_str)
    return 1.0


def sleeps(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "slow":
        time.sleep(60)
    return 1.0


def swallows(data_source, solution_str, ground_truth, extra_info=None):
    # A bare `except Exception` must not swallow the timeout.
    try:
        time.sleep(60)
    except Exception:
        pass
    return 1.0


def returns_string(data_source, solution_str, ground_truth, extra_info=None):
    return "1.0"


def returns_nan(data_source, solution_str, ground_truth, extra_info=None):
    return math.nan if solution_str == "nan" else 0.5


def exits(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "exit":
        os._exit(3)
    return 1.0


def prints(data_source, solution_str, ground_truth, extra_info=None):
    print("debug output from the reward function", solution_str)
    sys.stdout.flush()
    print('{"results": []}')
    return 0.25


def no_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"acc": True}


def ambiguous(x, y):
    return 1.0


NOT_A_FUNCTION = 3


def ignores_alarm(data_source, solution_str, ground_truth, extra_info=None):
    # Stuck where the worker's alarm cannot reach (as in C code): only a kill ends it.
    if solution_str == "stuck":
        import signal

        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(60)
    return 1.0
