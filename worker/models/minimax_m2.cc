// MiniMax-M2 (HF modeling_minimax_m2): q/k RMSNorm over all heads at once (q_norm
// [num_heads * head_dim], k_norm [num_kv_heads * head_dim]) before RoPE on the first rotary_dim
// dims of each head; every layer a "block_sparse_moe" with experts {w1, w3, w2}, sigmoid scores,
// selection by score + e_score_correction_bias (use_routing_bias), weights renormalised and
// multiplied by routed_scaling_factor.
#include "kernels/base/status.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/llama_decoder.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Model>> LoadMiniMaxM2Model(const Checkpoint& ckpt,
                                                          const ModelConfig& config,
                                                          const ModelLoadOptions& options) {
  DecoderSpec spec;
  ASSIGN_OR_RETURN(spec.rope, MakeRopeConfig(config, static_cast<int>(config.head_dim),
                                             static_cast<int>(config.rotary_dim)));
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    DecoderLayerSpec l;
    l.attention = BaseAttentionSpec(config, i);
    l.attention.qkv_bias = config.attention_bias;
    l.attention.o_bias = config.attention_bias;
    if (config.qk_norm) l.attention.qk_norm = AttentionSpec::QkNorm::kFullWidth;
    l.moe = true;
    l.mlp_prefix = "block_sparse_moe";
    MoeSpec& m = l.moe_spec;
    m.experts = MoeSpec::Experts::kMixtral;
    m.num_experts = config.num_experts;
    m.hidden_size = config.hidden_size;
    m.moe_intermediate_size = ExpertIntermediateSize(config);
    m.router.scoring = RouterConfig::Scoring::kSigmoid;
    m.router.top_k = config.num_experts_per_tok;
    m.router.renormalize = true;
    m.router.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
    m.correction_bias = config.use_routing_bias;
    m.correction_bias_name = "e_score_correction_bias";
    spec.layers.push_back(l);
  }
  return LoadDecoderModel(ckpt, config, spec, options);
}

}  // namespace tessera
