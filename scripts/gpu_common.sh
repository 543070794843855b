# scripts/gpu_common.sh: sourced by the GPU scripts (gpu_smollm2.sh, gpu_engines.sh) after they
# set LABEL, NEXT, PYTHON and DEVICE: checks the binary and torch, points the loader at torch's
# libtorch, imports SmolLM2-135M-Instruct from its GGUF when the HF directory is missing (the
# 538 MB import need not travel; the 98 MB GGUF imports in about 3 s, and scripts/gpu_pack.sh cuts
# it into pieces for machines with a small upload allowance), and makes the sums-of-two-2-digit-
# numbers data of configs/smollm2-addition.toml (300 KB) when it is missing.
MODEL=.cache/models/SmolLM2-135M-Instruct
TRAIN=.cache/data/addition-2d-train.jsonl
VAL=.cache/data/addition-2d-val.jsonl
TASK='{"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2, "operators": ["+"], "allow_parentheses": false, "allow_negation": false}'

die() { echo "$LABEL: $*" >&2; exit 1; }

[ -x "$NEXT" ] || die "$NEXT is missing: build it with cargo build --release -p next-cli"
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
  || die "$PYTHON has no torch: install torch==2.11.0"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ $DEVICE == cuda* ]]; then
  "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "torch sees no CUDA device"
  "$PYTHON" -c 'import torch; print("'"$LABEL"': torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
fi

# Pieces sent by scripts/gpu_pack.sh: the data files, and the GGUF joined and checked.
UP=.cache/upload
for f in "$UP"/data/*.jsonl; do
  [ -f "$f" ] && [ ! -f ".cache/data/$(basename "$f")" ] && mkdir -p .cache/data && cp "$f" .cache/data/
done
if [ ! -f "$MODEL/config.json" ] && [ -f "$UP/gguf.sha256" ]; then
  mkdir -p .cache/downloads
  name=$(awk '{print $2}' "$UP/gguf.sha256")
  cat "$UP"/gguf.part-* > ".cache/downloads/$name.tmp"
  (cd .cache/downloads && mv "$name.tmp" "$name" && sha256sum -c --quiet "../../$UP/gguf.sha256") \
    || { rm -f ".cache/downloads/$name"; die "the GGUF pieces in $UP do not add up (a piece missing?)"; }
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

