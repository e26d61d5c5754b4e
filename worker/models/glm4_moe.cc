// GLM-4.5 (HF modeling_glm4_moe): q/k/v biases from attention_bias (o_proj unbiased), optional
// per-head q/k RMSNorm (use_qk_norm), partial rotary (partial_rotary_factor, NeoX halves);
// layers >= first_k_dense_replace use a sigmoid router with e_score_correction_bias, group-limited
// selection (n_group, topk_group), norm_topk_prob and routed_scaling_factor, plus
// n_shared_experts shared experts as one MLP of n_shared_experts * moe_intermediate_size.
#include "kernels/base/status.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/llama_decoder.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Model>> LoadGlm4MoeModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const ModelLoadOptions& options) {
  DecoderSpec spec;
  ASSIGN_OR_RETURN(spec.rope, MakeRopeConfig(config, static_cast<int>(config.head_dim),
                                             static_cast<int>(config.rotary_dim)));
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    DecoderLayerSpec l;
    l.attention = BaseAttentionSpec(config, i);
    l.attention.qkv_bias = config.attention_bias;
    l.attention.o_bias = false;
    if (config.qk_norm) l.attention.qk_norm = AttentionSpec::QkNorm::kPerHead;
    l.dense_intermediate_size = config.intermediate_size;
    if (config.IsMoeLayer(i)) {
      l.moe = true;
      MoeSpec& m = l.moe_spec;
      m.experts = MoeSpec::Experts::kSeparate;
      m.num_experts = config.num_experts;
      m.hidden_size = config.hidden_size;
      m.moe_intermediate_size = ExpertIntermediateSize(config);
      m.router.scoring = RouterConfig::Scoring::kSigmoid;
      m.router.top_k = config.num_experts_per_tok;
      m.router.renormalize = config.norm_topk_prob;
      m.router.n_group = config.n_group > 0 ? config.n_group : 1;
      m.router.topk_group = config.topk_group > 0 ? config.topk_group : 1;
      m.router.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
      m.correction_bias = true;
      m.correction_bias_name = "gate.e_score_correction_bias";
      if (config.n_shared_experts > 0) {
        m.shared_intermediate_size = config.n_shared_experts * m.moe_intermediate_size;
        m.shared_name = "shared_experts";
      }
    }
    spec.layers.push_back(l);
  }
  return LoadDecoderModel(ckpt, config, spec, options);
}

}  // namespace tessera
