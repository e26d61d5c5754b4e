"""Writes tiny random Hugging Face checkpoints (config.json + model.safetensors) for every family.

Used by the reference self-checks so that the numpy reference can be exercised before (and
independently of) `tessera make-model`. Tensor names and shapes follow the HF checkpoints:
  * llama/qwen3/qwen3_moe/qwen2_moe/glm4_moe/deepseek_v3: model.layers.N.mlp.{gate,up,down}_proj,
    MoE experts model.layers.N.mlp.experts.E.*, router model.layers.N.mlp.gate.weight;
  * mixtral/minimax_m2: model.layers.N.block_sparse_moe.{gate, experts.E.w1/w2/w3};
  * gpt_oss: model.layers.N.mlp.router.{weight,bias}, mlp.experts.gate_up_proj [E, H, 2I]
    (gate/up interleaved on the last axis), gate_up_proj_bias [E, 2I], down_proj [E, I, H],
    down_proj_bias [E, H], self_attn.sinks [num_heads].
dtype: "f32", "bf16", or "fp8" (e4m3fn block-quantised linear weights with weight_scale_inv,
everything else bf16, quantization_config written to config.json).

Contract: deterministic for a given (arch, seed, overrides). Thread safety: pure functions.
"""

import json
import os

import numpy as np

import st_io

ARCHS = ("llama", "qwen3", "qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "glm4_moe",
         "minimax_m2", "gpt_oss")

FP8_BLOCK = (16, 16)

_BASE = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 160, "intermediate_size": 96,
         "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "tie_word_embeddings": False}


_CLASSES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "qwen3_moe": "Qwen3MoeForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
            "mixtral": "MixtralForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
            "glm4_moe": "Glm4MoeForCausalLM", "minimax_m2": "MiniMaxM2ForCausalLM",
            "gpt_oss": "GptOssForCausalLM"}


def tiny_config(arch, **overrides):
    c = dict(_BASE)
    c["model_type"] = arch
    c["architectures"] = [_CLASSES[arch]]
    if arch == "llama":
        c.update(attention_bias=False, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
    elif arch == "qwen3":
        c.update(rope_theta=1e6)
    elif arch == "qwen3_moe":
        c.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                 norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1])
    elif arch == "qwen2_moe":
        c.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                 shared_expert_intermediate_size=48, norm_topk_prob=False)
    elif arch == "mixtral":
        c.update(num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=1e6)
    elif arch == "deepseek_v3":
        c.update(num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=24, qk_nope_head_dim=16,
                 qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8, num_experts_per_tok=3,
                 n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                 n_shared_experts=1, first_k_dense_replace=1, moe_intermediate_size=32,
                 scoring_func="sigmoid", topk_method="noaux_tc", max_position_embeddings=163840,
                 rope_scaling={"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1,
                               "mscale": 1.0, "mscale_all_dim": 1.0,
                               "original_max_position_embeddings": 4096})
        del c["head_dim"]
    elif arch == "glm4_moe":
        c.update(partial_rotary_factor=0.5, use_qk_norm=True, attention_bias=True,
                 n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                 norm_topk_prob=True, routed_scaling_factor=1.5, n_shared_experts=1,
                 first_k_dense_replace=1, moe_intermediate_size=32, rms_norm_eps=1e-5)
    elif arch == "minimax_m2":
        c.update(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32, rotary_dim=8,
                 use_qk_norm=True, qk_norm_type="per_layer", scoring_func="sigmoid",
                 use_routing_bias=True, rope_theta=5e6)
    elif arch == "gpt_oss":
        c.update(num_local_experts=8, num_experts_per_tok=2, experts_per_token=2,
                 intermediate_size=32, attention_bias=True, sliding_window=4, swiglu_limit=7.0,
                 rms_norm_eps=1e-5, rope_theta=150000.0, max_position_embeddings=131072,
                 layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                 rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                               "beta_slow": 1.0, "truncate": False,
                               "original_max_position_embeddings": 4096})
    else:
        raise ValueError(f"unknown arch {arch}")
    c.update(overrides)
    return c


def _tensors(c, rng):
    """Returns {name: float64 array} for config c."""
    t = {}
    h, v = c["hidden_size"], c["vocab_size"]
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = c.get("head_dim") or h // nh
    mt = c["model_type"]

    def lin(name, out_dim, in_dim, bias=False):
        t[name + ".weight"] = rng.standard_normal((out_dim, in_dim)) / np.sqrt(in_dim)
        if bias:
            t[name + ".bias"] = 0.1 * rng.standard_normal(out_dim)

    def norm(name, dim):
        t[name + ".weight"] = 1.0 + 0.1 * rng.standard_normal(dim)

    def mlp(prefix, inter, names=("gate_proj", "up_proj", "down_proj"), bias=False):
        lin(prefix + names[0], inter, h, bias)
        lin(prefix + names[1], inter, h, bias)
        lin(prefix + names[2], h, inter, bias)

    t["model.embed_tokens.weight"] = rng.standard_normal((v, h))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm", h)
        norm(p + "post_attention_layernorm", h)
        a = p + "self_attn."
        if mt == "deepseek_v3":
            dn, dr, dv, r = (c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                             c["kv_lora_rank"])
            if c.get("q_lora_rank"):
                lin(a + "q_a_proj", c["q_lora_rank"], h)
                norm(a + "q_a_layernorm", c["q_lora_rank"])
                lin(a + "q_b_proj", nh * (dn + dr), c["q_lora_rank"])
            else:
                lin(a + "q_proj", nh * (dn + dr), h)
            lin(a + "kv_a_proj_with_mqa", r + dr, h)
            norm(a + "kv_a_layernorm", r)
            lin(a + "kv_b_proj", nh * (dn + dv), r)
            lin(a + "o_proj", h, nh * dv)
        else:
            qkv_bias = bool(c.get("attention_bias")) or mt == "qwen2_moe"
            o_bias = bool(c.get("attention_bias")) and mt != "glm4_moe"
            lin(a + "q_proj", nh * hd, h, qkv_bias)
            lin(a + "k_proj", nkv * hd, h, qkv_bias)
            lin(a + "v_proj", nkv * hd, h, qkv_bias)
            lin(a + "o_proj", h, nh * hd, o_bias)
            if mt in ("qwen3", "qwen3_moe") or (mt == "glm4_moe" and c.get("use_qk_norm")):
                norm(a + "q_norm", hd)
                norm(a + "k_norm", hd)
            if mt == "minimax_m2":
                norm(a + "q_norm", nh * hd)
                norm(a + "k_norm", nkv * hd)
            if mt == "gpt_oss":
                t[a + "sinks"] = rng.standard_normal(nh)
        m = p + "mlp."
        if mt in ("llama", "qwen3"):
            mlp(m, c["intermediate_size"], bias=mt == "llama" and bool(c.get("mlp_bias")))
        elif mt in ("qwen3_moe", "qwen2_moe"):
            if i in c.get("mlp_only_layers", []):
                mlp(m, c["intermediate_size"])
                continue
            ne = c["num_experts"]
            lin(m + "gate", ne, h)
            for e in range(ne):
                mlp(f"{m}experts.{e}.", c["moe_intermediate_size"])
            if mt == "qwen2_moe":
                mlp(m + "shared_expert.", c["shared_expert_intermediate_size"])
                lin(m + "shared_expert_gate", 1, h)
        elif mt in ("deepseek_v3", "glm4_moe"):
            if i < c["first_k_dense_replace"]:
                mlp(m, c["intermediate_size"])
                continue
            ne = c["n_routed_experts"]
            lin(m + "gate", ne, h)
            t[m + "gate.e_score_correction_bias"] = 0.1 * rng.standard_normal(ne)
            for e in range(ne):
                mlp(f"{m}experts.{e}.", c["moe_intermediate_size"])
            mlp(m + "shared_experts.", c["moe_intermediate_size"] * c["n_shared_experts"])
        elif mt in ("mixtral", "minimax_m2"):
            b = p + "block_sparse_moe."
            ne = c["num_local_experts"]
            lin(b + "gate", ne, h)
            if mt == "minimax_m2":
                t[b + "e_score_correction_bias"] = 0.1 * rng.standard_normal(ne)
            for e in range(ne):
                mlp(f"{b}experts.{e}.", c["intermediate_size"], ("w1", "w3", "w2"))
        elif mt == "gpt_oss":
            ne, inter = c["num_local_experts"], c["intermediate_size"]
            lin(m + "router", ne, h, bias=True)
            t[m + "experts.gate_up_proj"] = rng.standard_normal((ne, h, 2 * inter)) / np.sqrt(h)
            t[m + "experts.gate_up_proj_bias"] = 0.1 * rng.standard_normal((ne, 2 * inter))
            t[m + "experts.down_proj"] = rng.standard_normal((ne, inter, h)) / np.sqrt(inter)
            t[m + "experts.down_proj_bias"] = 0.1 * rng.standard_normal((ne, h))
    norm("model.norm", h)
    if not c.get("tie_word_embeddings"):
        t["lm_head.weight"] = rng.standard_normal((v, h)) / np.sqrt(h)
    return t


def _fp8_eligible(name, arr):
    if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
        return True  # gpt-oss stacked experts [E, in, out]
    if arr.ndim != 2 or not name.endswith(".weight"):
        return False
    if name.startswith("lm_head") or "embed_tokens" in name or "norm" in name:
        return False
    if name.endswith("mlp.gate.weight") or name.endswith("block_sparse_moe.gate.weight"):
        return False
    return "router" not in name and "shared_expert_gate" not in name


def write_tiny(arch, out_dir, dtype="f32", seed=1, **overrides):
    """Writes config.json + model.safetensors; returns the config dict."""
    c = tiny_config(arch, **overrides)
    rng = np.random.default_rng(seed)
    tensors = _tensors(c, rng)
    out = {}
    for name, arr in tensors.items():
        if dtype == "f32":
            out[name] = ("F32", arr.astype(np.float32))
        elif dtype == "bf16":
            out[name] = ("BF16", arr)
        elif dtype == "fp8":
            if _fp8_eligible(name, arr):
                codes, scale_inv = st_io.quantize_fp8_blockwise(arr, FP8_BLOCK)
                out[name] = ("F8_E4M3", codes)
                out[name + "_scale_inv"] = ("F32", scale_inv)
            else:
                out[name] = ("BF16", arr)
        else:
            raise ValueError(f"unknown dtype {dtype}")
    if dtype == "fp8":
        c["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                    "activation_scheme": "dynamic",
                                    "weight_block_size": list(FP8_BLOCK)}
    c["torch_dtype"] = {"f32": "float32", "bf16": "bfloat16", "fp8": "bfloat16"}[dtype]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    st_io.write_safetensors(os.path.join(out_dir, "model.safetensors"), out,
                            metadata={"format": "pt"})
    return c
