"""Greedy validation accuracy of a `next train` run against RL step and against minutes of RL
(the cumulative `timing_s/step` of metrics.jsonl: validation time is not in it), as one PNG.

Usage: .venv/bin/python scripts/plot_run_curve.py RUN_DIR OUT.png [TITLE]
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    run, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else run
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl") if line.strip()]
    step_s = {r["step"]: r["data"]["timing_s/step"] for r in rows if "timing_s/step" in r["data"]}
    val = {}
    for r in rows:
        for k, v in r["data"].items():
            if k.startswith("val-core/") and k.endswith("/mean@1"):
                val[r["step"]] = v
    steps = sorted(val)
    minutes = [sum(s for k, s in step_s.items() if k <= t) / 60 for t in steps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    a.plot(steps, [val[t] for t in steps], marker="o")
    a.set_xlabel("RL step")
    a.set_ylabel("greedy validation accuracy")
    b.plot(minutes, [val[t] for t in steps], marker="o", color="tab:green")
    b.set_xlabel("minutes of RL steps (validation excluded)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"{out}: {len(steps)} validations, last {val[steps[-1]]:.3f} at step {steps[-1]}")


if __name__ == "__main__":
    main()
