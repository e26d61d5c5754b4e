// The standard pre-norm decoder shared by every non-MLA family, and the family loaders.
//
// DecoderModel runs: embed_tokens -> per layer [input_layernorm -> GQA self-attention -> residual
// -> post_attention_layernorm -> dense MLP or MoE -> residual] -> norm -> lm_head, with the
// Hugging Face tensor names "model.embed_tokens", "model.layers.{i}.{input_layernorm,
// post_attention_layernorm,self_attn,<mlp_prefix>}", "model.norm", "lm_head" (tied to the
// embedding when tie_word_embeddings and lm_head.weight is absent).
//
// Each family file (llama.cc, qwen_moe.cc, mixtral.cc, glm4_moe.cc, minimax_m2.cc, gpt_oss.cc)
// only translates its ModelConfig into a DecoderSpec (attention flavour per layer, dense or MoE
// per layer, router semantics, tensor naming) and calls LoadDecoderModel.
//
// Lifetime: weights are zero-copy views into the Checkpoint's mappings where the layout allows,
// so the Checkpoint must outlive the model. Thread safety: as Model (one Forward at a time).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/models/layers.h"
#include "worker/models/model.h"

namespace tessera {

struct DecoderLayerSpec {
  AttentionSpec attention;
  bool moe = false;                  // MoE block instead of the dense MLP
  int64_t dense_intermediate_size = 0;
  bool dense_mlp_bias = false;       // gate/up/down_proj biases (Llama mlp_bias)
  MoeSpec moe_spec;
  std::string mlp_prefix = "mlp";    // "block_sparse_moe" for Mixtral / MiniMax-M2 MoE layers
};

struct DecoderSpec {
  std::vector<DecoderLayerSpec> layers;
  RopeConfig rope;
};

// Loads embeddings, layers, final norm and lm_head as `spec` describes.
absl::StatusOr<std::unique_ptr<Model>> LoadDecoderModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const DecoderSpec& spec,
                                                        const ModelLoadOptions& options);

// The AttentionSpec fields every family shares (sizes, eps, sliding window of `layer`).
AttentionSpec BaseAttentionSpec(const ModelConfig& config, int layer);
// Expert FFN width: moe_intermediate_size, or intermediate_size when the family has no separate
// field (Mixtral, MiniMax-M2, gpt-oss).
int64_t ExpertIntermediateSize(const ModelConfig& config);

// ---- Family loaders (one per file), dispatched from registry.cc --------------------------------

// Llama / Mistral / Qwen3 dense (llama.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadLlamaModel(const Checkpoint& ckpt,
                                                      const ModelConfig& config,
                                                      const ModelLoadOptions& options);
// Qwen2-MoE and Qwen3-MoE (qwen_moe.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadQwenMoeModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const ModelLoadOptions& options);
// Mixtral (mixtral.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadMixtralModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const ModelLoadOptions& options);
// GLM-4.5 / Glm4Moe (glm4_moe.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadGlm4MoeModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const ModelLoadOptions& options);
// MiniMax-M2 (minimax_m2.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadMiniMaxM2Model(const Checkpoint& ckpt,
                                                          const ModelConfig& config,
                                                          const ModelLoadOptions& options);
// gpt-oss (gpt_oss.cc).
absl::StatusOr<std::unique_ptr<Model>> LoadGptOssModel(const Checkpoint& ckpt,
                                                       const ModelConfig& config,
                                                       const ModelLoadOptions& options);

}  // namespace tessera
