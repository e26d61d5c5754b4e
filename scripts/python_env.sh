#!/usr/bin/env bash
# Creates (once) the Python environment the tests compare against: a venv that sees Debian's
# python3-numpy / python3-jinja2 / python3-sentencepiece / python3-grpcio and adds the PyPI
# packages Debian does not ship: `tokenizers` (Hugging Face reference tokenizer) and `openai`
# (the official client used against the HTTP API) and `tiktoken` (reference for tiktoken.model
# tokenizers such as Kimi K2's) and `transformers` (its LlamaConverter writes the Llama/Mistral
# tokenizer.json files that tests/coordinator/spjson_test.py compares against `tokenizers`;
# CPU only: it does not pull torch). sentencepiece and protobuf are pinned to the Debian
# versions the venv already sees, so pip installs nothing over them. Prints the venv's python
# path on stdout.
set -euo pipefail
VENV="${TESSERA_VENV:-$HOME/.cache/tessera/venv}"
REQS=("tokenizers==0.22.1" "openai==2.8.1" "tiktoken==0.14.0" "transformers==5.15.1"
      "sentencepiece==0.1.97" "protobuf==4.21.12")
if [ ! -x "$VENV/bin/python3" ]; then
  # Debian's interpreter: the python3-* packages above live in its dist-packages.
  PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
  "$PY" -m venv --system-site-packages "$VENV" >&2
fi
if ! "$VENV/bin/python3" -c "import tokenizers, openai, tiktoken, transformers" 2>/dev/null; then
  echo "tessera: installing ${REQS[*]} into $VENV" >&2
  "$VENV/bin/python3" -m pip install -q --disable-pip-version-check "${REQS[@]}" >&2
fi
echo "$VENV/bin/python3"
