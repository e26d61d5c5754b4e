#include "worker/make_model_presets.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status.h"

namespace tessera::make_model {
namespace {

using json = nlohmann::json;

// The sizes a preset picks; each family maps them onto its own fields.
struct Dims {
  int64_t hidden;
  int64_t layers;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  int64_t intermediate;      // dense MLP
  int64_t moe_intermediate;  // one expert
  int64_t experts;
  int64_t top_k;
  int64_t vocab;
};

// bos/eos of the real family when the vocabulary holds them, else 1 / 2.
struct SpecialIds {
  int64_t bos;
  int64_t eos;
};
SpecialIds Ids(const Dims& d, int64_t real_bos, int64_t real_eos) {
  if (d.vocab > std::max(real_bos, real_eos)) return {real_bos, real_eos};
  return {1, 2};
}

json Common(const Dims& d, const char* architecture, const char* model_type) {
  json c;
  c["architectures"] = json::array({architecture});
  c["model_type"] = model_type;
  c["hidden_size"] = d.hidden;
  c["num_hidden_layers"] = d.layers;
  c["num_attention_heads"] = d.heads;
  c["num_key_value_heads"] = d.kv_heads;
  c["intermediate_size"] = d.intermediate;
  c["vocab_size"] = d.vocab;
  c["hidden_act"] = "silu";
  c["initializer_range"] = 0.02;
  c["attention_dropout"] = 0.0;
  c["use_cache"] = true;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = "bfloat16";
  return c;
}

json Qwen3Moe(const Dims& d) {
  json c = Common(d, "Qwen3MoeForCausalLM", "qwen3_moe");
  SpecialIds ids = Ids(d, 151643, 151645);
  c["bos_token_id"] = ids.bos;
  c["eos_token_id"] = ids.eos;
  c["attention_bias"] = false;
  c["decoder_sparse_step"] = 1;
  c["head_dim"] = d.head_dim;
  c["max_position_embeddings"] = 40960;
  c["max_window_layers"] = d.layers;
  c["mlp_only_layers"] = json::array();
  c["moe_intermediate_size"] = d.moe_intermediate;
  c["norm_topk_prob"] = true;
  c["num_experts"] = d.experts;
  c["num_experts_per_tok"] = d.top_k;
  c["output_router_logits"] = false;
  c["rms_norm_eps"] = 1e-6;
  c["rope_scaling"] = nullptr;
  c["rope_theta"] = 1000000.0;
  c["router_aux_loss_coef"] = 0.001;
  c["sliding_window"] = nullptr;
  c["use_sliding_window"] = false;
  c["transformers_version"] = "4.51.0";
  return c;
}

json Qwen2Moe(const Dims& d) {
  // Qwen2-MoE has no head_dim field: head_dim = hidden_size / num_attention_heads.
  json c = Common(d, "Qwen2MoeForCausalLM", "qwen2_moe");
  SpecialIds ids = Ids(d, 151643, 151643);
  c["bos_token_id"] = ids.bos;
  c["eos_token_id"] = ids.eos;
  c["decoder_sparse_step"] = 1;
  c["max_position_embeddings"] = 32768;
  c["max_window_layers"] = d.layers;
  c["mlp_only_layers"] = json::array();
  c["moe_intermediate_size"] = d.moe_intermediate;
  c["shared_expert_intermediate_size"] = d.intermediate;
  c["norm_topk_prob"] = false;
  c["num_experts"] = d.experts;
  c["num_experts_per_tok"] = d.top_k;
  c["output_router_logits"] = false;
  c["qkv_bias"] = true;
  c["rms_norm_eps"] = 1e-6;
  c["rope_scaling"] = nullptr;
  c["rope_theta"] = 1000000.0;
  c["router_aux_loss_coef"] = 0.001;
  c["sliding_window"] = 32768;
  c["use_sliding_window"] = false;
  c["transformers_version"] = "4.40.1";
  return c;
}

json Mixtral(const Dims& d) {
  // Mixtral's expert size is intermediate_size; head_dim = hidden_size / num_attention_heads.
  Dims m = d;
  m.intermediate = d.moe_intermediate * 2;
  json c = Common(m, "MixtralForCausalLM", "mixtral");
  c["bos_token_id"] = 1;
  c["eos_token_id"] = 2;
  c["max_position_embeddings"] = 32768;
  c["num_experts_per_tok"] = d.top_k;
  c["num_local_experts"] = std::min<int64_t>(d.experts, 8);  // Mixtral's 8 large experts
  c["output_router_logits"] = false;
  c["rms_norm_eps"] = 1e-5;
  c["rope_theta"] = 1000000.0;
  c["router_aux_loss_coef"] = 0.02;
  c["router_jitter_noise"] = 0.0;
  c["sliding_window"] = nullptr;
  c["transformers_version"] = "4.36.0.dev0";
  return c;
}

json DeepseekV3(const Dims& d) {
  json c = Common(d, "DeepseekV3ForCausalLM", "deepseek_v3");
  SpecialIds ids = Ids(d, 0, 1);
  c["bos_token_id"] = ids.bos;
  c["eos_token_id"] = ids.eos;
  c["num_key_value_heads"] = d.heads;  // MLA: every head has its own K/V after kv_b_proj
  c["attention_bias"] = false;
  c["ep_size"] = 1;
  c["first_k_dense_replace"] = 1;
  c["kv_lora_rank"] = std::max<int64_t>(16, d.hidden / 8);
  c["q_lora_rank"] = std::max<int64_t>(32, d.hidden / 4);
  c["qk_nope_head_dim"] = d.head_dim;
  c["qk_rope_head_dim"] = d.head_dim / 2;
  c["v_head_dim"] = d.head_dim;
  c["max_position_embeddings"] = 163840;
  c["moe_intermediate_size"] = d.moe_intermediate;
  c["moe_layer_freq"] = 1;
  c["n_group"] = 4;
  c["topk_group"] = 2;
  c["n_routed_experts"] = std::max<int64_t>(16, d.experts);
  c["n_shared_experts"] = 1;
  c["norm_topk_prob"] = true;
  c["num_experts_per_tok"] = std::max<int64_t>(4, d.top_k);
  c["num_nextn_predict_layers"] = 0;
  c["rms_norm_eps"] = 1e-6;
  c["rope_scaling"] = {{"beta_fast", 32},
                       {"beta_slow", 1},
                       {"factor", 40},
                       {"mscale", 1.0},
                       {"mscale_all_dim", 1.0},
                       {"original_max_position_embeddings", 4096},
                       {"type", "yarn"}};
  c["rope_theta"] = 10000;
  c["routed_scaling_factor"] = 2.5;
  c["scoring_func"] = "sigmoid";
  c["topk_method"] = "noaux_tc";
  c["transformers_version"] = "4.46.3";
  return c;
}

json Glm4Moe(const Dims& d) {
  json c = Common(d, "Glm4MoeForCausalLM", "glm4_moe");
  bool real_ids = d.vocab > 151338;
  c["pad_token_id"] = real_ids ? 151329 : 0;
  c["eos_token_id"] = real_ids ? json::array({151329, 151336, 151338}) : json::array({2, 3});
  c["attention_bias"] = true;
  c["head_dim"] = d.head_dim;
  c["partial_rotary_factor"] = 0.5;
  c["max_position_embeddings"] = 131072;
  c["moe_intermediate_size"] = d.moe_intermediate;
  c["norm_topk_prob"] = true;
  c["n_group"] = 1;
  c["topk_group"] = 1;
  c["n_routed_experts"] = d.experts;
  c["n_shared_experts"] = 1;
  c["routed_scaling_factor"] = 2.5;
  c["num_experts_per_tok"] = d.top_k;
  c["first_k_dense_replace"] = 1;
  c["num_nextn_predict_layers"] = 0;
  c["rms_norm_eps"] = 1e-5;
  c["rope_scaling"] = nullptr;
  c["rope_theta"] = 1000000;
  c["use_qk_norm"] = true;
  c["transformers_version"] = "4.54.0";
  return c;
}

json MinimaxM2(const Dims& d) {
  // MiniMax-M2's intermediate_size is the size of one expert (there is no dense MLP).
  Dims m = d;
  m.intermediate = d.moe_intermediate;
  json c = Common(m, "MiniMaxM2ForCausalLM", "minimax_m2");
  SpecialIds ids = Ids(d, 200019, 200020);
  c["bos_token_id"] = ids.bos;
  c["eos_token_id"] = ids.eos;
  c["attn_type_list"] = std::vector<int>(d.layers, 1);
  c["head_dim"] = d.head_dim;
  c["rotary_dim"] = d.head_dim / 2;
  c["max_position_embeddings"] = 204800;
  c["num_experts_per_tok"] = d.top_k;
  c["num_local_experts"] = d.experts;
  c["mtp_transformer_layers"] = 1;
  c["num_mtp_modules"] = 0;
  c["use_mtp"] = false;
  c["qk_norm_type"] = "per_layer";
  c["use_qk_norm"] = true;
  c["rms_norm_eps"] = 1e-6;
  c["rope_theta"] = 5000000;
  c["scoring_func"] = "sigmoid";
  c["use_routing_bias"] = true;
  c["shared_intermediate_size"] = 0;
  c["router_aux_loss_coef"] = 0.001;
  c["output_router_logits"] = false;
  c["transformers_version"] = "4.46.1";
  return c;
}

json GptOss(const Dims& d) {
  // gpt-oss's intermediate_size is the size of one expert.
  Dims m = d;
  m.intermediate = d.moe_intermediate;
  json c = Common(m, "GptOssForCausalLM", "gpt_oss");
  bool real_ids = d.vocab > 200002;
  c["bos_token_id"] = real_ids ? 199998 : 1;
  c["eos_token_id"] = real_ids ? 200002 : 2;
  c["pad_token_id"] = real_ids ? 199999 : 0;
  c["attention_bias"] = true;
  c["experts_per_token"] = d.top_k;
  c["num_experts_per_tok"] = d.top_k;
  c["head_dim"] = d.head_dim;
  c["initial_context_length"] = 4096;
  std::vector<std::string> types;
  for (int64_t i = 0; i < d.layers; ++i) {
    types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  }
  c["layer_types"] = types;
  c["max_position_embeddings"] = 131072;
  c["num_local_experts"] = d.experts;
  c["output_router_logits"] = false;
  c["rms_norm_eps"] = 1e-5;
  c["rope_scaling"] = {{"beta_fast", 32.0},
                       {"beta_slow", 1.0},
                       {"factor", 32.0},
                       {"original_max_position_embeddings", 4096},
                       {"rope_type", "yarn"},
                       {"truncate", false}};
  c["rope_theta"] = 150000;
  c["router_aux_loss_coef"] = 0.9;
  // Small enough that short test prompts cross the window (the real models use 128).
  c["sliding_window"] = d.hidden <= 64 ? 8 : 128;
  c["swiglu_limit"] = 7.0;
  c["transformers_version"] = "4.55.0.dev0";
  return c;
}

json Llama(const Dims& d) {
  json c = Common(d, "LlamaForCausalLM", "llama");
  SpecialIds ids = Ids(d, 128000, 128001);
  c["bos_token_id"] = ids.bos;
  c["eos_token_id"] = ids.eos;
  c["attention_bias"] = false;
  c["head_dim"] = d.head_dim;
  c["max_position_embeddings"] = 131072;
  c["mlp_bias"] = false;
  c["pretraining_tp"] = 1;
  c["rms_norm_eps"] = 1e-5;
  c["rope_scaling"] = {{"factor", 8.0},
                       {"high_freq_factor", 4.0},
                       {"low_freq_factor", 1.0},
                       {"original_max_position_embeddings", 8192},
                       {"rope_type", "llama3"}};
  c["rope_theta"] = 500000.0;
  c["transformers_version"] = "4.45.0";
  return c;
}

json Qwen3(const Dims& d) {
  json c = Common(d, "Qwen3ForCausalLM", "qwen3");
  SpecialIds ids = Ids(d, 151643, 151645);
  c["bos_token_id"] = ids.bos;
  c["eos_token_id"] = ids.eos;
  c["attention_bias"] = false;
  c["head_dim"] = d.head_dim;
  c["max_position_embeddings"] = 40960;
  c["max_window_layers"] = d.layers;
  c["rms_norm_eps"] = 1e-6;
  c["rope_scaling"] = nullptr;
  c["rope_theta"] = 1000000.0;
  c["sliding_window"] = nullptr;
  c["use_sliding_window"] = false;
  c["tie_word_embeddings"] = true;  // like the small Qwen3 releases; exercises tied lm_head
  c["transformers_version"] = "4.51.0";
  return c;
}

const std::vector<std::string>& Archs() {
  static const std::vector<std::string> archs = {"qwen3_moe", "qwen2_moe",  "mixtral",
                                                 "deepseek_v3", "glm4_moe", "minimax_m2",
                                                 "gpt_oss",   "llama",      "qwen3"};
  return archs;
}

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Scales a size by `ratio`, rounded to a multiple of 8 and at least 8.
int64_t ScaleSize(int64_t x, double ratio) {
  return std::max<int64_t>(8, RoundUp(static_cast<int64_t>(std::llround(x * ratio)), 8));
}

int64_t GetInt(const json& c, const char* key, int64_t fallback) {
  auto it = c.find(key);
  if (it == c.end() || !it->is_number()) return fallback;
  return it->get<int64_t>();
}

}  // namespace

absl::StatusOr<json> PresetConfig(absl::string_view arch, absl::string_view preset) {
  if (std::find(Archs().begin(), Archs().end(), std::string(arch)) == Archs().end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown --arch '", arch, "'; valid: ",
                                                   absl::StrJoin(Archs(), ", ")));
  }
  Dims d;
  if (preset == "tiny") {
    d = {.hidden = 64, .layers = 4, .heads = 4, .kv_heads = 2, .head_dim = 32,
         .intermediate = 128, .moe_intermediate = 32, .experts = 8, .top_k = 2, .vocab = 512};
  } else if (preset == "small") {
    d = {.hidden = 512, .layers = 8, .heads = 8, .kv_heads = 4, .head_dim = 64,
         .intermediate = 1408, .moe_intermediate = 256, .experts = 32, .top_k = 4,
         .vocab = 32000};
  } else if (preset == "bench") {
    if (arch != "qwen3_moe") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--preset bench exists only for --arch qwen3_moe (got --arch ", arch, ")"));
    }
    d = {.hidden = 2048, .layers = 16, .heads = 32, .kv_heads = 4, .head_dim = 128,
         .intermediate = 6144, .moe_intermediate = 768, .experts = 32, .top_k = 8,
         .vocab = 151936};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --preset '", preset, "'; valid: tiny, small, bench"));
  }
  // Families whose head_dim is hidden / heads.
  if (arch == "qwen2_moe" || arch == "mixtral") d.head_dim = d.hidden / d.heads;
  if (arch == "deepseek_v3") d.head_dim = d.head_dim / 2;
  if (arch == "qwen3_moe") return Qwen3Moe(d);
  if (arch == "qwen2_moe") return Qwen2Moe(d);
  if (arch == "mixtral") return Mixtral(d);
  if (arch == "deepseek_v3") return DeepseekV3(d);
  if (arch == "glm4_moe") return Glm4Moe(d);
  if (arch == "minimax_m2") return MinimaxM2(d);
  if (arch == "gpt_oss") return GptOss(d);
  if (arch == "llama") return Llama(d);
  return Qwen3(d);
}

absl::StatusOr<std::string> ArchOfConfig(const json& config) {
  std::string model_type = config.value("model_type", std::string());
  if (model_type == "kimi_k2" || model_type == "deepseek_v3") return std::string("deepseek_v3");
  if (std::find(Archs().begin(), Archs().end(), model_type) != Archs().end()) return model_type;
  auto it = config.find("architectures");
  if (it != config.end() && it->is_array() && !it->empty() && (*it)[0].is_string()) {
    std::string a = (*it)[0].get<std::string>();
    if (a == "DeepseekV3ForCausalLM") return std::string("deepseek_v3");
    if (a == "Qwen3MoeForCausalLM") return std::string("qwen3_moe");
    if (a == "Qwen2MoeForCausalLM") return std::string("qwen2_moe");
    if (a == "MixtralForCausalLM") return std::string("mixtral");
    if (a == "Glm4MoeForCausalLM") return std::string("glm4_moe");
    if (a == "MiniMaxM2ForCausalLM") return std::string("minimax_m2");
    if (a == "GptOssForCausalLM") return std::string("gpt_oss");
    if (a == "LlamaForCausalLM") return std::string("llama");
    if (a == "Qwen3ForCausalLM") return std::string("qwen3");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("config model_type '", model_type, "' is not a supported architecture; valid: ",
                   absl::StrJoin(Archs(), ", ")));
}

absl::StatusOr<json> ScaleConfig(const json& config, int64_t layers, int64_t experts,
                                 int64_t hidden) {
  json c = config;
  ASSIGN_OR_RETURN(std::string arch, ArchOfConfig(c));
  const int64_t old_hidden = GetInt(c, "hidden_size", 0);
  if (old_hidden <= 0) return absl::InvalidArgumentError("config: hidden_size missing");
  if (layers < 0 || experts < 0 || hidden < 0) {
    return absl::InvalidArgumentError("--layers, --experts, --hidden must be positive");
  }
  const int64_t new_hidden = hidden > 0 ? hidden : old_hidden;
  const double ratio = static_cast<double>(new_hidden) / static_cast<double>(old_hidden);
  c["hidden_size"] = new_hidden;

  // Sizes that scale with hidden.
  for (const char* key : {"intermediate_size", "moe_intermediate_size",
                          "shared_expert_intermediate_size", "q_lora_rank", "kv_lora_rank",
                          "shared_intermediate_size"}) {
    int64_t v = GetInt(c, key, 0);
    if (v > 0) c[key] = ScaleSize(v, ratio);
  }

  // Heads: keep the query/KV group size.
  const int64_t old_heads = GetInt(c, "num_attention_heads", 1);
  const int64_t old_kv = GetInt(c, "num_key_value_heads", old_heads);
  const int64_t group = std::max<int64_t>(1, old_heads / std::max<int64_t>(1, old_kv));
  int64_t kv = std::max<int64_t>(1, std::llround(old_kv * ratio));
  kv = std::max<int64_t>(kv, (2 + group - 1) / group);  // at least two query heads
  kv = std::min(kv, old_kv);
  c["num_attention_heads"] = kv * group;
  if (c.contains("num_key_value_heads")) c["num_key_value_heads"] = kv;

  // Head dims: kept unless larger than hidden, then halved together (partial rotary kept).
  int64_t old_head_dim = GetInt(c, "head_dim", old_hidden / old_heads);
  int64_t max_dim = std::max({old_head_dim, GetInt(c, "qk_nope_head_dim", 0) +
                                                GetInt(c, "qk_rope_head_dim", 0),
                              GetInt(c, "v_head_dim", 0)});
  int64_t div = 1;
  while (max_dim / div > new_hidden && max_dim / div > 16) div *= 2;
  const int64_t new_heads = kv * group;
  const int64_t new_head_dim = old_head_dim / div;
  if (arch != "deepseek_v3") {
    bool explicit_head_dim = c.contains("head_dim") && c["head_dim"].is_number();
    if (explicit_head_dim || new_hidden % new_heads != 0 || new_hidden / new_heads != new_head_dim) {
      c["head_dim"] = new_head_dim;
    }
  }
  for (const char* key : {"rotary_dim", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"}) {
    int64_t v = GetInt(c, key, 0);
    if (v > 0) c[key] = std::max<int64_t>(2, v / div);
  }

  // Experts.
  const char* expert_key = nullptr;
  for (const char* key : {"num_experts", "num_local_experts", "n_routed_experts"}) {
    if (GetInt(c, key, 0) > 0) expert_key = key;
  }
  if (expert_key != nullptr && experts > 0) {
    c[expert_key] = experts;
    int64_t top_k = std::min(GetInt(c, "num_experts_per_tok", 1), experts);
    int64_t n_group = GetInt(c, "n_group", 0);
    if (n_group > 0) {
      // Groups must divide the experts and hold at least two each (group score = top-2 sum).
      n_group = std::min(n_group, experts);
      while (n_group > 1 && (experts % n_group != 0 || experts / n_group < 2)) --n_group;
      int64_t topk_group = std::min(GetInt(c, "topk_group", 1), n_group);
      while (topk_group < n_group && topk_group * (experts / n_group) < top_k) ++topk_group;
      c["n_group"] = n_group;
      c["topk_group"] = topk_group;
    }
    c["num_experts_per_tok"] = top_k;
    if (c.contains("experts_per_token")) c["experts_per_token"] = top_k;
  }

  // Layers.
  if (layers > 0) {
    c["num_hidden_layers"] = layers;
    if (c.contains("first_k_dense_replace")) {
      c["first_k_dense_replace"] =
          std::min(GetInt(c, "first_k_dense_replace", 0), std::max<int64_t>(0, layers - 1));
    }
    if (c.contains("max_window_layers") && c["max_window_layers"].is_number()) {
      c["max_window_layers"] = std::min(GetInt(c, "max_window_layers", layers), layers);
    }
    for (const char* key : {"layer_types", "attn_type_list"}) {
      auto it = c.find(key);
      if (it == c.end() || !it->is_array() || it->empty()) continue;
      json old = *it;
      json scaled = json::array();
      for (int64_t i = 0; i < layers; ++i) scaled.push_back(old[i % old.size()]);
      c[key] = scaled;
    }
    auto it = c.find("mlp_only_layers");
    if (it != c.end() && it->is_array()) {
      json kept = json::array();
      for (const json& v : *it) {
        if (v.is_number() && v.get<int64_t>() < layers) kept.push_back(v);
      }
      c["mlp_only_layers"] = kept;
    }
  }

  // No multi-token-prediction weights are written.
  if (c.contains("num_nextn_predict_layers")) c["num_nextn_predict_layers"] = 0;
  if (c.contains("use_mtp")) c["use_mtp"] = false;
  if (c.contains("num_mtp_modules")) c["num_mtp_modules"] = 0;
  c.erase("quantization_config");
  c.erase("auto_map");  // the remote-code classes are not shipped with the checkpoint
  if (c.contains("dtype")) c.erase("dtype");
  c["torch_dtype"] = "bfloat16";
  return c;
}

const std::vector<std::string>& ArchList() { return Archs(); }

}  // namespace tessera::make_model
