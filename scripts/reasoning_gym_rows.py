"""Prints `--n` problems of a reasoning-gym task as JSON lines {question, answer, metadata}.

Run by `next data gen --source reasoning-gym` (embedded in the binary and fed to the project's
Python); the Rust side turns each line into a dataset row. Deterministic given --seed.
"""
import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--config", default="{}", help="the generator's settings, a JSON object")
    a = p.parse_args()
    try:
        import reasoning_gym
    except ImportError:
        sys.exit("reasoning-gym is not installed in this Python: run `cargo xtask setup`")
    try:
        data = reasoning_gym.create_dataset(a.task, size=a.n, seed=a.seed, **json.loads(a.config))
    except Exception as e:  # an unknown task name or setting raises from the registry
        sys.exit(f"reasoning-gym cannot create task `{a.task}` with settings {a.config}: {e}")
    out = sys.stdout
    for item in data:
        row = {"question": item["question"], "answer": item["answer"], "metadata": item.get("metadata", {})}
        out.write(json.dumps(row, default=str) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
