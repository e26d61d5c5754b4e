// gpt-oss (HF modeling_gpt_oss): biased q/k/v/o projections, learned attention sinks per head,
// sliding-window attention on the layers layer_types marks, YaRN RoPE (NeoX halves); every layer
// an MoE "mlp" with a biased "router" (top-k on logits, softmax over the selected), stacked experts
// gate_up_proj [E, hidden, 2*inter] (interleaved gate/up) and down_proj [E, inter, hidden] with
// biases, and the clamped SwiGLU (alpha 1.702, limit swiglu_limit).
#include "kernels/base/status.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/llama_decoder.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Model>> LoadGptOssModel(const Checkpoint& ckpt,
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
    l.attention.sinks = true;
    l.moe = true;
    MoeSpec& m = l.moe_spec;
    m.experts = MoeSpec::Experts::kGptOss;
    m.num_experts = config.num_experts;
    m.hidden_size = config.hidden_size;
    m.moe_intermediate_size = ExpertIntermediateSize(config);
    m.router.scoring = RouterConfig::Scoring::kSoftmaxTopK;
    m.router.top_k = config.num_experts_per_tok;
    m.gate_name = "router";
    m.router_bias = true;
    m.swiglu_alpha = 1.702f;
    m.swiglu_limit = config.swiglu_limit > 0 ? static_cast<float>(config.swiglu_limit) : 7.0f;
    spec.layers.push_back(l);
  }
  return LoadDecoderModel(ckpt, config, spec, options);
}

}  // namespace tessera
