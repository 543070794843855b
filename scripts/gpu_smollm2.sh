#!/usr/bin/env bash
# scripts/gpu_smollm2.sh: a short SmolLM2-135M RLVR run with one predict-extend round on one
# NVIDIA GPU, then seconds per step, tokens/s and the accuracy curve.
#
# Runs on a machine without a Rust toolchain: it uses the release binary built elsewhere
# (`cargo build --release -p next-cli`, linked against torch 2.11.0) and the libtorch of the
# Python torch 2.11.0 installed there. Needs, in the repository root:
#   target/release/next                            the binary
#   .cache/models/SmolLM2-135M-Instruct/           (or .cache/downloads/*.gguf, imported here)
#   .cache/data/addition-2d-{train,val}.jsonl      (or reasoning-gym in that Python)
# `cargo xtask setup --with smollm2` and `cargo xtask smollm2 --set trainer.steps=0` make these.
# The task is the CPU config's (configs/smollm2-addition.toml: sums of two 2-digit numbers), so
# the GPU curve can be set beside the CPU one. The imported model (538 MB) need not travel: the
# GGUF (93 MB, .cache/downloads/) is imported here in about 3 s; the data files are 300 KB.
#
# usage: scripts/gpu_smollm2.sh [OUT_DIR] [extra `next run` --set overrides...]
#   STEPS=60 SEGMENT=30 HORIZON=20 PYTHON=python3 scripts/gpu_smollm2.sh runs/gpu-smollm2
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-runs/gpu-smollm2}
shift || true
STEPS=${STEPS:-60}
SEGMENT=${SEGMENT:-30}
HORIZON=${HORIZON:-20}
SAVE=${SAVE:-5}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu DTYPE=f32 dry-runs the script's plumbing without a GPU
DTYPE=${DTYPE:-bf16}
PYTHON=${PYTHON:-python3}
NEXT=${NEXT:-target/release/next}
MODEL=.cache/models/SmolLM2-135M-Instruct
TRAIN=.cache/data/addition-2d-train.jsonl
VAL=.cache/data/addition-2d-val.jsonl
TASK='{"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2, "operators": ["+"], "allow_parentheses": false, "allow_negation": false}'

die() { echo "gpu_smollm2: $*" >&2; exit 1; }

[ -x "$NEXT" ] || die "$NEXT is missing: build it with cargo build --release -p next-cli"
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
  || die "$PYTHON has no torch: install torch==2.11.0"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ $DEVICE == cuda* ]]; then
  "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "torch sees no CUDA device"
  "$PYTHON" -c 'import torch; print("gpu_smollm2: torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
fi

if [ ! -f "$MODEL/config.json" ]; then
  GGUF=$(ls .cache/downloads/*.gguf 2>/dev/null | head -n1 || true)
  [ -n "$GGUF" ] || die "no $MODEL and no .cache/downloads/*.gguf: run cargo xtask setup --with smollm2"
  "$NEXT" import gguf --input "$GGUF" --out "$MODEL"
fi
# reasoning-gym's seed s + 1 draws seed s's problems shifted by one: validation uses a distant seed.
for pair in "$TRAIN:2000:1:" "$VAL:200:100000:--exclude $TRAIN"; do
  IFS=: read -r file n seed extra <<<"$pair"
  [ -f "$file" ] || "$NEXT" data gen --source reasoning-gym --task basic_arithmetic \
    --gym-config "$TASK" --n "$n" --seed "$seed" --python "$PYTHON" --out "$file" $extra
done

# The CPU config, sized up for a GPU: bf16, 32 prompts x 8 samples per step, larger micro-batches.
"$NEXT" run --config configs/smollm2-addition.toml --out "$OUT" \
  --set model.device="$DEVICE" --set model.dtype="$DTYPE" \
  --set trainer.steps="$STEPS" --set trainer.prompts_per_step=32 --set rollout.n=8 \
  --set trainer.micro_batch=64 --set trainer.save_every="$SAVE" --set trainer.val_every=10 \
  --set data.val_size=200 --set optim.lr=1e-4 \
  --set scheduler.segment_steps="$SEGMENT" --set scheduler.horizon="$HORIZON" \
  --set scheduler.rounds=1 --set scheduler.predictor=linear-relex \
  --set scheduler.grid='[0.0, 0.5, 1.0, 2.0, 3.0]' "$@"

"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
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
    sys.exit("gpu_smollm2: no training steps were logged")
n = len(steps)
print(f"gpu_smollm2: {n} RL steps: {sum(s[1] for s in steps) / n:.2f} s/step, "
      f"{sum(s[2] for s in steps) / n:.0f} tokens/s (rollout + update), "
      f"mean train reward {sum(s[3] for s in steps) / n:.3f}")
print("gpu_smollm2: validation accuracy (greedy, mean@1) by step:")
for step in sorted(val):
    print(f"  step {step:4d}  {val[step]:.3f}")
sched = os.path.join(out, "scheduler.json")
if os.path.exists(sched):
    for d in json.load(open(sched)).get("decisions", []):
        print(f"gpu_smollm2: jump at step {d['from_step']}: lambda {d['lambda']} "
              f"(search {d['search_seconds']:.1f} s)")
PY
