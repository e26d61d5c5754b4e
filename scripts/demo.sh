#!/usr/bin/env bash
# The main-job command (README.md): installs what is missing, builds tessera, makes the embedded
# default model (a Qwen3-MoE-shaped checkpoint with deterministic random weights, written by
# `tessera make-model` in the Hugging Face layout, with the real Qwen3 tokenizer from
# ../shared/testdata when it is there), then starts a local coordinator (`tessera serve`) with two
# supervised worker processes and streams a completion from its OpenAI-compatible API.
# The weights are random, so the text is gibberish; everything around it is the real thing.
# Without the tokenizer files it falls back to `tessera generate` on token ids.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build-demo -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCH=OFF
TESSERA="${TESSERA_DEMO_BIN:-build-demo/cli/tessera}"
TOKENIZER=../shared/testdata/tokenizers/qwen3
if [ ! -f "$TOKENIZER/tokenizer.json" ]; then
  MODEL_DIR="${TESSERA_DEMO_MODEL:-$HOME/.cache/tessera/models/qwen3_moe-small}"
  [ -f "$MODEL_DIR/config.json" ] ||
    "$TESSERA" make-model --arch qwen3_moe --preset small --seed 0 --dtype bf16 --out "$MODEL_DIR"
  echo "demo: no tokenizer at $TOKENIZER; generating from token ids in-process" >&2
  exec "$TESSERA" generate --model "$MODEL_DIR" --prompt-ids 9707,11,1879,374,264,1273 \
    --max-tokens 32 --temperature 0.7 --top-p 0.95 --seed 7 --json "$@"
fi
MODEL_DIR="${TESSERA_DEMO_MODEL:-$HOME/.cache/tessera/models/qwen3_moe-small-qwen3-tokenizer}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
  "$TESSERA" make-model --arch qwen3_moe --preset small --seed 0 --dtype bf16 \
    --tokenizer "$TOKENIZER" --out "$MODEL_DIR"
fi
PORT="${TESSERA_DEMO_PORT:-8765}"
LOG="$(mktemp -t tessera-demo-serve.XXXXXX.log)"
"$TESSERA" serve --model "$MODEL_DIR" --served-model-name tessera-demo --host 127.0.0.1 \
  --grpc-port 0 --http-port "$PORT" --local-workers 2 --kv-cache-memory 256MiB "$@" >"$LOG" 2>&1 &
SERVE_PID=$!
trap 'kill -TERM $SERVE_PID 2>/dev/null; wait $SERVE_PID 2>/dev/null || true' EXIT
echo "demo: tessera serve (pid $SERVE_PID, log $LOG) with 2 local workers; waiting until ready" >&2
/usr/bin/python3 - "$PORT" "$LOG" "$SERVE_PID" <<'PY'
import json, os, sys, time, urllib.request
port, log, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
deadline = time.time() + 300
while True:
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as r:
            if r.status == 200:
                break
    except Exception:
        pass
    if time.time() > deadline or not os.path.exists(f"/proc/{pid}"):
        sys.exit("demo: the server did not become ready; its log:\n" + open(log).read())
    time.sleep(0.5)
body = json.dumps({"model": "tessera-demo", "prompt": "The capital of France is",
                   "max_tokens": 32, "temperature": 0.7, "top_p": 0.95, "seed": 7,
                   "stream": True, "stream_options": {"include_usage": True}}).encode()
req = urllib.request.Request(base + "/v1/completions", data=body,
                             headers={"Content-Type": "application/json"})
print("demo: streaming POST /v1/completions:", flush=True)
usage = None
with urllib.request.urlopen(req, timeout=300) as r:
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for c in chunk.get("choices", []):
            print(c.get("text", ""), end="", flush=True)
        usage = chunk.get("usage") or usage
print("\ndemo: usage", json.dumps(usage))
PY
