#!/usr/bin/env python3
"""Command-line front end of the numpy reference (tests/reference/model.py).

  python3 tests/reference/reference.py --model DIR --prompt-ids 1,2,3 --max-tokens N \
      [--dump-logits OUT.npy] [--json] [--force-ids 5,6,7]

Greedy generation by full recomputation at each step (no KV cache). --dump-logits writes float32
logits of every generated position, shape [N, vocab_size]: row 0 = logits at the last prompt
position (predicting the first new token), row i = after i generated tokens. --json prints
{"prompt_ids": [...], "output_ids": [...]}. --force-ids replaces greedy choice by a given
continuation (teacher forcing) and dumps the logits along it (one causal pass).
Exit status 1 with a message on stderr on bad input (missing files, unsupported model).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref_model  # noqa: E402


def _ids(text):
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--dump-logits")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--force-ids")
    args = ap.parse_args(argv)
    try:
        m = ref_model.ReferenceModel(args.model)
        prompt = _ids(args.prompt_ids)
        if not prompt:
            raise ValueError("--prompt-ids: empty prompt")
        if args.force_ids:
            out = _ids(args.force_ids)[:args.max_tokens]
            logits = m.teacher_forced_logits(prompt, out)
        else:
            out, logits = m.generate(prompt, args.max_tokens)
    except (OSError, ValueError, KeyError) as e:
        print(f"reference: error: {e}", file=sys.stderr)
        return 1
    if args.dump_logits:
        np.save(args.dump_logits, logits.astype(np.float32))
    if args.json:
        print(json.dumps({"prompt_ids": prompt, "output_ids": out}))
    else:
        print(" ".join(str(t) for t in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
