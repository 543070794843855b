#!/usr/bin/env bash
# scripts/gpu_pack.sh: packs what the GPU scripts need into pieces that each fit one upload to a
# GPU machine with no network and a small per-call allowance (64 MiB on ours), and prints which
# pieces to send with which call. The pieces land in .cache/upload/ (git-ignored):
#   next               the release binary without its debug info (about 20 MB instead of 188 MB;
#                      it links libtorch dynamically, so the machine's torch 2.11.0 supplies it)
#   data/              the SmolLM2 task's problem files (300 KB; reasoning-gym need not be there)
#   gguf.part-NN       SmolLM2-135M-Instruct's 98 MB GGUF cut into 40 MB pieces, and
#   gguf.sha256        its checksum: gpu_common.sh joins the pieces there, checks the sum and
#                      imports the model (3 s); the 538 MB imported directory never travels.
# Pieces sent by earlier calls stay on the machine while it is held, so one call per piece works.
#
# usage: scripts/gpu_pack.sh      (after cargo build --release -p next-cli and
#                                  cargo xtask smollm2 --set trainer.steps=0, which make the inputs)
set -euo pipefail
cd "$(dirname "$0")/.."

UP=.cache/upload
PIECE=40M
GGUF=$(ls .cache/downloads/*.gguf 2>/dev/null | head -n1 || true)
[ -x target/release/next ] || { echo "gpu_pack: build target/release/next first" >&2; exit 1; }
[ -n "$GGUF" ] || { echo "gpu_pack: no .cache/downloads/*.gguf: cargo xtask setup --with smollm2" >&2; exit 1; }
for f in .cache/data/addition-2d-train.jsonl .cache/data/addition-2d-val.jsonl; do
  [ -f "$f" ] || { echo "gpu_pack: $f is missing: cargo xtask smollm2 --set trainer.steps=0" >&2; exit 1; }
done

# Built beside its final name and renamed, so an interrupted pack never leaves half an upload.
rm -rf "$UP.tmp" && mkdir -p "$UP.tmp/data"
strip -o "$UP.tmp/next" target/release/next
cp .cache/data/addition-2d-train.jsonl .cache/data/addition-2d-val.jsonl "$UP.tmp/data/"
split -b "$PIECE" -d "$GGUF" "$UP.tmp/gguf.part-"
(cd "$(dirname "$GGUF")" && sha256sum "$(basename "$GGUF")") > "$UP.tmp/gguf.sha256"
rm -rf "$UP" && mv "$UP.tmp" "$UP"

parts=("$UP"/gguf.part-*)
echo "gpu_pack: $(du -sh "$UP" | cut -f1) in $UP; send, one call each (carry lists):"
echo "  [\"$UP/next\", \"$UP/data\", \"$UP/gguf.sha256\", \"${parts[0]}\"]"
for p in "${parts[@]:1}"; do echo "  [\"$p\"]"; done
echo "then run: NEXT=$UP/next scripts/gpu_smollm2.sh runs/gpu-smollm2"
