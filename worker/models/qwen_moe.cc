// Qwen2-MoE and Qwen3-MoE (HF modeling_qwen2_moe, modeling_qwen3_moe): softmax router over all
// experts, top-k, optional renormalisation (norm_topk_prob); experts named
// mlp.experts.{e}.{gate,up,down}_proj; layers in mlp_only_layers or off decoder_sparse_step use
// the dense MLP. Qwen2-MoE: q/k/v biases, a shared expert gated by sigmoid(shared_expert_gate).
// Qwen3-MoE: per-head q/k RMSNorm.
#include "kernels/base/status.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/llama_decoder.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Model>> LoadQwenMoeModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const ModelLoadOptions& options) {
  const bool qwen2 = config.family == ModelFamily::kQwen2Moe;
  DecoderSpec spec;
  ASSIGN_OR_RETURN(spec.rope, MakeRopeConfig(config, static_cast<int>(config.head_dim),
                                             static_cast<int>(config.rotary_dim)));
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    DecoderLayerSpec l;
    l.attention = BaseAttentionSpec(config, i);
    if (qwen2) {
      l.attention.qkv_bias = true;  // Qwen2MoeAttention: q/k/v always biased, o_proj not
    } else {
      l.attention.qkv_bias = config.attention_bias;
      l.attention.o_bias = config.attention_bias;
      l.attention.qk_norm = AttentionSpec::QkNorm::kPerHead;
    }
    l.dense_intermediate_size = config.intermediate_size;
    if (config.IsMoeLayer(i)) {
      l.moe = true;
      MoeSpec& m = l.moe_spec;
      m.experts = MoeSpec::Experts::kSeparate;
      m.num_experts = config.num_experts;
      m.hidden_size = config.hidden_size;
      m.moe_intermediate_size = ExpertIntermediateSize(config);
      m.router.scoring = RouterConfig::Scoring::kSoftmax;
      m.router.top_k = config.num_experts_per_tok;
      m.router.renormalize = config.norm_topk_prob;
      if (qwen2 && config.shared_expert_intermediate_size > 0) {
        m.shared_intermediate_size = config.shared_expert_intermediate_size;
        m.shared_name = "shared_expert";
        m.shared_gate = true;
      }
    }
    spec.layers.push_back(l);
  }
  return LoadDecoderModel(ckpt, config, spec, options);
}

}  // namespace tessera
