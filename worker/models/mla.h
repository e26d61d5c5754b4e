// Multi-head Latent Attention (MLA), the attention of DeepSeek-V2/V3 and Kimi K2, on the CPU.
//
// Semantics follow Hugging Face's DeepseekV3Attention:
//   q      = q_b_proj(q_a_layernorm(q_a_proj(x)))   (or q_proj(x) when q_lora_rank is 0)
//            -> per head [q_nope (qk_nope_head_dim) | q_pe (qk_rope_head_dim)]
//   kv_a   = kv_a_proj_with_mqa(x) = [c_raw (kv_lora_rank) | k_pe (qk_rope_head_dim)]
//   c      = kv_a_layernorm(c_raw)                  (the compressed latent)
//   k_nope, v per head = kv_b_proj(c)               (rows of head h: [k_nope (nope) | v (v_dim)])
//   RoPE (YaRN for the released checkpoints) on q_pe and on k_pe (one k_pe shared by all heads);
//   softmax scale = (qk_nope_head_dim + qk_rope_head_dim)^-0.5 * mscale^2 where
//   mscale = 0.1 * mscale_all_dim * ln(factor) + 1 for YaRN with mscale_all_dim set (else 1).
//
// KV cache: only the latent [c (kv_lora_rank) | k_pe (qk_rope_head_dim)] of each token is stored,
// i.e. LayerKvSpec{num_kv_heads = 1, k_dim = kv_lora_rank + qk_rope_head_dim,
// v_dim = kv_lora_rank, v_aliases_k = true}: the "value" cache is a strided view of the first
// kv_lora_rank floats of each key row.
//
// Two compute paths read the same cache:
//  - kAbsorbed (default, used for prefill and decode): W_UK is folded into the query and W_UV
//    into the output, so attention runs as MQA with one 576-wide KV head directly over the latent
//    cache (PagedAttention with k = [c | k_pe], v = c, q = [q_nope·W_UK | q_pe]).
//  - kUnabsorbed: gathers each sequence's latent context, expands k_nope and v with kv_b_proj and
//    runs plain per-head causal attention. Slower; kept as the textbook formulation the absorbed
//    path is tested against, and selectable through MlaOptions.
//
// Thread safety: an MlaAttention is immutable after Create(); Forward() may be called
// concurrently on distinct caches and outputs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"
#include "worker/attention_batch.h"

namespace tessera {

struct MlaConfig {
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t q_lora_rank = 0;  // 0: no query compression (q_proj)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  float rms_norm_eps = 1e-6f;
  // RoPE over the qk_rope_head_dim part: the caller sets theta, max_position and YaRN scaling;
  // head_dim / rotary_dim / neox_style are filled in by MlaAttention::Create.
  RopeConfig rope;
  // HF's config.rope_interleave (true for DeepSeek-V3 / Kimi K2): the rope part of q and k is
  // stored with (even, odd) pairs that rotate together.
  bool rope_interleave = true;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Width of one latent cache row: kv_lora_rank + qk_rope_head_dim.
  int64_t latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }
};

// The softmax scale of MLA (see the header comment), from the YaRN fields of config.rope.
float MlaSoftmaxScale(const MlaConfig& config);

// Checkpoint tensors of one MLA layer (Hugging Face names in comments). Undefined tensors mean
// "absent"; biases are optional (attention_bias).
struct MlaWeights {
  LinearWeight q_proj;              // [num_heads * qk_head_dim, hidden]   (q_lora_rank == 0)
  LinearWeight q_a_proj;            // [q_lora_rank, hidden]                (q_lora_rank > 0)
  Tensor q_a_proj_bias;             // [q_lora_rank] f32 or undefined
  Tensor q_a_layernorm;             // [q_lora_rank] f32
  LinearWeight q_b_proj;            // [num_heads * qk_head_dim, q_lora_rank]
  LinearWeight kv_a_proj_with_mqa;  // [kv_lora_rank + qk_rope_head_dim, hidden]
  Tensor kv_a_proj_bias;            // [kv_lora_rank + qk_rope_head_dim] f32 or undefined
  Tensor kv_a_layernorm;            // [kv_lora_rank] f32
  LinearWeight kv_b_proj;           // [num_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  LinearWeight o_proj;              // [hidden, num_heads * v_head_dim]
  Tensor o_proj_bias;               // [hidden] f32 or undefined
};

struct MlaOptions {
  enum class Path { kAbsorbed, kUnabsorbed };
  Path path = Path::kAbsorbed;
};

class MlaAttention {
 public:
  // Validates every weight's shape and dtype (errors name `prefix` + the HF tensor name, e.g.
  // "model.layers.3.self_attn.kv_b_proj.weight"), builds the RoPE tables and precomputes the
  // absorbed matrices W_UK and W_UV in f32 (fp8 weights are dequantised with their block scales).
  // `rope` may be shared by all layers of a model (it must have been built from this config's
  // rope settings, see RopeConfigFor); null builds a private one.
  static absl::StatusOr<MlaAttention> Create(const MlaConfig& config, MlaWeights weights,
                                             const std::string& prefix, MlaOptions options = {},
                                             std::shared_ptr<const RopeCache> rope = nullptr);
  // config.rope completed for MLA: head_dim = rotary_dim = qk_rope_head_dim and GPT-J pairing
  // when rope_interleave (see the comment in mla.cc).
  static RopeConfig RopeConfigFor(const MlaConfig& config);

  const MlaConfig& config() const { return config_; }
  const MlaOptions& options() const { return options_; }
  float softmax_scale() const { return softmax_scale_; }

  // One attention layer for a mixed batch of prefill chunks and decode tokens.
  // hidden: [num_tokens, hidden_size] f32 (the normalised layer input);
  // latent_cache: [num_blocks, block_size, latent_dim] or [num_blocks, block_size, 1, latent_dim]
  //   f32 (rows may be strided views); this step's latents are written at batch.slot_mapping;
  // out: [num_tokens, hidden_size] f32 contiguous (the o_proj output).
  absl::Status Forward(const Tensor& hidden, const AttentionBatch& batch, Tensor& latent_cache,
                       Tensor& out) const;
  // Same with the path chosen per call (tests compare both on one cache).
  absl::Status Forward(const Tensor& hidden, const AttentionBatch& batch, Tensor& latent_cache,
                       Tensor& out, MlaOptions::Path path) const;

  // The absorbed matrices, laid out so that both products are row-streaming AXPYs:
  // W_UK: [num_heads, qk_nope_head_dim, kv_lora_rank] f32 (kv_b_proj's k_nope rows per head) and
  // W_UV transposed: [num_heads, kv_lora_rank, v_head_dim] f32 (exposed for tests).
  const Tensor& w_uk() const { return w_uk_; }
  const Tensor& w_uv_t() const { return w_uv_t_; }

 private:
  MlaAttention() = default;

  // Computes q: [num_tokens, num_heads, qk_head_dim] with RoPE applied to q_pe, and writes the
  // step's latents (normalised c, rotated k_pe) into the cache.
  absl::Status ProjectAndCache(const Tensor& hidden, const AttentionBatch& batch,
                               const Tensor& k_cache, const Tensor& v_cache, Tensor& q) const;
  absl::Status AttendAbsorbed(const Tensor& q, const AttentionBatch& batch, const Tensor& k_cache,
                              const Tensor& v_cache, Tensor& attn) const;
  absl::Status AttendUnabsorbed(const Tensor& q, const AttentionBatch& batch, const Tensor& k_cache,
                                Tensor& attn) const;

  MlaConfig config_;
  MlaOptions options_;
  MlaWeights w_;
  std::shared_ptr<const RopeCache> rope_;
  float softmax_scale_ = 1.0f;
  Tensor w_uk_;    // [num_heads, qk_nope_head_dim, kv_lora_rank] f32
  Tensor w_uv_t_;  // [num_heads, kv_lora_rank, v_head_dim] f32
};

// Dequantises a linear weight to f32 [n, k] (f32/bf16/f16 converted; fp8 multiplied by its
// scale_inv blocks). `name` is used in error messages.
absl::StatusOr<Tensor> DequantizeLinearWeight(const LinearWeight& w, const std::string& name);

}  // namespace tessera
