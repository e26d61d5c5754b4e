// config.json -> ModelConfig (see model_config.h).
#include "worker/checkpoint/model_config.h"

#include "nlohmann/json.hpp"

namespace tessera {

absl::string_view ModelFamilyName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama: return "llama";
    case ModelFamily::kQwen3: return "qwen3";
    case ModelFamily::kQwen2Moe: return "qwen2_moe";
    case ModelFamily::kQwen3Moe: return "qwen3_moe";
    case ModelFamily::kMixtral: return "mixtral";
    case ModelFamily::kDeepseekV3: return "deepseek_v3";
    case ModelFamily::kGlm4Moe: return "glm4_moe";
    case ModelFamily::kMiniMaxM2: return "minimax_m2";
    case ModelFamily::kGptOss: return "gpt_oss";
  }
  return "unknown";
}

bool ModelConfig::IsMoeLayer(int) const { return num_experts > 0; }
bool ModelConfig::IsSlidingLayer(int) const { return false; }
int64_t ModelConfig::NumParameters() const { return 0; }
int64_t ModelConfig::NumActiveParameters() const { return 0; }

absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json&, absl::string_view source) {
  return absl::UnimplementedError(std::string(source) + ": ParseModelConfig not implemented yet");
}
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  return absl::UnimplementedError(path + ": LoadModelConfig not implemented yet");
}
absl::Status ValidateModelConfig(const ModelConfig&) { return absl::OkStatus(); }

}  // namespace tessera
