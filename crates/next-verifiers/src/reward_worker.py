"""Worker of `next`'s Python reward functions (next_verifiers::python): loads FILE:NAME once,
then answers batches of rows read as JSON lines on stdin, one JSON line of results each.

The protocol runs over private copies of stdin/stdout taken at start-up; fd 0 then reads
/dev/null and fd 1 goes to stderr, so a reward function that prints (or reads stdin) cannot
corrupt the protocol. Every failure of a call becomes a per-row {"error": message}; only a
function that cannot be loaded ends the worker (after saying why).

Usage: python -c SCRIPT FILE NAME STYLE   (STYLE: auto, verl or trl)
"""

import importlib.util
import inspect
import json
import math
import numbers
import os
import signal
import sys
import traceback


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that `except Exception` in user code misses it."""


def _on_alarm(signum, frame):
    raise _Timeout()


class LoadError(Exception):
    pass


def load(path, name, style):
    if not os.path.isfile(path):
        raise LoadError(f"{path}: no such file")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("next_reward_module", path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        raise LoadError(f"{path}: importing it failed:\n{traceback.format_exc(limit=-3)}")
    fn = getattr(module, name, None)
    if fn is None:
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise LoadError(f"{path} has no `{name}` (its functions: {', '.join(defined) or 'none'})")
    if not callable(fn):
        raise LoadError(f"{path}: `{name}` is a {type(fn).__name__}, not a function")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if style == "auto":
        if "solution_str" in params:
            style = "verl"
        elif "completions" in params:
            style = "trl"
        else:
            raise LoadError(
                f"{path}:{name}: cannot tell its style from the signature ({', '.join(params)}); "
                "verl's is compute_score(data_source, solution_str, ground_truth, extra_info), "
                "TRL's f(prompts, completions, **columns): pass the style explicitly"
            )
    takes_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = None if takes_kwargs or not params else set(params)
    return fn, style, accepted


def _plain(v):
    """A JSON-safe copy of an extra value: finite numbers and strings as they are."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, numbers.Real):
        v = float(v)
        return v if math.isfinite(v) else None
    return repr(v)[:200]


def result(value):
    """One row's result: {"score", "extra"} or {"error"}."""
    extra = {}
    if isinstance(value, dict):
        if "score" not in value:
            return {"error": f"returned a dict without `score` (keys: {', '.join(map(str, value))})"}
        extra = {str(k): _plain(v) for k, v in value.items() if k != "score"}
        value = value["score"]
    if not isinstance(value, numbers.Real):
        return {"error": f"returned {type(value).__name__} {repr(value)[:80]}, not a number"}
    score = float(value)
    if not math.isfinite(score):
        return {"error": f"returned {score}, not a finite number"}
    return {"score": score, "extra": extra}


def call(fn, kwargs, seconds):
    """fn(**kwargs) under an alarm of `seconds`: (value, None) or (None, error message)."""
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        return fn(**kwargs), None
    except _Timeout:
        return None, f"timed out after {seconds:g} s"
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: the row fails, not the worker
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
        return None, f"raised {type(e).__name__}: {e}{where}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def only(kwargs, accepted):
    return kwargs if accepted is None else {k: v for k, v in kwargs.items() if k in accepted}


def verl(fn, rows, timeout, accepted):
    out = []
    for r in rows:
        kwargs = {
            "data_source": r["data_source"],
            "solution_str": r["response"],
            "ground_truth": r["ground_truth"],
            "extra_info": r["extra_info"],
        }
        value, err = call(fn, only(kwargs, accepted), timeout)
        out.append({"error": err} if err else result(value))
    return out


def trl(fn, rows, timeout, accepted):
    columns = {
        "ground_truth": [r["ground_truth"] for r in rows],
        "data_source": [r["data_source"] for r in rows],
        "extra_info": [r["extra_info"] for r in rows],
    }
    # TRL hands every dataset column to the function; here the keys of `extra_info` are columns.
    for r in rows:
        if isinstance(r["extra_info"], dict):
            for k in r["extra_info"]:
                if k not in columns and k not in ("prompts", "completions"):
                    columns[k] = [x["extra_info"].get(k) if isinstance(x["extra_info"], dict) else None for x in rows]
    kwargs = {"prompts": [r["prompt"] for r in rows], "completions": [r["response"] for r in rows], **columns}
    value, err = call(fn, only(kwargs, accepted), timeout * len(rows))
    if err:
        return [{"error": err} for _ in rows]
    if not isinstance(value, (list, tuple)) or len(value) != len(rows):
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        return [{"error": f"returned {got} for a batch of {len(rows)} completions"} for _ in rows]
    return [{"error": "returned None for this completion"} if v is None else result(v) for v in value]


def main():
    path, name, style = sys.argv[1:4]
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        replies.write(json.dumps(obj, allow_nan=False) + "\n")
        replies.flush()

    try:
        fn, style, accepted = load(path, name, style)
    except LoadError as e:
        send({"error": str(e)})
        return 2
    signal.signal(signal.SIGALRM, _on_alarm)
    send({"ready": True, "style": style})
    run = verl if style == "verl" else trl
    for line in requests:
        req = json.loads(line)
        send({"results": run(fn, req["rows"], float(req["timeout"]), accepted)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
