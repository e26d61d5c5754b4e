"""What the tokenizer tests spjson_test.py and tokenizer_reference_test.py share (not a test
itself): their TESSERA_BIN / TESSERA_TESTDATA settings and a runner for `tessera tokenize --batch`.

run_tessera(model, items, special=True, timeout=300, add_special_tokens=False) writes `items`
(texts, or id lists to decode) to a temporary JSON file, runs `$TESSERA_BIN tokenize --model MODEL
--batch FILE [--no-special] [--add-special-tokens]` and returns the parsed JSON output (one object
per item)."""

import json
import os
import subprocess
import tempfile

TESSERA_BIN = os.environ.get("TESSERA_BIN", "")
TESTDATA = os.environ.get(
    "TESSERA_TESTDATA",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                 "testdata"))


def run_tessera(model, items, special=True, timeout=300, add_special_tokens=False):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False,
                                     encoding="utf-8") as f:
        json.dump(items, f, ensure_ascii=False)
        path = f.name
    try:
        cmd = [TESSERA_BIN, "tokenize", "--model", model, "--batch", path]
        if not special:
            cmd.append("--no-special")
        if add_special_tokens:
            cmd.append("--add-special-tokens")
        out = subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        return json.loads(out.stdout.decode("utf-8"))
    finally:
        os.unlink(path)
