// DeepSeek-V3 / DeepSeek-R1 / Kimi K2 (DeepseekV3ForCausalLM) on one CPU worker.
//
// Structure (Hugging Face modeling_deepseek_v3): embed_tokens -> per layer [input_layernorm ->
// MLA self-attention (worker/models/mla.h) -> residual -> post_attention_layernorm -> dense
// gated MLP (layers < first_k_dense_replace) or MoE -> residual] -> norm -> lm_head.
// MoE: sigmoid router scores, selection by score + e_score_correction_bias with group-limited
// routing (n_group groups ranked by the sum of their top-2 biased scores, topk_group kept),
// weights = unbiased scores of the selected experts, renormalised when norm_topk_prob, times
// routed_scaling_factor; plus one shared MLP of n_shared_experts * moe_intermediate_size.
// Linear weights may be fp8 e4m3 with "<name>.weight_scale_inv" block scales, as in the released
// checkpoints. Kimi K2 uses this same class (other sizes, n_group 1, 384 experts).
//
// KV cache: one latent "head" per token, LayerKvSpec{1, kv_lora_rank + qk_rope_head_dim,
// kv_lora_rank, v_aliases_k = true} for every layer.
//
// Lifetime: weights are views into the Checkpoint's mappings where possible, so the Checkpoint
// must outlive the model. Thread safety: as Model (one Forward at a time per model).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "worker/models/mla.h"
#include "worker/models/model.h"

namespace tessera {

class Checkpoint;    // worker/checkpoint/checkpoint.h
struct ModelConfig;  // worker/checkpoint/model_config.h

// Options specific to this family (the registry uses the defaults).
struct DeepseekV3Options {
  MlaOptions mla;  // absorbed (default) or unabsorbed attention
};

// Loads every weight of a DeepseekV3ForCausalLM checkpoint; errors name the tensor or config
// field at fault.
absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3Model(const Checkpoint& ckpt,
                                                           const ModelConfig& config,
                                                           const ModelLoadOptions& options);
// As above with family options (tests select the unabsorbed MLA path).
absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3ModelWithOptions(
    const Checkpoint& ckpt, const ModelConfig& config, const ModelLoadOptions& options,
    const DeepseekV3Options& ds_options);

// The MlaConfig of `config` (sizes, eps, RoPE with YaRN, rope_interleave).
absl::StatusOr<MlaConfig> MlaConfigFromModelConfig(const ModelConfig& config);

}  // namespace tessera
