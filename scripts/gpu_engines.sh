#!/usr/bin/env bash
# scripts/gpu_engines.sh: one predict-extend round on SmolLM2-135M with each external engine on
# one NVIDIA GPU: TRL's GRPOTrainer with vLLM (colocated) and verl's main_ppo with vLLM rollouts;
# then seconds per step, the jump and the accuracy curve of each.
#
# Same inputs as scripts/gpu_smollm2.sh (the release binary built elsewhere, the GGUF or the
# imported model, the addition data) plus two Pythons:
#   PYTHON       torch 2.11.0 + the project's requirements (scripts/requirements.txt) + vllm,
#                for the TRL driver and libtorch
#   VERL_PYTHON  verl 0.9.1 with vLLM (scripts/requirements-verl.txt; `cargo xtask setup
#                --with verl` makes .venv-verl)
# An engine whose Python is missing is skipped with a message; the other still runs.
#
# usage: scripts/gpu_engines.sh [OUT_DIR] [extra `next run` --set overrides for both...]
#   STEPS=40 SEGMENT=20 HORIZON=10 scripts/gpu_engines.sh runs/gpu-engines
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-runs/gpu-engines}
shift || true
STEPS=${STEPS:-40}
SEGMENT=${SEGMENT:-20}
HORIZON=${HORIZON:-10}
SAVE=${SAVE:-5}
DEVICE=cuda
PYTHON=${PYTHON:-python3}
VERL_PYTHON=${VERL_PYTHON:-.venv-verl/bin/python}
NEXT=${NEXT:-target/release/next}
LABEL=gpu_engines
source scripts/gpu_common.sh
mkdir -p "$OUT"

# Both engines train the CPU task at a GPU batch; scoring (validation, λ) runs in `next` on the GPU.
sets=(--set model.device=cuda --set model.dtype=bf16 --set trainer.steps="$STEPS"
  --set trainer.prompts_per_step=32 --set rollout.n=8 --set trainer.micro_batch=64
  --set trainer.save_every="$SAVE" --set trainer.val_every=10 --set data.val_size=200
  --set optim.lr=1e-4 --set scheduler.segment_steps="$SEGMENT" --set scheduler.horizon="$HORIZON"
  --set scheduler.rounds=1 --set scheduler.predictor=linear-relex
  --set scheduler.grid='[0.5, 1.0, 2.0]')

# $1: engine name; $2: its [engine] tables. The config is the CPU one with those appended.
engine_config() {
  local cfg="$OUT/$1.toml"
  cat configs/smollm2-addition.toml > "$cfg"
  printf '\n%s\n' "$2" >> "$cfg"
  echo "$cfg"
}

if "$PYTHON" -c 'import trl, vllm' 2>/dev/null; then
  cfg=$(engine_config trl "[engine]
kind = \"trl\"
python = \"$PYTHON\"
[engine.trl]
use_vllm = true
vllm_mode = \"colocate\"
bf16 = true")
  /usr/bin/time -f "$LABEL: trl wall %e s" "$NEXT" run --config "$cfg" --out "$OUT/trl" \
    "${sets[@]}" --set scheduler.keep_moments=true "$@"
  "$PYTHON" scripts/summarize_run.py "$LABEL trl" "$OUT/trl"
else
  echo "$LABEL: $PYTHON lacks trl or vllm: the TRL engine is skipped" >&2
fi

if [ -x "$VERL_PYTHON" ] && "$VERL_PYTHON" -c 'import verl' 2>/dev/null; then
  cfg=$(engine_config verl "[engine]
kind = \"verl\"
python = \"$VERL_PYTHON\"
[engine.verl]
\"trainer.n_gpus_per_node\" = 1
\"actor_rollout_ref.rollout.gpu_memory_utilization\" = 0.4")
  /usr/bin/time -f "$LABEL: verl wall %e s" "$NEXT" run --config "$cfg" --out "$OUT/verl" \
    "${sets[@]}" --set scheduler.keep_moments=false "$@"
  "$PYTHON" scripts/summarize_run.py "$LABEL verl" "$OUT/verl"
else
  echo "$LABEL: no verl at $VERL_PYTHON (cargo xtask setup --with verl): the verl engine is skipped" >&2
fi
