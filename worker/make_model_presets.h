// Configs for `tessera make-model`: built-in presets per architecture and the scaling of a real
// config.json down to a small model of the same structure.
//
// Every config returned carries the fields the Hugging Face config class of its family reads
// (architectures, model_type, torch_dtype, the family's structure-defining fields). Pure
// functions; thread safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace tessera::make_model {

// The --arch spellings.
const std::vector<std::string>& ArchList();

// The config of `arch` for `preset` ("tiny", "small", "bench"; bench exists for qwen3_moe only).
// torch_dtype is left "bfloat16"; the caller sets it.
absl::StatusOr<nlohmann::json> PresetConfig(absl::string_view arch, absl::string_view preset);

// The make-model architecture of a config ("deepseek_v3" for DeepseekV3ForCausalLM / kimi_k2).
absl::StatusOr<std::string> ArchOfConfig(const nlohmann::json& config);

// Scales `config` down: `layers`, `experts`, `hidden` (0 = keep). Intermediate sizes and LoRA
// ranks scale with hidden; head counts scale keeping the GQA ratio; head_dim is kept unless
// larger than hidden; expert groups keep dividing the expert count; first_k_dense_replace and
// per-layer lists follow the layer count. MTP layers are dropped (no weights are written).
absl::StatusOr<nlohmann::json> ScaleConfig(const nlohmann::json& config, int64_t layers,
                                           int64_t experts, int64_t hidden);

}  // namespace tessera::make_model
