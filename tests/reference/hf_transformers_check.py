#!/usr/bin/env python3
"""Checks Tessera against Hugging Face transformers' own modelling code (not a ctest: CI has no
torch). tests/reference/ is a numpy reference we wrote; this script closes the gap a mistake shared
by that reference and the C++ would leave, by running the published PyTorch classes themselves.

How to run (outside the repo's test venv; torch + transformers are big):
    python3 -m venv /root/.cache/hfcheck-venv
    /root/.cache/hfcheck-venv/bin/pip install torch transformers==5.15.1 numpy safetensors \
        accelerate   # accelerate: only for the fp8 cases
    /root/.cache/hfcheck-venv/bin/python tests/reference/hf_transformers_check.py \
        --tessera build/cli/tessera [--testdata ../shared/testdata] [--filter SUBSTR] [--keep DIR]

For every case: `tessera make-model` writes a checkpoint (tiny preset or a real config scaled down),
`tessera generate --temperature 0 --dump-logits L.npy --json` generates 16 tokens, and
`AutoModelForCausalLM.from_pretrained(DIR, dtype=float32, attn_implementation="eager")` (loaded
with output_loading_info=True: any missing / unexpected / mismatched key FAILS, it is a layout bug
in make-model) runs ONE teacher-forced forward over prompt + Tessera's tokens. Row i of L is
compared with HF's logits at position len(prompt)-1+i: per-row ||a-b||/||b||, plus whether
Tessera's tokens equal HF's argmax at every position.

Case groups (names filterable with --filter): f32/ bf16/ (tiny presets), v5config/ (config.json
re-saved by transformers 5), variant/ (config-only edits: RoPE scalings, sliding window, routing
flags), fp8/, realcfg/ (real configs scaled down), long/ (300-token prompts), mxfp4/ (gpt-oss in
the MXFP4 release format). Results and the differences found: tests/reference/README.md.

Tolerances: f32 1e-4 (expected ~1e-6..1e-5; above 1e-3 is a semantic difference), bf16 1e-4
(HF computes in f32 from the bf16 file, Tessera widens bf16 weights to f32 too), fp8 2e-2 if HF
can dequantise the block-fp8 checkpoint on CPU, mxfp4 1e-4 (transformers dequantises the
MXFP4 experts to bf16, exact as e2m1 x 2^k fits bf16; Tessera keeps them MXFP4). Prints one table row per case; exit status 1 if
any case fails.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The prompt, families and scaling are the ones the ctest reference check uses.
from reference_match_test import (ARCHS, FP8_ARCHS, FROM_CONFIG_SCALE, PROMPT,  # noqa: E402
                                  rel_err)

MAX_TOKENS = 16
FROM_CONFIGS = ["moonshotai__Kimi-K2-Instruct", "zai-org__GLM-4.5", "zai-org__GLM-4.5-Air",
                "deepseek-ai__DeepSeek-V3", "deepseek-ai__DeepSeek-R1", "Qwen__Qwen3-30B-A3B",
                "Qwen__Qwen3-235B-A22B", "mistralai__Mixtral-8x7B-v0.1", "openai__gpt-oss-20b",
                "openai__gpt-oss-120b", "MiniMaxAI__MiniMax-M2.7"]
TOL = {"f32": 1e-4, "bf16": 1e-4, "fp8": 2e-2, "mxfp4": 1e-4}


def run(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{(p.stderr or p.stdout)[-800:]}")
    return p.stdout


def tessera_generate(tessera, ckpt, npy, prompt):
    out = run([tessera, "generate", "--model", ckpt, "--prompt-ids", ",".join(map(str, prompt)),
               "--max-tokens", str(MAX_TOKENS), "--temperature", "0", "--json",
               "--dump-logits", npy])
    j = json.loads(out.strip().splitlines()[-1])
    return j["output_ids"], np.load(npy)


def hf_logits(ckpt, ids, dtype_tag):
    import torch
    from transformers import AutoModelForCausalLM
    kwargs = dict(dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    if dtype_tag == "fp8":
        from transformers import FineGrainedFP8Config
        kwargs["quantization_config"] = FineGrainedFP8Config(dequantize=True)
    if dtype_tag == "mxfp4":
        # On a machine without a usable GPU + triton + `kernels`, transformers dequantises on its
        # own (with a warning); asking for it makes the check independent of the machine.
        from transformers import Mxfp4Config
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    with open(os.path.join(ckpt, "config.json")) as f:
        raw = json.load(f)
    if raw.get("model_type") == "kimi_k2":
        # Kimi K2 ships DeepSeek-V3's remote code (architectures: DeepseekV3ForCausalLM);
        # transformers has no kimi_k2 type, so its config is read by DeepseekV3Config.
        from transformers import DeepseekV3Config
        kwargs["config"] = DeepseekV3Config.from_dict(dict(raw, model_type="deepseek_v3"))
    model, info = AutoModelForCausalLM.from_pretrained(ckpt, **kwargs)
    if dtype_tag in ("fp8", "mxfp4"):
        # mxfp4: the dequantised experts are bf16 whatever dtype was asked (exact values).
        # Under FineGrainedFP8 (dequantize=True) transformers leaves the unquantised bf16 router
        # weight (`mlp.gate.weight`) in bf16 even with dtype=float32, and MiniMaxM2TopKRouter
        # then casts its input to bf16 (~3e-4 logits difference). That is a loading artefact, not
        # the model's semantics: compare with every parameter in float32, as for bf16 files.
        model = model.float()
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if info.get("error_msgs"):
        bad["error_msgs"] = info["error_msgs"]
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].double().numpy(), bad, type(model).__name__


def resave_with_transformers(ckpt):
    """Rewrites config.json as transformers' own config class saves it (transformers 5:
    `rope_parameters` instead of rope_theta / rope_scaling / partial_rotary_factor)."""
    from transformers import AutoConfig
    AutoConfig.from_pretrained(ckpt).save_pretrained(ckpt)


def rewrite_with_transformers(ckpt, **overrides):
    """Replaces the checkpoint by one transformers writes itself: the model built from the config
    by `from_config` (transformers' own random init, seed 0, weights scaled up so the logits are
    not near-uniform) and stored by `save_pretrained` (its config.json, tensor names, layout)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(ckpt, **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.mul_(5.0)  # initializer_range 0.02 -> 0.1
            elif "norm" not in name:
                p.add_(0.05 * torch.randn_like(p))  # biases, sinks, routing bias: not all zero
    for f in os.listdir(ckpt):
        if f.endswith(".safetensors") or f.endswith(".json"):
            os.remove(os.path.join(ckpt, f))
    model.save_pretrained(ckpt)


def patch_config(**fields):
    def apply(ckpt):
        path = os.path.join(ckpt, "config.json")
        with open(path) as f:
            c = json.load(f)
        c.update(fields)
        with open(path, "w") as f:
            json.dump(c, f, indent=2)
    return apply


# Config-only variants of the tiny checkpoints (same tensors): semantics the presets do not
# exercise but unseen checkpoints may use.
VARIANTS = [
    ("llama", "rope_llama3", patch_config(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}, max_position_embeddings=4096)),
    ("llama", "rope_linear", patch_config(rope_scaling={"rope_type": "linear", "factor": 4.0})),
    ("qwen3", "rope_yarn", patch_config(rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        max_position_embeddings=4096)),
    ("mixtral", "sliding_window8", patch_config(sliding_window=8)),
    ("qwen3_moe", "norm_topk_prob_false", patch_config(norm_topk_prob=False)),
    ("qwen2_moe", "norm_topk_prob_true", patch_config(norm_topk_prob=True)),
    ("glm4_moe", "partial_rotary_0.25", patch_config(partial_rotary_factor=0.25)),
    ("deepseek_v3", "no_group_limit", patch_config(n_group=1, topk_group=1)),
    ("deepseek_v3", "yarn_mscale", patch_config(rope_scaling={
        "rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 16,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        max_position_embeddings=4096)),
]


def check(tessera, name, make_args, dtype_tag, keep, edit=None, prompt=PROMPT):
    d = tempfile.mkdtemp(prefix="hfcheck_", dir=keep)
    ckpt = os.path.join(d, "ckpt")
    try:
        run([tessera, "make-model"] + make_args + ["--out", ckpt])
        if edit is not None:
            edit(ckpt)
        toks, L = tessera_generate(tessera, ckpt, os.path.join(d, "L.npy"), prompt)
        ids = prompt + toks
        hf, bad, cls = hf_logits(ckpt, ids, dtype_tag)
        n = len(toks)
        rows = [rel_err(L[i], hf[len(prompt) - 1 + i]) for i in range(min(n, L.shape[0]))]
        hf_arg = [int(np.argmax(hf[len(prompt) - 1 + i])) for i in range(n)]
        same = sum(int(a == b) for a, b in zip(toks, hf_arg))
        ok = (not bad and L.shape[0] == n and max(rows) < TOL[dtype_tag] and same == n)
        return dict(case=name, cls=cls, prefill=rows[0], decode=max(rows[1:] or [0.0]),
                    tokens=f"{same}/{n}", ok=ok, loading=bad, first_bad=next(
                        (i for i, (a, b) in enumerate(zip(toks, hf_arg)) if a != b), None))
    except Exception as e:  # report and go on with the other cases
        return dict(case=name, ok=False, error=f"{type(e).__name__}: {e}"[-1500:],
                    tb=traceback.format_exc()[-1500:])
    finally:
        if keep is None:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", default="build/cli/tessera")
    ap.add_argument("--testdata", default=os.environ.get(
        "TESSERA_TESTDATA", os.path.join(os.path.dirname(__file__), "../../../shared/testdata")))
    ap.add_argument("--filter", default="")
    ap.add_argument("--keep", default=None, help="keep checkpoints + logits under this folder")
    a = ap.parse_args()
    tessera = os.path.abspath(a.tessera)
    cases = []
    for arch in ARCHS:
        base = ["--arch", arch, "--preset", "tiny", "--seed", "1"]
        cases.append((f"f32/{arch}", base + ["--dtype", "f32"], "f32", None))
        cases.append((f"bf16/{arch}", base + ["--dtype", "bf16"], "bf16", None))
        cases.append((f"v5config/{arch}", base + ["--dtype", "f32"], "f32",
                      resave_with_transformers))
    for arch in ARCHS:
        cases.append((f"hfsaved/{arch}", ["--arch", arch, "--preset", "tiny", "--seed", "1",
                                          "--dtype", "f32"], "f32", rewrite_with_transformers))
    # Whole-checkpoint variants (the tensor set changes, so transformers writes the tensors).
    for arch, tag, overrides in [
            ("qwen3", "tied_embeddings", dict(tie_word_embeddings=True)),
            ("llama", "attention_bias", dict(attention_bias=True)),
            ("llama", "mlp_bias", dict(mlp_bias=True)),
            ("deepseek_v3", "no_q_lora", dict(q_lora_rank=None)),
            ("glm4_moe", "qk_norm", dict(use_qk_norm=True)),
            ("qwen3_moe", "dense_layers", dict(mlp_only_layers=[0], decoder_sparse_step=2)),
            ("qwen2_moe", "dense_layers", dict(mlp_only_layers=[3], decoder_sparse_step=2))]:
        cases.append((f"hfsaved/{arch}/{tag}", ["--arch", arch, "--preset", "tiny", "--seed", "1",
                                                "--dtype", "f32"], "f32",
                      lambda ckpt, o=overrides: rewrite_with_transformers(ckpt, **o)))
    for arch, tag, edit in VARIANTS:
        cases.append((f"variant/{arch}/{tag}", ["--arch", arch, "--preset", "tiny", "--seed",
                                                "1", "--dtype", "f32"], "f32", edit))
    for arch in FP8_ARCHS:
        cases.append((f"fp8/{arch}", ["--arch", arch, "--preset", "tiny", "--seed", "1",
                                      "--dtype", "fp8"], "fp8", None))
    for c in FROM_CONFIGS:
        path = os.path.join(a.testdata, "configs", c, "config.json")
        if os.path.exists(path):
            cases.append((f"realcfg/{c}", ["--from-config", path, "--seed", "1", "--dtype", "f32"]
                          + FROM_CONFIG_SCALE, "f32", None))
    # Long prompts (300 ids) cross the real 128-token sliding window of gpt-oss and reach YaRN's
    # longer wavelengths; Mixtral gets a 64-token window.
    long_prompt = [(7 * i * i + 3 * i + 1) % 61 + 2 for i in range(300)]
    for c in ["openai__gpt-oss-20b", "deepseek-ai__DeepSeek-V3", "MiniMaxAI__MiniMax-M2.7",
              "zai-org__GLM-4.5"]:
        path = os.path.join(a.testdata, "configs", c, "config.json")
        if os.path.exists(path):
            cases.append((f"long/{c}", ["--from-config", path, "--seed", "1", "--dtype", "f32"]
                          + FROM_CONFIG_SCALE, "f32", None, long_prompt))
    # gpt-oss as released: MXFP4 experts (make-model --dtype mxfp4), loaded by transformers'
    # Mxfp4 quantizer.
    cases.append(("mxfp4/gpt_oss", ["--arch", "gpt_oss", "--preset", "tiny", "--seed", "1",
                                    "--dtype", "mxfp4"], "mxfp4", None))
    for c in ["openai__gpt-oss-20b", "openai__gpt-oss-120b"]:
        path = os.path.join(a.testdata, "configs", c, "config.json")
        if os.path.exists(path):
            cases.append((f"mxfp4/realcfg/{c}", ["--from-config", path, "--seed", "1", "--dtype",
                                                 "mxfp4"] + FROM_CONFIG_SCALE, "mxfp4", None))
            cases.append((f"mxfp4/long/{c}", ["--from-config", path, "--seed", "1", "--dtype",
                                              "mxfp4"] + FROM_CONFIG_SCALE, "mxfp4", None,
                          long_prompt))
    cases.append(("long/mixtral/sliding_window64", ["--arch", "mixtral", "--preset", "tiny",
                  "--seed", "1", "--dtype", "f32"], "f32", patch_config(sliding_window=64),
                  long_prompt))
    cases = [c if len(c) == 5 else c + (PROMPT,) for c in cases]
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    failed = 0
    print(f"{'case':44s} {'HF class':28s} {'prefill':>9s} {'decode':>9s} tokens  ok", flush=True)
    for name, args, dt, edit, prompt in cases:
        if a.filter not in name:
            continue
        r = check(tessera, name, args, dt, a.keep, edit, prompt)
        failed += not r["ok"]
        if "error" in r:
            print(f"{name:44s} ERROR {r['error']}", flush=True)
            continue
        print(f"{name:44s} {r['cls'][:28]:28s} {r['prefill']:9.2e} {r['decode']:9.2e} "
              f"{r['tokens']:>6s}  {'ok' if r['ok'] else 'FAIL'}"
              + (f"  loading={r['loading']}" if r["loading"] else "")
              + (f"  first_mismatch={r['first_bad']}" if r["first_bad"] is not None else ""),
              flush=True)
    print(f"{failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
