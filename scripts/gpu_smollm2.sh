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
# GGUF (98 MB, .cache/downloads/) is imported there in about 3 s; the data files are 300 KB. A
# machine with no network and a small upload allowance gets them from scripts/gpu_pack.sh: the
# stripped binary (20 MB), the data and the GGUF in 40 MB pieces, one upload each, joined and
# checksummed there by gpu_common.sh (then NEXT=.cache/upload/next).
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
LABEL=gpu_smollm2
source scripts/gpu_common.sh

# The CPU config, sized up for a GPU: bf16, 32 prompts x 8 samples per step, larger micro-batches.
"$NEXT" run --config configs/smollm2-addition.toml --out "$OUT" \
  --set model.device="$DEVICE" --set model.dtype="$DTYPE" \
  --set trainer.steps="$STEPS" --set trainer.prompts_per_step=32 --set rollout.n=8 \
  --set trainer.micro_batch=64 --set trainer.save_every="$SAVE" --set trainer.val_every=10 \
  --set data.val_size=200 --set optim.lr=1e-4 \
  --set scheduler.segment_steps="$SEGMENT" --set scheduler.horizon="$HORIZON" \
  --set scheduler.rounds=1 --set scheduler.predictor=linear-relex \
  --set scheduler.grid='[0.0, 0.5, 1.0, 2.0, 3.0]' "$@"

"$PYTHON" scripts/summarize_run.py gpu_smollm2 "$OUT"
