// config.json -> ModelConfig (see model_config.h).
//
// Defaults for absent fields follow the transformers configuration classes of each family
// (LlamaConfig, Qwen3Config, Qwen2MoeConfig, Qwen3MoeConfig, MixtralConfig, DeepseekV3Config,
// Glm4MoeConfig, MiniMaxM2Config, GptOssConfig). A field written as JSON null counts as absent.
#include "worker/checkpoint/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {

namespace fs = std::filesystem;
using nlohmann::json;

absl::string_view ModelFamilyName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama:
      return "llama";
    case ModelFamily::kQwen3:
      return "qwen3";
    case ModelFamily::kQwen2Moe:
      return "qwen2_moe";
    case ModelFamily::kQwen3Moe:
      return "qwen3_moe";
    case ModelFamily::kMixtral:
      return "mixtral";
    case ModelFamily::kDeepseekV3:
      return "deepseek_v3";
    case ModelFamily::kGlm4Moe:
      return "glm4_moe";
    case ModelFamily::kMiniMaxM2:
      return "minimax_m2";
    case ModelFamily::kGptOss:
      return "gpt_oss";
  }
  return "unknown";
}

namespace {

struct ArchEntry {
  const char* architecture;
  ModelFamily family;
};
constexpr ArchEntry kArchitectures[] = {
    {"LlamaForCausalLM", ModelFamily::kLlama},
    {"Qwen3ForCausalLM", ModelFamily::kQwen3},
    {"Qwen2MoeForCausalLM", ModelFamily::kQwen2Moe},
    {"Qwen3MoeForCausalLM", ModelFamily::kQwen3Moe},
    {"MixtralForCausalLM", ModelFamily::kMixtral},
    {"DeepseekV3ForCausalLM", ModelFamily::kDeepseekV3},
    {"Glm4MoeForCausalLM", ModelFamily::kGlm4Moe},
    {"MiniMaxM2ForCausalLM", ModelFamily::kMiniMaxM2},
    {"GptOssForCausalLM", ModelFamily::kGptOss},
};

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (const ArchEntry& e : kArchitectures) names.push_back(e.architecture);
  return absl::StrJoin(names, ", ");
}

// Typed access to config.json fields with errors naming the field and the file.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool Has(const char* key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  const json* Find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::Status Missing(const char* key) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": required field '", key, "' is missing"));
  }
  absl::Status WrongType(const char* key, const char* expected) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", key, "' must be ",
                                                   expected, ", got ", j_.at(key).dump()));
  }

  // Integer; floats with an integral value (e.g. 1.0) are accepted.
  absl::Status Int(const char* key, int64_t* out, bool required = false) const {
    const json* v = Find(key);
    if (v == nullptr) return required ? Missing(key) : absl::OkStatus();
    if (v->is_number_integer()) {
      *out = v->get<int64_t>();
    } else if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
               std::fabs(v->get<double>()) < 9e18) {
      *out = static_cast<int64_t>(v->get<double>());
    } else {
      return WrongType(key, "an integer");
    }
    return absl::OkStatus();
  }
  absl::Status Int(const char* key, int* out, bool required = false) const {
    int64_t v = *out;
    RETURN_IF_ERROR(Int(key, &v, required));
    if (v < INT32_MIN || v > INT32_MAX) return WrongType(key, "a 32-bit integer");
    *out = static_cast<int>(v);
    return absl::OkStatus();
  }
  absl::Status Double(const char* key, double* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return WrongType(key, "a number");
    *out = v->get<double>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* key, bool* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return WrongType(key, "a boolean");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  absl::Status String(const char* key, std::string* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return WrongType(key, "a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  // An int or a list of ints (eos_token_id).
  absl::Status IntOrList(const char* key, std::vector<int64_t>* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    out->clear();
    if (v->is_number_integer()) {
      out->push_back(v->get<int64_t>());
      return absl::OkStatus();
    }
    if (!v->is_array()) return WrongType(key, "an integer or a list of integers");
    for (const json& e : *v) {
      if (!e.is_number_integer()) return WrongType(key, "an integer or a list of integers");
      out->push_back(e.get<int64_t>());
    }
    return absl::OkStatus();
  }
  absl::Status IntList(const char* key, std::vector<int>* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_array()) return WrongType(key, "a list of integers");
    out->clear();
    for (const json& e : *v) {
      if (!e.is_number_integer()) return WrongType(key, "a list of integers");
      out->push_back(e.get<int>());
    }
    return absl::OkStatus();
  }
  absl::Status StringList(const char* key, std::vector<std::string>* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_array()) return WrongType(key, "a list of strings");
    out->clear();
    for (const json& e : *v) {
      if (!e.is_string()) return WrongType(key, "a list of strings");
      out->push_back(e.get<std::string>());
    }
    return absl::OkStatus();
  }

  const std::string& source() const { return source_; }

 private:
  const json& j_;
  std::string source_;
};

absl::Status ParseRopeScaling(const json& j, const std::string& source, RopeScalingConfig* out) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source,
                                                   ": field 'rope_scaling' must be an "
                                                   "object or null"));
  }
  Fields f(j, source + " rope_scaling");
  // transformers accepts both "type" (legacy) and "rope_type".
  RETURN_IF_ERROR(f.String("type", &out->type));
  RETURN_IF_ERROR(f.String("rope_type", &out->type));
  RETURN_IF_ERROR(f.Double("factor", &out->factor));
  RETURN_IF_ERROR(
      f.Int("original_max_position_embeddings", &out->original_max_position_embeddings));
  RETURN_IF_ERROR(f.Double("beta_fast", &out->beta_fast));
  RETURN_IF_ERROR(f.Double("beta_slow", &out->beta_slow));
  RETURN_IF_ERROR(f.Double("mscale", &out->mscale));
  RETURN_IF_ERROR(f.Double("mscale_all_dim", &out->mscale_all_dim));
  RETURN_IF_ERROR(f.Bool("truncate", &out->truncate));
  RETURN_IF_ERROR(f.Double("low_freq_factor", &out->low_freq_factor));
  RETURN_IF_ERROR(f.Double("high_freq_factor", &out->high_freq_factor));
  static const char* kKnown[] = {"", "default", "linear", "yarn", "llama3"};
  if (std::find_if(std::begin(kKnown), std::end(kKnown),
                   [&](const char* k) { return out->type == k; }) == std::end(kKnown)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": rope_scaling type '", out->type,
                     "' is not supported (supported: default, linear, yarn, llama3)"));
  }
  if (out->type == "default") out->type.clear();
  return absl::OkStatus();
}

absl::Status ParseQuantization(const json& j, const std::string& source, QuantizationConfig* out) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'quantization_config' must be an object"));
  }
  Fields f(j, source + " quantization_config");
  RETURN_IF_ERROR(f.String("quant_method", &out->method));
  out->fp8 = out->method == "fp8";
  out->mxfp4 = out->method == "mxfp4";
  if (!out->method.empty() && !out->fp8 && !out->mxfp4) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": quantization_config.quant_method '", out->method,
                     "' is not supported (supported: fp8 with weight_block_size, mxfp4)"));
  }
  if (const json* block = f.Find("weight_block_size")) {
    if (!block->is_array() || block->size() != 2 || !(*block)[0].is_number_integer() ||
        !(*block)[1].is_number_integer() || (*block)[0].get<int64_t>() <= 0 ||
        (*block)[1].get<int64_t>() <= 0 || (*block)[0].get<int64_t>() > 65536 ||
        (*block)[1].get<int64_t>() > 65536) {
      return absl::InvalidArgumentError(absl::StrCat(
          source,
          ": quantization_config.weight_block_size must be [block_n, block_k] positive "
          "integers, got ",
          block->dump()));
    }
    out->block_n = (*block)[0].get<int>();
    out->block_k = (*block)[1].get<int>();
  } else if (out->fp8) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": quantization_config with quant_method fp8 needs 'weight_block_size' "
                     "(per-tensor fp8 is not supported)"));
  }
  RETURN_IF_ERROR(f.StringList("modules_to_not_convert", &out->modules_to_not_convert));
  return absl::OkStatus();
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const json& j, absl::string_view source_view) {
  const std::string source(source_view);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": config is not a JSON object"));
  }
  Fields f(j, source);
  ModelConfig c;
  c.source = source;

  // ---- Architecture -----------------------------------------------------------------------
  const json* archs = f.Find("architectures");
  if (archs == nullptr) return f.Missing("architectures");
  if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return f.WrongType("architectures", "a non-empty list of strings");
  }
  c.architecture = (*archs)[0].get<std::string>();
  bool known = false;
  for (const ArchEntry& e : kArchitectures) {
    if (c.architecture == e.architecture) {
      c.family = e.family;
      known = true;
    }
  }
  if (!known) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": architecture '", c.architecture,
                     "' is not supported; supported: ", SupportedArchitectures()));
  }
  RETURN_IF_ERROR(f.String("model_type", &c.model_type));
  const ModelFamily fam = c.family;
  const bool deepseek = fam == ModelFamily::kDeepseekV3;

  // ---- Family defaults (transformers configuration classes) ----------------------------------
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  switch (fam) {
    case ModelFamily::kMixtral:
      c.rms_norm_eps = 1e-5;
      c.rope_theta = 1e6;
      c.max_position_embeddings = 4096 * 32;
      c.num_experts = 8;
      c.num_experts_per_tok = 2;
      c.norm_topk_prob = true;  // Mixtral renormalises the top-k softmax weights
      break;
    case ModelFamily::kQwen2Moe:
      c.max_position_embeddings = 32768;
      c.num_experts = 60;
      c.num_experts_per_tok = 4;
      c.moe_intermediate_size = 1408;
      c.shared_expert_intermediate_size = 5632;
      c.attention_bias = true;  // Qwen2 attention: q/k/v projections carry a bias
      break;
    case ModelFamily::kQwen3Moe:
      c.max_position_embeddings = 32768;
      c.num_experts = 128;
      c.num_experts_per_tok = 8;
      c.moe_intermediate_size = 768;
      c.qk_norm = true;
      break;
    case ModelFamily::kQwen3:
      c.max_position_embeddings = 32768;
      c.qk_norm = true;
      break;
    case ModelFamily::kDeepseekV3:
      c.max_position_embeddings = 4096;
      c.num_experts = 256;
      c.num_experts_per_tok = 8;
      c.moe_intermediate_size = 2048;
      c.n_shared_experts = 1;
      c.first_k_dense_replace = 3;
      c.norm_topk_prob = true;
      c.scoring_func = "sigmoid";
      c.topk_method = "noaux_tc";
      c.n_group = 8;
      c.topk_group = 4;
      c.routed_scaling_factor = 2.5;
      c.q_lora_rank = 1536;
      c.kv_lora_rank = 512;
      c.qk_nope_head_dim = 128;
      c.qk_rope_head_dim = 64;
      c.v_head_dim = 128;
      c.rope_interleaved = true;  // the published modelling code pairs adjacent rope dims
      break;
    case ModelFamily::kGlm4Moe:
      c.rms_norm_eps = 1e-5;
      c.max_position_embeddings = 131072;
      c.num_experts = 128;
      c.num_experts_per_tok = 8;
      c.moe_intermediate_size = 1408;
      c.n_shared_experts = 1;
      c.first_k_dense_replace = 1;
      c.norm_topk_prob = true;
      c.scoring_func = "sigmoid";  // Glm4MoeTopkRouter: sigmoid + e_score_correction_bias
      c.use_routing_bias = true;
      c.topk_method = "noaux_tc";
      break;
    case ModelFamily::kMiniMaxM2:
      c.max_position_embeddings = 196608;
      c.rope_theta = 5e6;
      c.num_experts = 256;
      c.num_experts_per_tok = 8;
      c.norm_topk_prob = true;  // top-k sigmoid scores renormalised to sum 1
      c.scoring_func = "sigmoid";
      c.use_routing_bias = true;
      c.qk_norm = true;
      break;
    case ModelFamily::kGptOss:
      c.rms_norm_eps = 1e-5;
      c.rope_theta = 150000;
      c.max_position_embeddings = 131072;
      c.num_experts = 128;
      c.num_experts_per_tok = 4;
      c.norm_topk_prob = true;  // softmax over the top-k router logits
      c.attention_bias = true;
      c.attention_sinks = true;
      c.sliding_window = 128;
      c.swiglu_limit = 7.0;
      c.rope_scaling.type = "yarn";
      c.rope_scaling.factor = 32;
      c.rope_scaling.beta_fast = 32;
      c.rope_scaling.beta_slow = 1;
      c.rope_scaling.truncate = false;
      c.rope_scaling.original_max_position_embeddings = 4096;
      break;
    case ModelFamily::kLlama:
      c.max_position_embeddings = 2048;
      break;
  }

  // ---- Core dimensions -------------------------------------------------------------------
  RETURN_IF_ERROR(f.Int("vocab_size", &c.vocab_size, /*required=*/true));
  RETURN_IF_ERROR(f.Int("hidden_size", &c.hidden_size, true));
  RETURN_IF_ERROR(f.Int("num_hidden_layers", &c.num_hidden_layers, true));
  RETURN_IF_ERROR(f.Int("num_attention_heads", &c.num_attention_heads, true));
  RETURN_IF_ERROR(f.Int("intermediate_size", &c.intermediate_size, true));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(f.Int("num_key_value_heads", &c.num_key_value_heads));
  RETURN_IF_ERROR(f.Int("max_position_embeddings", &c.max_position_embeddings));
  RETURN_IF_ERROR(f.Double("rms_norm_eps", &c.rms_norm_eps));
  RETURN_IF_ERROR(f.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  RETURN_IF_ERROR(f.Bool("attention_bias", &c.attention_bias));
  if (fam == ModelFamily::kQwen2Moe) RETURN_IF_ERROR(f.Bool("qkv_bias", &c.attention_bias));
  if (fam == ModelFamily::kLlama) RETURN_IF_ERROR(f.Bool("mlp_bias", &c.mlp_bias));
  RETURN_IF_ERROR(f.String("hidden_act", &c.hidden_act));
  RETURN_IF_ERROR(f.Double("rope_theta", &c.rope_theta));
  // transformers >= 5 saves RoPE as one `rope_parameters` object (rope_type, rope_theta,
  // partial_rotary_factor and the scaling fields) instead of rope_theta / rope_scaling /
  // partial_rotary_factor. As RopeParametersMixin.convert_rope_params_to_dict: a legacy
  // `rope_scaling` replaces the object, and values inside the object win over top-level ones.
  const json* rope_params = f.Find("rope_scaling");
  if (rope_params == nullptr) rope_params = f.Find("rope_parameters");
  if (rope_params != nullptr && !rope_params->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field '", f.Has("rope_scaling") ? "rope_scaling" : "rope_parameters",
        "' must be an object or null, got ", rope_params->dump()));
  }
  std::optional<Fields> rope_fields;
  if (rope_params != nullptr) {
    rope_fields.emplace(*rope_params, source + (f.Has("rope_scaling") ? " rope_scaling"
                                                                      : " rope_parameters"));
    RETURN_IF_ERROR(rope_fields->Double("rope_theta", &c.rope_theta));
  }
  if (c.num_attention_heads <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'num_attention_heads' must be positive"));
  }

  // ---- Head dimension and RoPE -------------------------------------------------------------
  if (deepseek) {
    RETURN_IF_ERROR(f.Int("q_lora_rank", &c.q_lora_rank));
    if (f.Find("q_lora_rank") == nullptr && j.contains("q_lora_rank")) c.q_lora_rank = 0;  // null
    RETURN_IF_ERROR(f.Int("kv_lora_rank", &c.kv_lora_rank));
    RETURN_IF_ERROR(f.Int("qk_nope_head_dim", &c.qk_nope_head_dim));
    RETURN_IF_ERROR(f.Int("qk_rope_head_dim", &c.qk_rope_head_dim));
    RETURN_IF_ERROR(f.Int("v_head_dim", &c.v_head_dim));
    RETURN_IF_ERROR(f.Bool("rope_interleave", &c.rope_interleaved));
    c.head_dim = c.qk_rope_head_dim;
    c.rotary_dim = c.qk_rope_head_dim;
  } else {
    c.head_dim = c.hidden_size / c.num_attention_heads;
    RETURN_IF_ERROR(f.Int("head_dim", &c.head_dim));
    double partial = 1.0;
    RETURN_IF_ERROR(f.Double("partial_rotary_factor", &partial));
    const bool has_partial = f.Has("partial_rotary_factor") ||
                             (rope_fields && rope_fields->Has("partial_rotary_factor"));
    if (rope_fields) RETURN_IF_ERROR(rope_fields->Double("partial_rotary_factor", &partial));
    if (fam == ModelFamily::kGlm4Moe && !has_partial) partial = 0.5;
    c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial);
    // MiniMax-M2 releases give partial RoPE as the legacy `rotary_dim` (their remote-code config
    // derives partial_rotary_factor = rotary_dim / head_dim). An explicit partial_rotary_factor
    // (what transformers' in-tree config reads) wins; see docs/decisions.md (HF check).
    if (fam == ModelFamily::kMiniMaxM2 && !has_partial) {
      c.rotary_dim = 64;
      RETURN_IF_ERROR(f.Int("rotary_dim", &c.rotary_dim));
    }
  }
  if (rope_params != nullptr) {
    c.rope_scaling = RopeScalingConfig();
    RETURN_IF_ERROR(ParseRopeScaling(*rope_params, source, &c.rope_scaling));
  }

  // ---- Q/K norm ---------------------------------------------------------------------------
  if (fam == ModelFamily::kGlm4Moe || fam == ModelFamily::kMiniMaxM2) {
    RETURN_IF_ERROR(f.Bool("use_qk_norm", &c.qk_norm));
  }
  if (fam == ModelFamily::kMiniMaxM2) {
    std::string type = "per_layer";
    RETURN_IF_ERROR(f.String("qk_norm_type", &type));
    if (type != "per_layer" && type != "per_head") {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": field 'qk_norm_type' must be \"per_layer\" or \"per_head\", got '", type,
          "'"));
    }
    c.qk_norm_per_layer = c.qk_norm && type == "per_layer";
  }

  // ---- MoE ----------------------------------------------------------------------------------
  const bool moe = fam != ModelFamily::kLlama && fam != ModelFamily::kQwen3;
  if (moe) {
    const char* experts_key = "num_experts";
    if (fam == ModelFamily::kMixtral || fam == ModelFamily::kGptOss ||
        fam == ModelFamily::kMiniMaxM2) {
      experts_key = "num_local_experts";
    } else if (deepseek || fam == ModelFamily::kGlm4Moe) {
      experts_key = "n_routed_experts";
    }
    // transformers 5 renamed Qwen3MoeConfig.num_experts to num_local_experts (attribute_map),
    // so configs it saves carry only the new name.
    if (fam == ModelFamily::kQwen3Moe || fam == ModelFamily::kQwen2Moe) {
      RETURN_IF_ERROR(f.Int("num_local_experts", &c.num_experts));
    }
    RETURN_IF_ERROR(f.Int(experts_key, &c.num_experts));
    // Early Glm4MoeConfig revisions spelled the expert count "num_experts".
    if (fam == ModelFamily::kGlm4Moe && !f.Has("n_routed_experts")) {
      RETURN_IF_ERROR(f.Int("num_experts", &c.num_experts));
    }
    if (fam == ModelFamily::kGptOss)
      RETURN_IF_ERROR(f.Int("experts_per_token", &c.num_experts_per_tok));
    RETURN_IF_ERROR(f.Int("num_experts_per_tok", &c.num_experts_per_tok));
    if (fam == ModelFamily::kMixtral || fam == ModelFamily::kGptOss ||
        fam == ModelFamily::kMiniMaxM2) {
      c.moe_intermediate_size = c.intermediate_size;
    } else {
      RETURN_IF_ERROR(f.Int("moe_intermediate_size", &c.moe_intermediate_size));
    }
    RETURN_IF_ERROR(f.Bool("norm_topk_prob", &c.norm_topk_prob));
    if (fam == ModelFamily::kQwen2Moe) {
      RETURN_IF_ERROR(f.Int("shared_expert_intermediate_size", &c.shared_expert_intermediate_size));
    }
    if (fam == ModelFamily::kMiniMaxM2) {
      RETURN_IF_ERROR(f.Int("shared_intermediate_size", &c.shared_expert_intermediate_size));
    }
    if (deepseek || fam == ModelFamily::kGlm4Moe) {
      RETURN_IF_ERROR(f.Int("n_shared_experts", &c.n_shared_experts));
      if (f.Find("n_shared_experts") == nullptr && j.contains("n_shared_experts")) {
        c.n_shared_experts = 0;  // null
      }
      RETURN_IF_ERROR(f.Int("first_k_dense_replace", &c.first_k_dense_replace));
      RETURN_IF_ERROR(f.Int("moe_layer_freq", &c.moe_layer_freq));
      RETURN_IF_ERROR(f.Int("n_group", &c.n_group));
      RETURN_IF_ERROR(f.Int("topk_group", &c.topk_group));
      RETURN_IF_ERROR(f.Double("routed_scaling_factor", &c.routed_scaling_factor));
      RETURN_IF_ERROR(f.String("topk_method", &c.topk_method));
      RETURN_IF_ERROR(f.Int("num_nextn_predict_layers", &c.num_nextn_predict_layers));
    }
    if (fam == ModelFamily::kQwen2Moe || fam == ModelFamily::kQwen3Moe) {
      RETURN_IF_ERROR(f.Int("decoder_sparse_step", &c.decoder_sparse_step));
      RETURN_IF_ERROR(f.IntList("mlp_only_layers", &c.mlp_only_layers));
    }
    if (fam == ModelFamily::kMiniMaxM2) {
      RETURN_IF_ERROR(f.Double("routed_scaling_factor", &c.routed_scaling_factor));
      RETURN_IF_ERROR(f.Bool("use_routing_bias", &c.use_routing_bias));
    }
    RETURN_IF_ERROR(f.String("scoring_func", &c.scoring_func));
    if (c.scoring_func != "softmax" && c.scoring_func != "sigmoid") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field 'scoring_func' must be \"softmax\" or \"sigmoid\", got '",
                       c.scoring_func, "'"));
    }
    if (deepseek) c.use_routing_bias = c.topk_method == "noaux_tc";
  }

  // ---- Attention variants -------------------------------------------------------------------
  if (fam == ModelFamily::kGptOss) {
    RETURN_IF_ERROR(f.Double("swiglu_limit", &c.swiglu_limit));
    RETURN_IF_ERROR(f.Int("sliding_window", &c.sliding_window));
    RETURN_IF_ERROR(f.StringList("layer_types", &c.layer_types));
    if (c.layer_types.empty()) {
      for (int i = 0; i < c.num_hidden_layers; ++i) {
        c.layer_types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
      }
    }
  } else if (fam == ModelFamily::kMixtral) {
    // Mixtral applies its sliding window (when set) to every layer.
    RETURN_IF_ERROR(f.Int("sliding_window", &c.sliding_window));
    RETURN_IF_ERROR(f.StringList("layer_types", &c.layer_types));
    if (c.layer_types.empty()) {
      c.layer_types.assign(c.num_hidden_layers,
                           c.sliding_window > 0 ? "sliding_attention" : "full_attention");
    }
  } else if (fam == ModelFamily::kQwen3 || fam == ModelFamily::kQwen3Moe ||
             fam == ModelFamily::kQwen2Moe) {
    // Qwen: the window applies only with use_sliding_window, to layers >= max_window_layers.
    bool use_sliding = false;
    RETURN_IF_ERROR(f.Bool("use_sliding_window", &use_sliding));
    RETURN_IF_ERROR(f.StringList("layer_types", &c.layer_types));
    int64_t window = 4096;
    RETURN_IF_ERROR(f.Int("sliding_window", &window));
    int max_window_layers = c.num_hidden_layers;
    RETURN_IF_ERROR(f.Int("max_window_layers", &max_window_layers));
    if (use_sliding) c.sliding_window = window;
    if (c.layer_types.empty()) {
      for (int i = 0; i < c.num_hidden_layers; ++i) {
        c.layer_types.push_back(use_sliding && i >= max_window_layers ? "sliding_attention"
                                                                      : "full_attention");
      }
    } else if (std::count(c.layer_types.begin(), c.layer_types.end(), "sliding_attention") > 0) {
      c.sliding_window = window;
    }
  } else if (fam == ModelFamily::kMiniMaxM2) {
    // attn_type_list: 1 = full (softmax) attention; MiniMax-M2 has no other kind.
    std::vector<int> attn_types;
    RETURN_IF_ERROR(f.IntList("attn_type_list", &attn_types));
    for (size_t i = 0; i < attn_types.size(); ++i) {
      if (attn_types[i] != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": attn_type_list[", i, "] = ", attn_types[i],
                         " (linear attention) is not supported; only 1 (full attention)"));
      }
    }
    c.layer_types.assign(c.num_hidden_layers, "full_attention");
  } else {
    c.layer_types.assign(c.num_hidden_layers, "full_attention");
  }
  for (size_t i = 0; i < c.layer_types.size(); ++i) {
    if (c.layer_types[i] != "full_attention" && c.layer_types[i] != "sliding_attention") {
      return absl::InvalidArgumentError(absl::StrCat(source, ": layer_types[", i, "] = '",
                                                     c.layer_types[i],
                                                     "' is not full_attention or "
                                                     "sliding_attention"));
    }
  }

  // ---- Quantization, dtype, tokens -----------------------------------------------------------
  if (const json* q = f.Find("quantization_config")) {
    RETURN_IF_ERROR(ParseQuantization(*q, source, &c.quantization));
  }
  std::string dtype_name;
  RETURN_IF_ERROR(f.String("torch_dtype", &dtype_name));
  RETURN_IF_ERROR(f.String("dtype", &dtype_name));  // newer transformers spell it "dtype"
  if (!dtype_name.empty()) {
    absl::StatusOr<DType> dtype = ParseDType(dtype_name);
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field 'torch_dtype' has unknown dtype '", dtype_name, "'"));
    }
    c.torch_dtype = *dtype;
  }
  RETURN_IF_ERROR(f.Int("bos_token_id", &c.bos_token_id));
  RETURN_IF_ERROR(f.IntOrList("eos_token_id", &c.eos_token_ids));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path_or_dir) {
  std::error_code ec;
  fs::path path(path_or_dir);
  if (fs::is_directory(path, ec)) path /= "config.json";
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": config file does not exist"));
  }
  ASSIGN_OR_RETURN(json j, ReadJson(path.string()));
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(j, path.string()));
  const fs::path gen = path.parent_path() / "generation_config.json";
  if (fs::exists(gen, ec)) {
    ASSIGN_OR_RETURN(json g, ReadJson(gen.string()));
    if (!g.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(gen.string(), ": not a JSON object"));
    }
    Fields gf(g, gen.string());
    RETURN_IF_ERROR(gf.IntOrList("eos_token_id", &config.eos_token_ids));
    if (config.bos_token_id < 0) RETURN_IF_ERROR(gf.Int("bos_token_id", &config.bos_token_id));
  }
  return config;
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [&](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(c.source, ": field '", field, "' ", why));
  };
  if (c.vocab_size <= 0) return bad("vocab_size", "must be positive");
  if (c.hidden_size <= 0) return bad("hidden_size", "must be positive");
  if (c.num_hidden_layers <= 0) return bad("num_hidden_layers", "must be positive");
  if (c.num_attention_heads <= 0) return bad("num_attention_heads", "must be positive");
  if (c.num_key_value_heads <= 0) return bad("num_key_value_heads", "must be positive");
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return bad("num_key_value_heads",
               absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                            c.num_attention_heads, ")"));
  }
  if (c.head_dim <= 0) return bad("head_dim", "must be positive");
  if (c.intermediate_size <= 0) return bad("intermediate_size", "must be positive");
  if (!(c.rms_norm_eps > 0)) return bad("rms_norm_eps", "must be positive");
  if (!(c.rope_theta > 0)) return bad("rope_theta", "must be positive");
  if (c.rotary_dim <= 0 || c.rotary_dim > c.head_dim || c.rotary_dim % 2 != 0) {
    return bad(
        "rotary_dim",
        absl::StrCat("(", c.rotary_dim, ") must be even and in (0, head_dim = ", c.head_dim, "]"));
  }
  if (c.is_mla()) {
    if (c.qk_nope_head_dim <= 0) return bad("qk_nope_head_dim", "must be positive");
    if (c.v_head_dim <= 0) return bad("v_head_dim", "must be positive");
    if (c.q_lora_rank < 0) return bad("q_lora_rank", "must be >= 0");
  }
  if (c.num_experts < 0) return bad("num_experts", "must be >= 0");
  if (c.num_experts > 0) {
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.num_experts) {
      return bad("num_experts_per_tok",
                 absl::StrCat("(", c.num_experts_per_tok,
                              ") must be in [1, num_experts = ", c.num_experts, "]"));
    }
    if (c.moe_intermediate_size <= 0) return bad("moe_intermediate_size", "must be positive");
    if (c.n_group <= 0 || c.num_experts % c.n_group != 0) {
      return bad("n_group", absl::StrCat("(", c.n_group, ") must divide the number of experts (",
                                         c.num_experts, ")"));
    }
    if (c.topk_group <= 0 || c.topk_group > c.n_group) {
      return bad("topk_group",
                 absl::StrCat("(", c.topk_group, ") must be in [1, n_group = ", c.n_group, "]"));
    }
    if (c.n_group > 1 && c.num_experts_per_tok > c.topk_group * (c.num_experts / c.n_group)) {
      return bad("num_experts_per_tok", "exceeds the experts in the topk_group selected groups");
    }
    if (c.decoder_sparse_step <= 0) return bad("decoder_sparse_step", "must be positive");
    if (c.moe_layer_freq <= 0) return bad("moe_layer_freq", "must be positive");
    if (c.first_k_dense_replace < 0) return bad("first_k_dense_replace", "must be >= 0");
    if (c.n_shared_experts < 0) return bad("n_shared_experts", "must be >= 0");
  }
  if (!c.layer_types.empty() && static_cast<int>(c.layer_types.size()) != c.num_hidden_layers) {
    return bad("layer_types",
               absl::StrCat("has ", c.layer_types.size(), " entries but num_hidden_layers is ",
                            c.num_hidden_layers));
  }
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    if (c.IsSlidingLayer(i) && c.sliding_window <= 0) {
      return bad("sliding_window",
                 absl::StrCat("must be positive: layer ", i, " uses sliding attention"));
    }
  }
  for (int layer : c.mlp_only_layers) {
    if (layer < 0 || layer >= c.num_hidden_layers) {
      return bad("mlp_only_layers", absl::StrCat("names layer ", layer, " out of range"));
    }
  }
  if (c.rope_scaling.type == "yarn" || c.rope_scaling.type == "llama3") {
    if (c.rope_scaling.original_max_position_embeddings <= 0) {
      return bad("rope_scaling.original_max_position_embeddings", "must be positive");
    }
  }
  if (!c.rope_scaling.type.empty() && !(c.rope_scaling.factor > 0)) {
    return bad("rope_scaling.factor", "must be positive");
  }
  if (c.quantization.fp8 && (c.quantization.block_n <= 0 || c.quantization.block_k <= 0)) {
    return bad("quantization_config.weight_block_size", "must be positive");
  }
  return absl::OkStatus();
}

bool ModelConfig::IsMoeLayer(int layer) const {
  if (num_experts <= 0 || layer < 0 || layer >= num_hidden_layers) return false;
  switch (family) {
    case ModelFamily::kDeepseekV3:
    case ModelFamily::kGlm4Moe:
      return layer >= first_k_dense_replace && moe_layer_freq > 0 && layer % moe_layer_freq == 0;
    case ModelFamily::kQwen2Moe:
    case ModelFamily::kQwen3Moe:
      if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) !=
          mlp_only_layers.end()) {
        return false;
      }
      return decoder_sparse_step > 0 && (layer + 1) % decoder_sparse_step == 0;
    case ModelFamily::kMixtral:
    case ModelFamily::kGptOss:
    case ModelFamily::kMiniMaxM2:
      return true;
    case ModelFamily::kLlama:
    case ModelFamily::kQwen3:
      return false;
  }
  return false;
}

bool ModelConfig::IsSlidingLayer(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(layer_types.size())) return false;
  return layer_types[layer] == "sliding_attention";
}

namespace {

// Parameters of one SwiGLU MLP (gate, up, down).
int64_t MlpParams(int64_t hidden, int64_t inter) { return 3 * hidden * inter; }

int64_t AttentionParams(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t nh = c.num_attention_heads;
  if (c.is_mla()) {
    const int64_t qk_head = c.qk_nope_head_dim + c.qk_rope_head_dim;
    int64_t p = 0;
    if (c.q_lora_rank > 0) {
      p += h * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * nh * qk_head;
    } else {
      p += h * nh * qk_head;
    }
    p += h * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank;
    p += c.kv_lora_rank * nh * (c.qk_nope_head_dim + c.v_head_dim);
    p += nh * c.v_head_dim * h;
    return p;
  }
  const int64_t q = nh * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_key_value_heads) * c.head_dim;
  int64_t p = h * (q + 2 * kv) + q * h;
  if (c.attention_bias) {
    p += q + 2 * kv;
    if (c.family == ModelFamily::kGptOss) p += h;  // o_proj bias too
  }
  if (c.qk_norm) p += c.qk_norm_per_layer ? q + kv : 2 * c.head_dim;
  if (c.attention_sinks) p += nh;
  return p;
}

// Parameters of layer `layer`, counting `experts` routed experts.
int64_t LayerParams(const ModelConfig& c, int layer, bool active) {
  const int64_t h = c.hidden_size;
  int64_t p = 2 * h + AttentionParams(c);  // two RMSNorms
  if (!c.IsMoeLayer(layer)) return p + MlpParams(h, c.intermediate_size);
  const int64_t e = c.num_experts;
  const int64_t used = active ? c.num_experts_per_tok : e;
  p += h * e;  // router
  if (c.use_routing_bias) p += e;
  int64_t expert = MlpParams(h, c.moe_intermediate_size);
  if (c.family == ModelFamily::kGptOss) {
    p += e;                                     // router bias
    expert += 2 * c.moe_intermediate_size + h;  // gate_up and down biases
  }
  p += used * expert;
  p += static_cast<int64_t>(c.n_shared_experts) * MlpParams(h, c.moe_intermediate_size);
  if (c.shared_expert_intermediate_size > 0) {
    p += MlpParams(h, c.shared_expert_intermediate_size);
    if (c.family == ModelFamily::kQwen2Moe) p += h;  // shared_expert_gate
  }
  return p;
}

int64_t CountParams(const ModelConfig& c, bool active) {
  // embed_tokens and lm_head; the active count leaves out the input embedding table (a lookup,
  // not a matmul), as the gpt-oss and GLM model cards do, unless it doubles as lm_head.
  int64_t p = c.vocab_size * c.hidden_size;
  if (!c.tie_word_embeddings && !active) p += c.vocab_size * c.hidden_size;
  p += c.hidden_size;  // final norm
  for (int i = 0; i < c.num_hidden_layers; ++i) p += LayerParams(c, i, active);
  return p;
}

}  // namespace

int64_t ModelConfig::NumParameters() const { return CountParams(*this, /*active=*/false); }
int64_t ModelConfig::NumActiveParameters() const { return CountParams(*this, /*active=*/true); }

}  // namespace tessera
