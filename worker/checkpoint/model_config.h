// ModelConfig: a Hugging Face config.json parsed into one struct for every supported family.
//
// Supported architectures (config "architectures"[0]): LlamaForCausalLM, Qwen3ForCausalLM,
// Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM, DeepseekV3ForCausalLM (also Kimi
// K2, which ships the same architecture), Glm4MoeForCausalLM, MiniMaxM2ForCausalLM,
// GptOssForCausalLM. Absent fields take the defaults of the matching transformers configuration
// class; missing required fields and unknown architectures are errors naming the field / listing
// the supported architectures, and always naming the source file.
//
// Derived fields are resolved at parse time so that model code never re-derives them: head_dim
// (explicit or hidden_size / num_attention_heads), rotary_dim, num_experts under its family
// spelling, qk_norm flags, layer_types, eos_token_ids.
//
// Thread safety: plain values; the functions are pure apart from reading files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/base/dtype.h"
#include "nlohmann/json_fwd.hpp"

namespace tessera {

enum class ModelFamily {
  kLlama,
  kQwen3,
  kQwen2Moe,
  kQwen3Moe,
  kMixtral,
  kDeepseekV3,
  kGlm4Moe,
  kMiniMaxM2,
  kGptOss,
};

absl::string_view ModelFamilyName(ModelFamily family);

struct RopeScalingConfig {
  std::string type;  // "" none, "linear", "yarn", "llama3", "default"
  double factor = 1;
  int64_t original_max_position_embeddings = 0;
  // yarn
  double beta_fast = 32, beta_slow = 1, mscale = 1, mscale_all_dim = 0;
  bool truncate = true;
  // llama3
  double low_freq_factor = 1, high_freq_factor = 4;
};

struct QuantizationConfig {
  std::string method;  // quant_method as written ("fp8", "mxfp4", ...); "" = unquantised
  bool fp8 = false;    // quant_method "fp8" with block-wise e4m3 weights
  bool mxfp4 = false;  // quant_method "mxfp4" (gpt-oss experts: *_blocks / *_scales tensors)
  int block_n = 128, block_k = 128;  // weight_block_size [n, k]
  std::vector<std::string> modules_to_not_convert;
};

struct ModelConfig {
  std::string source;        // file the config came from (for error messages)
  std::string architecture;  // "Qwen3MoeForCausalLM"
  std::string model_type;    // "qwen3_moe"
  ModelFamily family = ModelFamily::kLlama;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  // Explicit, or hidden_size / num_attention_heads. DeepSeek-V3 follows its transformers config
  // class: head_dim = qk_rope_head_dim (the q/k head is qk_nope_head_dim + qk_rope_head_dim).
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;  // dense MLP size (gpt-oss / MiniMax: the expert size)
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;  // dense MLP gate/up/down_proj have biases (LlamaConfig.mlp_bias)
  bool qk_norm = false;            // RMSNorm of q and k (per head unless qk_norm_per_layer)
  bool qk_norm_per_layer = false;  // MiniMax-M2: norm over all heads' q (and k) at once

  // RoPE
  double rope_theta = 10000;
  int64_t rotary_dim = 0;         // dims rotated per head (DeepSeek: qk_rope_head_dim)
  bool rope_interleaved = false;  // GPT-J pair layout (DeepSeek-V3) instead of NeoX halves
  RopeScalingConfig rope_scaling;

  // MoE (num_experts == 0 for dense models)
  int num_experts = 0;
  int num_experts_per_tok = 0;
  // Routed expert MLP size for every MoE family (Mixtral, gpt-oss and MiniMax spell it
  // intermediate_size; it is copied here).
  int64_t moe_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;  // Qwen2-MoE (gated shared expert)
  int n_shared_experts = 0;                     // DeepSeek / GLM
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  int decoder_sparse_step = 1;
  std::vector<int> mlp_only_layers;
  bool norm_topk_prob = false;
  std::string scoring_func = "softmax";  // "softmax" or "sigmoid"
  int n_group = 1;
  int topk_group = 1;
  std::string topk_method;  // DeepSeek "noaux_tc" / "group_limited_greedy" / "greedy"
  double routed_scaling_factor = 1.0;
  bool use_routing_bias = false;  // e_score_correction_bias present

  // MLA (DeepSeek-V3 / Kimi K2)
  int64_t q_lora_rank = 0;  // 0 = no q compression
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int num_nextn_predict_layers = 0;  // MTP layers stored after the decoder layers (not run)

  // Attention variants
  int64_t sliding_window = 0;            // 0 = none
  std::vector<std::string> layer_types;  // per layer "full_attention" / "sliding_attention"
  double swiglu_limit = 0;               // gpt-oss clamp (0 = none)
  bool attention_sinks = false;          // gpt-oss learned sinks

  QuantizationConfig quantization;
  DType torch_dtype = DType::kBF16;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  bool is_moe() const { return num_experts > 0; }
  bool is_mla() const { return kv_lora_rank > 0; }
  // Whether layer `layer` has a routed-expert MLP (per family rules).
  bool IsMoeLayer(int layer) const;
  // Whether layer `layer` uses sliding-window attention.
  bool IsSlidingLayer(int layer) const;
  // Total parameter count (embeddings and lm_head included; fp8 scales excluded).
  int64_t NumParameters() const;
  // Parameters touched per token: dense parts, lm_head, the top-k routed and the shared experts;
  // the input embedding table is left out (a lookup), as the gpt-oss model card counts it.
  int64_t NumActiveParameters() const;
};

// Parses a config.json object. `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& json, absl::string_view source);
// Reads `path_or_dir` (a config.json or a directory holding one); also reads
// generation_config.json beside it for eos_token_id when present (it takes precedence).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path_or_dir);
// Consistency checks; errors name the field and the source file.
absl::Status ValidateModelConfig(const ModelConfig& config);

}  // namespace tessera
