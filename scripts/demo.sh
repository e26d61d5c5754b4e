#!/usr/bin/env bash
# The main-job command (README.md): installs what is missing, builds tessera, makes the embedded
# default model (a Qwen3-MoE-shaped checkpoint with deterministic random weights, written by
# `tessera make-model` in the Hugging Face layout) and generates from it on the local CPU.
# Until the serving engine lands this runs `tessera generate` in-process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
export TESSERA_BUILD_TESTS=OFF
bash scripts/build.sh build-demo -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCH=OFF
TESSERA=build-demo/cli/tessera
MODEL_DIR="${TESSERA_DEMO_MODEL:-$HOME/.cache/tessera/models/qwen3_moe-small}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
  "$TESSERA" make-model --arch qwen3_moe --preset small --seed 0 --dtype bf16 --out "$MODEL_DIR"
fi
"$TESSERA" generate --model "$MODEL_DIR" --prompt-ids 9707,11,1879,374,264,1273 \
  --max-tokens 32 --temperature 0.7 --top-p 0.95 --seed 7 --json "$@"
