"""Seconds per RL step, tokens/s, the greedy validation curve and the jumps of a `next run`
directory (every segment), as the GPU scripts print them.

usage: python scripts/summarize_run.py LABEL RUN_DIR
"""
import glob
import json
import os
import sys

label, out = sys.argv[1], sys.argv[2]
steps, val = [], {}
for path in sorted(glob.glob(os.path.join(out, "segment-*", "metrics.jsonl"))):
    for line in open(path):
        rec = json.loads(line)
        d = rec["data"]
        if "timing_s/step" in d:
            steps.append((rec["step"], d["timing_s/step"], d.get("perf/throughput", 0.0),
                          d.get("critic/score/mean", 0.0)))
        for k, v in d.items():
            if k.startswith("val-core/") and k.endswith("mean@1"):
                val[rec["step"]] = v
if not steps:
    sys.exit("%s: no training steps were logged in %s" % (label, out))
n = len(steps)
print(f"{label}: {n} RL steps: {sum(s[1] for s in steps) / n:.2f} s/step, "
      f"{sum(s[2] for s in steps) / n:.0f} tokens/s (rollout + update), "
      f"mean train reward {sum(s[3] for s in steps) / n:.3f}")
print(f"{label}: validation accuracy (greedy, mean@1) by step:")
for step in sorted(val):
    print(f"  step {step:4d}  {val[step]:.3f}")
sched = os.path.join(out, "scheduler.json")
if os.path.exists(sched):
    for d in json.load(open(sched)).get("decisions", []):
        print(f"{label}: jump at step {d['from_step']}: lambda {d['lambda']} "
              f"(search {d['search_seconds']:.1f} s)")
