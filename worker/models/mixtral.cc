// Mixtral (HF modeling_mixtral): no attention biases, optional sliding window, every layer a
// sparse MoE "block_sparse_moe" with experts {w1 (gate), w3 (up), w2 (down)}; softmax router,
// top-k, always renormalised.
#include "kernels/base/status.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/llama_decoder.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Model>> LoadMixtralModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const ModelLoadOptions& options) {
  DecoderSpec spec;
  ASSIGN_OR_RETURN(spec.rope, MakeRopeConfig(config, static_cast<int>(config.head_dim),
                                             static_cast<int>(config.rotary_dim)));
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    DecoderLayerSpec l;
    l.attention = BaseAttentionSpec(config, i);
    l.moe = true;
    l.mlp_prefix = "block_sparse_moe";
    MoeSpec& m = l.moe_spec;
    m.experts = MoeSpec::Experts::kMixtral;
    m.num_experts = config.num_experts;
    m.hidden_size = config.hidden_size;
    m.moe_intermediate_size = ExpertIntermediateSize(config);
    m.router.scoring = RouterConfig::Scoring::kSoftmax;
    m.router.top_k = config.num_experts_per_tok;
    m.router.renormalize = true;
    spec.layers.push_back(l);
  }
  return LoadDecoderModel(ckpt, config, spec, options);
}

}  // namespace tessera
