// Llama / Mistral / Qwen3 dense decoders (HF modeling_llama, modeling_mistral, modeling_qwen3):
// q/k/v/o projections with attention_bias, per-head q/k RMSNorm for Qwen3, optional sliding
// window (Mistral), SiLU gated MLP.
#include "kernels/base/status.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/llama_decoder.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Model>> LoadLlamaModel(const Checkpoint& ckpt,
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
    if (config.qk_norm) l.attention.qk_norm = AttentionSpec::QkNorm::kPerHead;
    l.dense_intermediate_size = config.intermediate_size;
    l.dense_mlp_bias = config.mlp_bias;
    spec.layers.push_back(l);
  }
  return LoadDecoderModel(ckpt, config, spec, options);
}

}  // namespace tessera
