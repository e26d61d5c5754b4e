"""Independent numpy forward pass of every Tessera model family (float64 accumulation).

Written from the semantics of the published Hugging Face modelling code (modeling_llama,
modeling_qwen3, modeling_qwen3_moe, modeling_qwen2_moe, modeling_mixtral, modeling_deepseek_v3,
modeling_glm4_moe, modeling_minimax_m2, modeling_gpt_oss, modeling_rope_utils), never from
Tessera's C++. Tensor names are exactly the Hugging Face checkpoint names.

Contract:
  * `ReferenceModel(model_dir)` reads config.json (with the defaults of the HF config classes,
    see `_DEFAULTS`) and the safetensors weights (st_io.Checkpoint; fp8 weights dequantised).
  * `forward(ids)` runs the whole sequence from scratch (no KV cache: an independent check of a
    paged cache) and returns logits [len(ids), vocab_size] float64.
  * `generate(prompt, n)` is greedy generation by full recomputation at each step; it returns
    (output_ids, logits [n, vocab_size]) where row 0 predicts the first new token.

Thread safety: none; a ReferenceModel caches weights.
"""

import json
import math
import os

import numpy as np

import st_io

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "mixtral",
             "deepseek_v3", "kimi_k2", "glm4_moe", "minimax_m2", "gpt_oss")

# Defaults of the Hugging Face configuration classes, used when config.json omits a field.
_COMMON = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "rope_scaling": None, "attention_bias": False, "hidden_act": "silu"}
_DEFAULTS = {
    "llama": {"mlp_bias": False},
    "mistral": {"rms_norm_eps": 1e-6, "sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 128},
    "qwen3_moe": {"norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": [],
                  "num_experts": 128, "num_experts_per_tok": 8},
    "qwen2_moe": {"norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": [],
                  "num_experts": 60, "num_experts_per_tok": 4, "qkv_bias": True},
    "mixtral": {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "sliding_window": None,
                "num_local_experts": 8, "num_experts_per_tok": 2},
    "deepseek_v3": {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                    "qk_nope_head_dim": 128, "v_head_dim": 128, "n_group": 8, "topk_group": 4,
                    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "n_shared_experts": 1,
                    "first_k_dense_replace": 3, "moe_layer_freq": 1, "n_routed_experts": 256,
                    "num_experts_per_tok": 8, "rope_interleave": True},
    "glm4_moe": {"rms_norm_eps": 1e-5, "partial_rotary_factor": 0.5, "use_qk_norm": False,
                 "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
                 "routed_scaling_factor": 1.0, "n_shared_experts": 1, "first_k_dense_replace": 1,
                 "n_routed_experts": 128, "num_experts_per_tok": 8},
    "minimax_m2": {"use_qk_norm": True, "scoring_func": "sigmoid", "use_routing_bias": True,
                   "routed_scaling_factor": 1.0, "num_local_experts": 256,
                   "num_experts_per_tok": 8},
    "gpt_oss": {"rms_norm_eps": 1e-5, "rope_theta": 150000.0, "attention_bias": True,
                "head_dim": 64, "sliding_window": 128, "swiglu_limit": 7.0,
                "num_local_experts": 128, "num_experts_per_tok": 4,
                "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                 "beta_slow": 1.0, "truncate": False,
                                 "original_max_position_embeddings": 4096}},
}
_DEFAULTS["kimi_k2"] = _DEFAULTS["deepseek_v3"]


def load_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        raw = json.load(f)
    mt = raw.get("model_type")
    if mt not in SUPPORTED:
        raise ValueError(f"{path}: model_type {mt!r} not supported by the reference")
    cfg = dict(_COMMON)
    cfg.update(_DEFAULTS[mt])
    cfg.update(raw)
    if mt in ("qwen3_moe", "qwen2_moe") and "num_experts" not in raw and "num_local_experts" in raw:
        cfg["num_experts"] = raw["num_local_experts"]  # transformers 5 spelling
    # transformers >= 5 saves RoPE as one `rope_parameters` object; a legacy `rope_scaling`
    # replaces it, and values inside it win over top-level ones (convert_rope_params_to_dict).
    rp = raw.get("rope_scaling") or raw.get("rope_parameters")
    if rp:
        cfg["rope_scaling"] = rp
        for key in ("rope_theta", "partial_rotary_factor"):
            if rp.get(key) is not None:
                cfg[key] = rp[key]
    cfg["num_key_value_heads"] = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    if cfg.get("head_dim") is None:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    cfg["_path"] = path
    return cfg


# ----------------------------------------------------------------------------------------------
# RoPE (modeling_rope_utils semantics)
# ----------------------------------------------------------------------------------------------

def _yarn_get_mscale(scale, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(cfg, dim):
    """Returns (inv_freq [dim/2], attention_scaling) for rotary dimension `dim`."""
    base = float(cfg["rope_theta"])
    inv = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv, 1.0
    rtype = rs.get("rope_type", rs.get("type", "default"))
    if rtype == "default":
        return inv, 1.0
    if rtype == "linear":
        return inv / rs["factor"], 1.0
    if rtype == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        return np.where(medium, smoothed, out), 1.0
    if rtype == "yarn":
        factor = float(rs["factor"])
        orig = rs.get("original_max_position_embeddings") or cfg.get("max_position_embeddings")
        att = rs.get("attention_factor")
        mscale, mscale_all = rs.get("mscale"), rs.get("mscale_all_dim")
        if att is None:
            if mscale and mscale_all:
                att = _yarn_get_mscale(factor, mscale) / _yarn_get_mscale(factor, mscale_all)
            else:
                att = _yarn_get_mscale(factor)
        beta_fast = rs.get("beta_fast") or 32
        beta_slow = rs.get("beta_slow") or 1

        def corr_dim(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        low, high = corr_dim(beta_fast), corr_dim(beta_slow)
        if rs.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrap = 1 - ramp
        inv = (inv / factor) * (1 - extrap) + inv * extrap
        return inv, float(att)
    raise ValueError(f"{cfg['_path']}: rope_scaling type {rtype!r} not supported")


def rope_cos_sin(cfg, dim, positions):
    inv, scale = rope_inv_freq(cfg, dim)
    freqs = np.asarray(positions, dtype=np.float64)[:, None] * inv[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb) * scale, np.sin(emb) * scale


def _rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, cos, sin, rotary_dim, interleaved=False):
    """x: [seq, heads, head_dim]; rotates the first rotary_dim dims (neox halves layout, or
    adjacent pairs when interleaved, as DeepSeek's checkpoints are laid out)."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:  # de-interleave pairs (x0,x1),(x2,x3).. into halves, like HF does
        s, h, d = rot.shape
        rot = rot.reshape(s, h, d // 2, 2).transpose(0, 1, 3, 2).reshape(s, h, d)
    c, s_ = cos[:, None, :], sin[:, None, :]
    rot = rot * c + _rotate_half(rot) * s_
    return np.concatenate([rot, rest], axis=-1)


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def attention_mask(seq, sliding_window=None):
    """[seq, seq] bool, True where query i may attend key j (causal, HF sliding window rule
    kv > q - window)."""
    q = np.arange(seq)[:, None]
    k = np.arange(seq)[None, :]
    allowed = k <= q
    if sliding_window:
        allowed &= k > q - sliding_window
    return allowed


def sdpa(q, k, v, scale, mask, sinks=None):
    """q: [seq, Hq, D], k: [seq, Hkv, D], v: [seq, Hkv, Dv] -> [seq, Hq, Dv].
    sinks: optional [Hq] logits that join each softmax and are then dropped (gpt-oss)."""
    hq, hkv = q.shape[1], k.shape[1]
    rep = hq // hkv
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) * scale
    scores = np.where(mask[None], scores, -np.inf)
    if sinks is not None:
        sink_col = np.broadcast_to(sinks[:, None, None], (hq, scores.shape[1], 1))
        full = np.concatenate([scores, sink_col], axis=-1)
        probs = softmax(full)[..., :-1]
    else:
        probs = softmax(scores)
    return np.einsum("hqk,khd->qhd", probs, v)


class ReferenceModel:
    def __init__(self, model_dir):
        self.dir = model_dir
        self.cfg = load_config(model_dir)
        self.ckpt = st_io.Checkpoint(model_dir)
        self.mt = self.cfg["model_type"]
        self.n_layers = self.cfg["num_hidden_layers"]

    # -- weights -------------------------------------------------------------------------------
    def w(self, name):
        return self.ckpt.get(name)

    def linear(self, x, prefix, bias=False):
        y = x @ self.w(prefix + ".weight").T
        if bias:
            y = y + self.w(prefix + ".bias")
        return y

    # -- attention ------------------------------------------------------------------------------
    def _layer_window(self, i):
        c = self.cfg
        if self.mt == "gpt_oss":
            types = c.get("layer_types") or [
                "sliding_attention" if (j + 1) % 2 else "full_attention"
                for j in range(self.n_layers)]
            return c["sliding_window"] if types[i] == "sliding_attention" else None
        if self.mt in ("mistral", "mixtral"):
            return c.get("sliding_window")
        return None

    def gqa_attention(self, x, i, positions):
        c, mt = self.cfg, self.mt
        p = f"model.layers.{i}.self_attn."
        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        if mt == "qwen2_moe" or mt == "qwen2":
            qkv_bias, o_bias = c.get("qkv_bias", True), False
        else:
            qkv_bias = o_bias = bool(c.get("attention_bias"))
            if mt == "glm4_moe":
                o_bias = False
        seq = x.shape[0]
        q = self.linear(x, p + "q_proj", qkv_bias)
        k = self.linear(x, p + "k_proj", qkv_bias)
        v = self.linear(x, p + "v_proj", qkv_bias)
        eps = c["rms_norm_eps"]
        if mt == "minimax_m2" and c.get("use_qk_norm"):
            q = rms_norm(q, self.w(p + "q_norm.weight"), eps)  # over all heads at once
            k = rms_norm(k, self.w(p + "k_norm.weight"), eps)
        q = q.reshape(seq, nh, hd)
        k = k.reshape(seq, nkv, hd)
        v = v.reshape(seq, nkv, hd)
        if mt in ("qwen3", "qwen3_moe") or (mt == "glm4_moe" and c.get("use_qk_norm")):
            q = rms_norm(q, self.w(p + "q_norm.weight"), eps)  # per head
            k = rms_norm(k, self.w(p + "k_norm.weight"), eps)
        if mt == "minimax_m2" and c.get("partial_rotary_factor") is None:
            rdim = c.get("rotary_dim") or hd  # legacy field of the releases
        else:
            rdim = int(hd * c.get("partial_rotary_factor", 1.0))
        cos, sin = rope_cos_sin(c, rdim, positions)
        q = apply_rope(q, cos, sin, rdim)
        k = apply_rope(k, cos, sin, rdim)
        sinks = self.w(p + "sinks") if mt == "gpt_oss" else None
        mask = attention_mask(seq, self._layer_window(i))
        o = sdpa(q, k, v, hd ** -0.5, mask, sinks).reshape(seq, nh * hd)
        return self.linear(o, p + "o_proj", o_bias)

    def mla_softmax_scale(self):
        c = self.cfg
        qk_head_dim = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
        scale = qk_head_dim ** -0.5
        rs = c.get("rope_scaling")
        if rs:
            mscale_all = rs.get("mscale_all_dim", 0)
            if mscale_all:
                m = _yarn_get_mscale(float(rs["factor"]), mscale_all)
                scale = scale * m * m
        return scale

    def mla_attention(self, x, i, positions, absorbed=False):
        """DeepSeek multi-head latent attention. absorbed=True computes the same thing in the
        latent space (W_UK folded into the query, W_UV applied after attention): used by the
        self-checks to show both forms agree."""
        c = self.cfg
        p = f"model.layers.{i}.self_attn."
        nh, eps = c["num_attention_heads"], c["rms_norm_eps"]
        dn, dr, dv, r = (c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                         c["kv_lora_rank"])
        seq = x.shape[0]
        if c.get("q_lora_rank"):
            q = self.linear(rms_norm(self.linear(x, p + "q_a_proj"),
                                     self.w(p + "q_a_layernorm.weight"), eps), p + "q_b_proj")
        else:
            q = self.linear(x, p + "q_proj")
        q = q.reshape(seq, nh, dn + dr)
        q_nope, q_pe = q[..., :dn], q[..., dn:]
        kv_a = self.linear(x, p + "kv_a_proj_with_mqa")
        c_kv = rms_norm(kv_a[:, :r], self.w(p + "kv_a_layernorm.weight"), eps)
        k_pe = kv_a[:, r:].reshape(seq, 1, dr)
        cos, sin = rope_cos_sin(c, dr, positions)
        interleave = c.get("rope_interleave", True)
        q_pe = apply_rope(q_pe, cos, sin, dr, interleave)
        k_pe = apply_rope(k_pe, cos, sin, dr, interleave)
        scale = self.mla_softmax_scale()
        mask = attention_mask(seq)
        w_kv_b = self.w(p + "kv_b_proj.weight").reshape(nh, dn + dv, r)
        w_uk, w_uv = w_kv_b[:, :dn, :], w_kv_b[:, dn:, :]
        if not absorbed:
            kv = np.einsum("sr,hdr->shd", c_kv, w_kv_b)
            k_nope, v = kv[..., :dn], kv[..., dn:]
            k = np.concatenate([k_nope, np.broadcast_to(k_pe, (seq, nh, dr))], axis=-1)
            qf = np.concatenate([q_nope, q_pe], axis=-1)
            o = sdpa(qf, k, v, scale, mask)
        else:
            q_lat = np.einsum("shd,hdr->shr", q_nope, w_uk)
            scores = (np.einsum("qhr,kr->hqk", q_lat, c_kv) +
                      np.einsum("qhd,kd->hqk", q_pe, k_pe[:, 0, :])) * scale
            scores = np.where(mask[None], scores, -np.inf)
            o_lat = np.einsum("hqk,kr->qhr", softmax(scores), c_kv)
            o = np.einsum("qhr,hdr->qhd", o_lat, w_uv)
        return self.linear(o.reshape(seq, nh * dv), p + "o_proj")

    # -- feed-forward ---------------------------------------------------------------------------
    def swiglu_mlp(self, x, prefix, names=("gate_proj", "up_proj", "down_proj"), bias=False):
        g = self.linear(x, prefix + names[0], bias)
        u = self.linear(x, prefix + names[1], bias)
        return self.linear(silu(g) * u, prefix + names[2], bias)

    def _is_moe_layer(self, i):
        c, mt = self.cfg, self.mt
        if mt in ("llama", "mistral", "qwen2", "qwen3"):
            return False
        if mt in ("qwen3_moe", "qwen2_moe"):
            return (i not in (c.get("mlp_only_layers") or []) and c["num_experts"] > 0 and
                    (i + 1) % c["decoder_sparse_step"] == 0)
        if mt in ("deepseek_v3", "kimi_k2"):
            return (c.get("n_routed_experts") is not None and i >= c["first_k_dense_replace"] and
                    i % c.get("moe_layer_freq", 1) == 0)
        if mt == "glm4_moe":
            return i >= c["first_k_dense_replace"]
        return True  # mixtral, minimax_m2, gpt_oss: every layer

    def route(self, logits, i):
        """logits: [seq, E] -> (topk_idx [seq, k], topk_weight [seq, k])."""
        c, mt = self.cfg, self.mt
        k = c["num_experts_per_tok"]
        if mt == "gpt_oss":
            k = c.get("num_experts_per_tok") or c.get("experts_per_token")
        if mt in ("mixtral", "qwen3_moe", "qwen2_moe"):
            probs = softmax(logits)
            idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
            wts = np.take_along_axis(probs, idx, axis=-1)
            if mt == "mixtral" or c.get("norm_topk_prob"):
                wts = wts / np.sum(wts, axis=-1, keepdims=True)
            return idx, wts
        if mt == "gpt_oss":
            idx = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
            return idx, softmax(np.take_along_axis(logits, idx, axis=-1))
        # sigmoid routing with score correction bias: deepseek_v3, glm4_moe, minimax_m2
        p = self._moe_prefix(i)
        scores = sigmoid(logits)
        if mt == "minimax_m2":
            bias_name = p + "e_score_correction_bias"
            if not c.get("use_routing_bias", True):
                bias_name = None
        else:
            bias_name = p + "gate.e_score_correction_bias"
            if (mt != "glm4_moe" and c.get("topk_method", "noaux_tc") != "noaux_tc" and
                    not self.ckpt.has(bias_name)):
                bias_name = None
        bias = self.w(bias_name) if bias_name else np.zeros(scores.shape[-1])
        choice = scores + bias
        n_group = c.get("n_group") or 1
        topk_group = c.get("topk_group") or 1
        if mt == "minimax_m2":
            n_group = topk_group = 1
        seq, ne = choice.shape
        if n_group > 1:
            grouped = choice.reshape(seq, n_group, ne // n_group)
            group_scores = np.sort(grouped, axis=-1)[..., ::-1][..., :2].sum(-1)
            gidx = np.argsort(-group_scores, axis=-1, kind="stable")[:, :topk_group]
            gmask = np.zeros((seq, n_group), dtype=bool)
            np.put_along_axis(gmask, gidx, True, axis=-1)
            emask = np.repeat(gmask, ne // n_group, axis=-1)
            choice = np.where(emask, choice, 0.0 if mt != "minimax_m2" else -np.inf)
            # HF deepseek_v3 / glm4_moe masked_fill the dropped groups with 0.0
        idx = np.argsort(-choice, axis=-1, kind="stable")[:, :k]
        wts = np.take_along_axis(scores, idx, axis=-1)
        if mt == "minimax_m2" or c.get("norm_topk_prob"):
            wts = wts / (np.sum(wts, axis=-1, keepdims=True) + 1e-20)
        wts = wts * c.get("routed_scaling_factor", 1.0)
        return idx, wts

    def _moe_prefix(self, i):
        if self.mt in ("mixtral", "minimax_m2"):
            return f"model.layers.{i}.block_sparse_moe."
        return f"model.layers.{i}.mlp."

    def moe(self, x, i):
        c, mt = self.cfg, self.mt
        p = self._moe_prefix(i)
        if mt == "gpt_oss":
            logits = self.linear(x, p + "router", bias=True)
        else:
            logits = self.linear(x, p + "gate")
        idx, wts = self.route(logits, i)
        out = np.zeros_like(x)
        for e in np.unique(idx):
            rows, slot = np.nonzero(idx == e)
            xe = x[rows]
            if mt == "gpt_oss":
                ye = self.gpt_oss_expert(xe, p, int(e))
            elif mt in ("mixtral", "minimax_m2"):
                ye = self.swiglu_mlp(xe, f"{p}experts.{e}.", ("w1", "w3", "w2"))
            else:
                ye = self.swiglu_mlp(xe, f"{p}experts.{e}.")
            np.add.at(out, rows, ye * wts[rows, slot][:, None])
        if mt == "qwen2_moe" and c.get("shared_expert_intermediate_size"):
            shared = self.swiglu_mlp(x, p + "shared_expert.")
            out = out + sigmoid(self.linear(x, p + "shared_expert_gate")) * shared
        elif mt in ("deepseek_v3", "kimi_k2", "glm4_moe") and c.get("n_shared_experts"):
            out = out + self.swiglu_mlp(x, p + "shared_experts.")
        return out

    def gpt_oss_expert(self, x, p, e):
        limit, alpha = self.cfg.get("swiglu_limit", 7.0), 1.702
        gate_up = (x @ self.w(p + "experts.gate_up_proj")[e] +
                   self.w(p + "experts.gate_up_proj_bias")[e])
        gate, up = gate_up[:, 0::2], gate_up[:, 1::2]
        gate = np.minimum(gate, limit)
        up = np.clip(up, -limit, limit)
        glu = gate * sigmoid(gate * alpha)
        return ((up + 1) * glu @ self.w(p + "experts.down_proj")[e] +
                self.w(p + "experts.down_proj_bias")[e])

    def mlp(self, x, i):
        if self._is_moe_layer(i):
            return self.moe(x, i)
        bias = bool(self.cfg.get("mlp_bias")) if self.mt == "llama" else False
        return self.swiglu_mlp(x, f"model.layers.{i}.mlp.", bias=bias)

    # -- model ----------------------------------------------------------------------------------
    def forward(self, ids, absorbed_mla=False, last_only=False):
        """ids: list of token ids -> logits [len(ids), vocab_size] float64 (or [1, vocab_size]
        for the last position only when last_only)."""
        c = self.cfg
        eps = c["rms_norm_eps"]
        ids = np.asarray(ids, dtype=np.int64)
        emb = self.w("model.embed_tokens.weight")
        if ids.min() < 0 or ids.max() >= emb.shape[0]:
            raise ValueError(f"{self.dir}: token id out of range [0, {emb.shape[0]})")
        h = emb[ids]
        positions = np.arange(len(ids))
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            a_in = rms_norm(h, self.w(p + "input_layernorm.weight"), eps)
            if self.mt in ("deepseek_v3", "kimi_k2"):
                h = h + self.mla_attention(a_in, i, positions, absorbed_mla)
            else:
                h = h + self.gqa_attention(a_in, i, positions)
            m_in = rms_norm(h, self.w(p + "post_attention_layernorm.weight"), eps)
            h = h + self.mlp(m_in, i)
        if last_only:
            h = h[-1:]
        h = rms_norm(h, self.w("model.norm.weight"), eps)
        if c.get("tie_word_embeddings"):
            head = emb  # HF ties lm_head to the embedding whatever the file holds
        else:
            head = self.w("lm_head.weight")
        return h @ head.T

    def generate(self, prompt, max_tokens):
        ids = list(prompt)
        out, rows = [], []
        for _ in range(max_tokens):
            logits = self.forward(ids, last_only=True)[-1]
            rows.append(logits)
            tok = int(np.argmax(logits))
            out.append(tok)
            ids.append(tok)
        return out, np.stack(rows) if rows else np.zeros((0, self.cfg["vocab_size"]))

    def teacher_forced_logits(self, prompt, output_ids):
        """Logits at every generated position given a fixed continuation (one causal pass):
        row i predicts output_ids[i] from prompt + output_ids[:i]."""
        ids = list(prompt) + list(output_ids[:-1])
        return self.forward(ids)[len(prompt) - 1:]
