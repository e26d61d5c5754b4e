// Tests for config.json -> ModelConfig (worker/checkpoint/model_config.h): every real config under
// ../shared/testdata/configs parses and validates with key fields equal to the file, per-family
// facts for each target model, layer rules, parameter counts, and error messages.
#include "worker/checkpoint/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace tessera {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string ConfigsDir() { return testing::TestDataDir() + "/configs"; }

std::vector<std::string> ConfigDirs() {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(ConfigsDir(), ec)) {
    if (std::filesystem::exists(entry.path() / "config.json")) {
      dirs.push_back(entry.path().filename().string());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

ModelConfig Load(const std::string& name) {
  auto config = LoadModelConfig(ConfigsDir() + "/" + name);
  CHECK(config.ok()) << config.status();
  return *config;
}

// ---- Every real config -------------------------------------------------------------------------

class RealConfigTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RealConfigTest, ParsesValidatesAndMatchesTheFile) {
  const std::string dir = ConfigsDir() + "/" + GetParam();
  const json j = ReadJson(dir + "/config.json");
  auto parsed = LoadModelConfig(dir);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ModelConfig& c = *parsed;
  EXPECT_TRUE(ValidateModelConfig(c).ok()) << ValidateModelConfig(c);
  EXPECT_EQ(c.architecture, j["architectures"][0].get<std::string>());
  EXPECT_EQ(c.model_type, j["model_type"].get<std::string>());
  EXPECT_EQ(c.vocab_size, j["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.hidden_size, j["hidden_size"].get<int64_t>());
  EXPECT_EQ(c.num_hidden_layers, j["num_hidden_layers"].get<int>());
  EXPECT_EQ(c.num_attention_heads, j["num_attention_heads"].get<int>());
  EXPECT_EQ(c.num_key_value_heads, j["num_key_value_heads"].get<int>());
  EXPECT_EQ(c.intermediate_size, j["intermediate_size"].get<int64_t>());
  EXPECT_EQ(c.max_position_embeddings, j["max_position_embeddings"].get<int64_t>());
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, j["rms_norm_eps"].get<double>());
  EXPECT_DOUBLE_EQ(c.rope_theta, j["rope_theta"].get<double>());
  EXPECT_EQ(c.tie_word_embeddings, j.value("tie_word_embeddings", false));
  if (j.contains("head_dim")) {
    EXPECT_EQ(c.head_dim, j["head_dim"].get<int64_t>());
  }
  EXPECT_EQ(c.num_experts_per_tok, j["num_experts_per_tok"].get<int>());
  int64_t experts = 0;
  for (const char* key : {"num_experts", "num_local_experts", "n_routed_experts"}) {
    if (j.contains(key)) experts = j[key].get<int64_t>();
  }
  EXPECT_EQ(c.num_experts, experts);
  for (const char* key :
       {"moe_intermediate_size", "first_k_dense_replace", "n_group", "topk_group", "kv_lora_rank",
        "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "n_shared_experts"}) {
    if (!j.contains(key)) continue;
    int64_t got = -1;
    const std::string k = key;
    if (k == "moe_intermediate_size") got = c.moe_intermediate_size;
    if (k == "first_k_dense_replace") got = c.first_k_dense_replace;
    if (k == "n_group") got = c.n_group;
    if (k == "topk_group") got = c.topk_group;
    if (k == "kv_lora_rank") got = c.kv_lora_rank;
    if (k == "q_lora_rank") got = c.q_lora_rank;
    if (k == "qk_rope_head_dim") got = c.qk_rope_head_dim;
    if (k == "qk_nope_head_dim") got = c.qk_nope_head_dim;
    if (k == "v_head_dim") got = c.v_head_dim;
    if (k == "n_shared_experts") got = c.n_shared_experts;
    EXPECT_EQ(got, j[key].get<int64_t>()) << key;
  }
  if (j.contains("routed_scaling_factor")) {
    EXPECT_DOUBLE_EQ(c.routed_scaling_factor, j["routed_scaling_factor"].get<double>());
  }
  if (j.contains("scoring_func")) {
    EXPECT_EQ(c.scoring_func, j["scoring_func"].get<std::string>());
  }
  EXPECT_EQ(static_cast<int>(c.layer_types.size()), c.num_hidden_layers);
  EXPECT_FALSE(c.eos_token_ids.empty());
  EXPECT_EQ(c.torch_dtype, DType::kBF16);
  EXPECT_GT(c.NumActiveParameters(), 0);
  EXPECT_LT(c.NumActiveParameters(), c.NumParameters());
  EXPECT_LE(c.rotary_dim, c.head_dim);
}

INSTANTIATE_TEST_SUITE_P(TestData, RealConfigTest, ::testing::ValuesIn(ConfigDirs()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

TEST(RealConfigTest, TestDataHasTheTargetModels) { EXPECT_GE(ConfigDirs().size(), 12u); }

// ---- Per-family facts --------------------------------------------------------------------------

TEST(ModelConfigTest, DeepseekV3) {
  const ModelConfig c = Load("deepseek-ai__DeepSeek-V3");
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_experts, 256);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.rotary_dim, 64);
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_TRUE(c.is_mla());
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_TRUE(c.use_routing_bias);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_TRUE(c.quantization.fp8);
  EXPECT_EQ(c.quantization.block_n, 128);
  EXPECT_EQ(c.quantization.block_k, 128);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 40);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 1.0);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{1});
  EXPECT_FALSE(c.IsMoeLayer(2));
  EXPECT_TRUE(c.IsMoeLayer(3));
  EXPECT_TRUE(c.IsMoeLayer(60));
  EXPECT_FALSE(c.IsSlidingLayer(0));
}

TEST(ModelConfigTest, KimiK2IsDeepseekV3WithOneGroup) {
  const ModelConfig c = Load("moonshotai__Kimi-K2-Instruct");
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
  EXPECT_EQ(c.model_type, "kimi_k2");
  EXPECT_EQ(c.num_experts, 384);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.topk_group, 1);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 1.0);
}

TEST(ModelConfigTest, Qwen3MoeUsesPerHeadQkNormAndGenerationConfigEos) {
  const ModelConfig c = Load("Qwen__Qwen3-30B-A3B");
  EXPECT_EQ(c.family, ModelFamily::kQwen3Moe);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qk_norm_per_layer);
  EXPECT_EQ(c.head_dim, 128);  // explicit, not hidden / heads (= 64)
  EXPECT_EQ(c.rotary_dim, 128);
  EXPECT_FALSE(c.rope_interleaved);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.moe_intermediate_size, 768);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.scoring_func, "softmax");
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_TRUE(c.rope_scaling.type.empty());
  EXPECT_FALSE(c.quantization.fp8);
  // generation_config.json lists two eos ids; config.json only one.
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  for (int i = 0; i < c.num_hidden_layers; ++i) EXPECT_TRUE(c.IsMoeLayer(i)) << i;
}

TEST(ModelConfigTest, Qwen3MoeFp8KeepsModulesToNotConvert) {
  const ModelConfig c = Load("Qwen__Qwen3-30B-A3B-FP8");
  EXPECT_TRUE(c.quantization.fp8);
  EXPECT_EQ(c.quantization.block_n, 128);
  ASSERT_FALSE(c.quantization.modules_to_not_convert.empty());
  EXPECT_EQ(c.quantization.modules_to_not_convert[0], "lm_head");
}

TEST(ModelConfigTest, Mixtral) {
  const ModelConfig c = Load("mistralai__Mixtral-8x7B-v0.1");
  EXPECT_EQ(c.family, ModelFamily::kMixtral);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.moe_intermediate_size, 14336);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.IsSlidingLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(0));
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
}

TEST(ModelConfigTest, Glm45PartialRotaryQkNormAndEosList) {
  const ModelConfig air = Load("zai-org__GLM-4.5-Air");
  EXPECT_EQ(air.family, ModelFamily::kGlm4Moe);
  EXPECT_EQ(air.rotary_dim, 64);
  EXPECT_FALSE(air.qk_norm);
  EXPECT_TRUE(air.attention_bias);
  EXPECT_TRUE(air.use_routing_bias);
  EXPECT_EQ(air.scoring_func, "sigmoid");
  EXPECT_EQ(air.eos_token_ids, (std::vector<int64_t>{151329, 151336, 151338}));
  EXPECT_FALSE(air.IsMoeLayer(0));
  EXPECT_TRUE(air.IsMoeLayer(1));
  const ModelConfig full = Load("zai-org__GLM-4.5");
  EXPECT_TRUE(full.qk_norm);
  EXPECT_FALSE(full.qk_norm_per_layer);
  EXPECT_EQ(full.num_experts, 160);
  EXPECT_FALSE(full.IsMoeLayer(2));
  EXPECT_TRUE(full.IsMoeLayer(3));
}

TEST(ModelConfigTest, GptOssSlidingLayersSinksAndYarn) {
  const ModelConfig c = Load("openai__gpt-oss-120b");
  EXPECT_EQ(c.family, ModelFamily::kGptOss);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_EQ(c.moe_intermediate_size, 2880);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_TRUE(c.IsSlidingLayer(0));
  EXPECT_FALSE(c.IsSlidingLayer(1));
  EXPECT_TRUE(c.attention_sinks);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_DOUBLE_EQ(c.swiglu_limit, 7.0);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_FALSE(c.rope_scaling.truncate);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32);
  EXPECT_TRUE(c.quantization.mxfp4);
  EXPECT_FALSE(c.quantization.fp8);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{200002, 199999, 200012}));
}

TEST(ModelConfigTest, MiniMaxM2PerLayerQkNormPartialRotaryRoutingBias) {
  const ModelConfig c = Load("MiniMaxAI__MiniMax-M2.7");
  EXPECT_EQ(c.family, ModelFamily::kMiniMaxM2);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.qk_norm_per_layer);
  EXPECT_EQ(c.rotary_dim, 64);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_experts, 256);
  EXPECT_EQ(c.moe_intermediate_size, 1536);
  EXPECT_TRUE(c.use_routing_bias);
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_TRUE(c.quantization.fp8);
  EXPECT_EQ(c.torch_dtype, DType::kBF16);  // spelled "dtype" in this file
  EXPECT_EQ(c.bos_token_id, 200019);       // only in generation_config.json
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{200020});
}

// Published sizes (billions) from the model cards. Totals must land within 3%. Active counts get
// 10%: vendors differ on whether the embedding and output tables count as active (Qwen counts
// both, OpenAI only the output, GLM neither); NumActiveParameters counts lm_head, not embeddings.
struct ParamCase {
  const char* dir;
  double total_b;
  double active_b;
};

class ParameterCountTest : public ::testing::TestWithParam<ParamCase> {};

TEST_P(ParameterCountTest, MatchesPublishedSize) {
  const ParamCase p = GetParam();
  const ModelConfig c = Load(p.dir);
  const double total = c.NumParameters() / 1e9;
  const double active = c.NumActiveParameters() / 1e9;
  EXPECT_NEAR(total, p.total_b, 0.03 * p.total_b) << p.dir;
  EXPECT_NEAR(active, p.active_b, 0.10 * p.active_b) << p.dir;
  std::printf("%s: %.2fB total, %.2fB active\n", p.dir, total, active);
}

INSTANTIATE_TEST_SUITE_P(Models, ParameterCountTest,
                         ::testing::Values(ParamCase{"deepseek-ai__DeepSeek-V3", 671, 37},
                                           ParamCase{"Qwen__Qwen3-30B-A3B", 30.5, 3.3},
                                           ParamCase{"Qwen__Qwen3-235B-A22B", 235, 22},
                                           ParamCase{"mistralai__Mixtral-8x7B-v0.1", 46.7, 12.9},
                                           ParamCase{"openai__gpt-oss-120b", 116.8, 5.13},
                                           ParamCase{"openai__gpt-oss-20b", 20.9, 3.61},
                                           ParamCase{"zai-org__GLM-4.5", 355, 32},
                                           ParamCase{"zai-org__GLM-4.5-Air", 106, 12},
                                           ParamCase{"moonshotai__Kimi-K2-Instruct", 1026, 32}),
                         [](const auto& info) {
                           std::string name = info.param.dir;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// ---- Layer rules and defaults on synthetic configs ----------------------------------------------

json Minimal(const std::string& arch) {
  return json{{"architectures", {arch}}, {"vocab_size", 100},        {"hidden_size", 64},
              {"num_hidden_layers", 6},  {"num_attention_heads", 4}, {"intermediate_size", 128}};
}

TEST(ModelConfigTest, Qwen2MoeSparseStepAndMlpOnlyLayers) {
  json j = Minimal("Qwen2MoeForCausalLM");
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<bool> moe;
  for (int i = 0; i < 6; ++i) moe.push_back(c->IsMoeLayer(i));
  EXPECT_EQ(moe, (std::vector<bool>{false, true, false, false, false, true}));
  // Qwen2MoeConfig defaults when absent.
  EXPECT_EQ(c->num_experts, 60);
  EXPECT_EQ(c->num_experts_per_tok, 4);
  EXPECT_EQ(c->shared_expert_intermediate_size, 5632);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->norm_topk_prob);
}

TEST(ModelConfigTest, DeepseekMoeLayerFreq) {
  json j = Minimal("DeepseekV3ForCausalLM");
  j["first_k_dense_replace"] = 1;
  j["moe_layer_freq"] = 2;
  j["n_routed_experts"] = 16;
  j["n_group"] = 4;
  j["topk_group"] = 2;
  j["num_experts_per_tok"] = 4;
  j["q_lora_rank"] = nullptr;
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
  std::vector<bool> moe;
  for (int i = 0; i < 6; ++i) moe.push_back(c->IsMoeLayer(i));
  EXPECT_EQ(moe, (std::vector<bool>{false, false, true, false, true, false}));
  EXPECT_TRUE(ValidateModelConfig(*c).ok()) << ValidateModelConfig(*c);
}

TEST(ModelConfigTest, GlmAcceptsEitherExpertCountSpelling) {
  json j = Minimal("Glm4MoeForCausalLM");
  j["num_experts"] = 32;
  auto early = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_EQ(early->num_experts, 32);
  EXPECT_EQ(early->rotary_dim, 8);  // default partial_rotary_factor 0.5 of head_dim 16
  j["n_routed_experts"] = 64;
  auto current = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_EQ(current->num_experts, 64);
}

TEST(ModelConfigTest, DenseFamiliesHaveNoExperts) {
  for (const char* arch : {"LlamaForCausalLM", "Qwen3ForCausalLM"}) {
    auto c = ParseModelConfig(Minimal(arch), "synthetic.json");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->num_experts, 0) << arch;
    EXPECT_FALSE(c->IsMoeLayer(0)) << arch;
    EXPECT_EQ(c->head_dim, 16) << arch;  // hidden / heads
    EXPECT_EQ(c->num_key_value_heads, 4) << arch;
    EXPECT_TRUE(ValidateModelConfig(*c).ok()) << arch;
    // Dense: everything is active except the input embedding table.
    EXPECT_EQ(c->NumParameters() - c->NumActiveParameters(), 100 * 64) << arch;
  }
}

TEST(ModelConfigTest, Llama3RopeScalingAndEosList) {
  json j = Minimal("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  j["eos_token_id"] = {128001, 128009};
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128009}));
}

// transformers >= 5 save_pretrained writes `rope_parameters` (no rope_theta / rope_scaling).
TEST(ModelConfigTest, TransformersV5RopeParametersObject) {
  json j = Minimal("LlamaForCausalLM");
  j["rope_parameters"] = {{"rope_type", "llama3"},
                          {"rope_theta", 500000.0},
                          {"factor", 8.0},
                          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, RopeParametersPartialRotaryAndThetaWinOverTopLevel) {
  json j = Minimal("Glm4MoeForCausalLM");
  j["rope_theta"] = 10000.0;
  j["rope_parameters"] = {{"rope_type", "default"},
                          {"rope_theta", 1000000.0},
                          {"partial_rotary_factor", 0.25}};
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1000000.0);
  EXPECT_EQ(c->rotary_dim, 4);  // 0.25 of head_dim 16, not GLM's default 0.5
  EXPECT_EQ(c->rope_scaling.type, "");
}

TEST(ModelConfigTest, MiniMaxM2ExplicitPartialRotaryFactorWinsOverLegacyRotaryDim) {
  json j = Minimal("MiniMaxM2ForCausalLM");
  j["head_dim"] = 32;
  j["rotary_dim"] = 16;
  auto legacy = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(legacy->rotary_dim, 16);
  j["partial_rotary_factor"] = 0.25;
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rotary_dim, 8);
}

TEST(ModelConfigTest, Qwen3MoeTransformersV5ExpertCountSpelling) {
  json j = Minimal("Qwen3MoeForCausalLM");
  j["num_local_experts"] = 8;  // what transformers 5 save_pretrained writes
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_experts, 8);
}

TEST(ModelConfigTest, LlamaMlpBias) {
  json j = Minimal("LlamaForCausalLM");
  auto plain = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->mlp_bias);
  j["mlp_bias"] = true;
  auto c = ParseModelConfig(j, "synthetic.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->mlp_bias);
}

TEST(ModelConfigErrorTest, RopeParametersMustBeAnObject) {
  json j = Minimal("LlamaForCausalLM");
  j["rope_parameters"] = 3;
  auto c = ParseModelConfig(j, "dir/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("rope_parameters"));
}

// ---- Errors ----------------------------------------------------------------------------------

TEST(ModelConfigErrorTest, UnknownArchitectureListsSupportedOnes) {
  auto c = ParseModelConfig(Minimal("GPT2LMHeadModel"), "dir/config.json");
  ASSERT_FALSE(c.ok());
  const std::string m(c.status().message());
  EXPECT_THAT(m, HasSubstr("dir/config.json"));
  EXPECT_THAT(m, HasSubstr("GPT2LMHeadModel"));
  EXPECT_THAT(m, HasSubstr("DeepseekV3ForCausalLM"));
  EXPECT_THAT(m, HasSubstr("Qwen3MoeForCausalLM"));
}

TEST(ModelConfigErrorTest, MissingRequiredFieldIsNamed) {
  for (const char* field : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "intermediate_size", "architectures"}) {
    json j = Minimal("MixtralForCausalLM");
    j.erase(field);
    auto c = ParseModelConfig(j, "dir/config.json");
    ASSERT_FALSE(c.ok()) << field;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(std::string("'") + field + "'"));
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("dir/config.json"));
  }
}

TEST(ModelConfigErrorTest, WrongTypeIsNamed) {
  json j = Minimal("MixtralForCausalLM");
  j["hidden_size"] = "big";
  auto c = ParseModelConfig(j, "dir/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("'hidden_size'"));
}

TEST(ModelConfigErrorTest, NotAnObject) {
  EXPECT_FALSE(ParseModelConfig(json::array(), "x.json").ok());
}

TEST(ModelConfigErrorTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadModelConfig("/nonexistent/model").status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelConfigErrorTest, InvalidJsonNamesFile) {
  const std::string dir = testing::MakeTempDir("cfg_badjson");
  std::ofstream(dir + "/config.json") << "{\"architectures\": [";
  auto c = LoadModelConfig(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir + "/config.json"));
}

struct InvalidCase {
  const char* name;
  const char* arch;
  json patch;
  const char* field;
};

class ValidateTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(ValidateTest, RejectsAndNamesTheField) {
  const InvalidCase& p = GetParam();
  json j = Minimal(p.arch);
  j.merge_patch(p.patch);
  auto c = ParseModelConfig(j, "dir/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status s = ValidateModelConfig(*c);
  ASSERT_FALSE(s.ok()) << p.name;
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::string("'") + p.field + "'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("dir/config.json"));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ValidateTest,
    ::testing::Values(
        InvalidCase{"kv_heads_not_dividing",
                    "MixtralForCausalLM",
                    {{"num_key_value_heads", 3}},
                    "num_key_value_heads"},
        InvalidCase{"topk_above_experts",
                    "MixtralForCausalLM",
                    {{"num_local_experts", 4}, {"num_experts_per_tok", 5}},
                    "num_experts_per_tok"},
        InvalidCase{"group_not_dividing",
                    "DeepseekV3ForCausalLM",
                    {{"n_routed_experts", 10},
                     {"n_group", 4},
                     {"topk_group", 2},
                     {"num_experts_per_tok", 2}},
                    "n_group"},
        InvalidCase{"topk_group_above_groups",
                    "DeepseekV3ForCausalLM",
                    {{"n_routed_experts", 16},
                     {"n_group", 4},
                     {"topk_group", 5},
                     {"num_experts_per_tok", 2}},
                    "topk_group"},
        InvalidCase{"odd_rotary_dim", "MiniMaxM2ForCausalLM", {{"rotary_dim", 7}}, "rotary_dim"},
        InvalidCase{
            "rotary_above_head_dim", "MiniMaxM2ForCausalLM", {{"rotary_dim", 32}}, "rotary_dim"},
        InvalidCase{"zero_vocab", "LlamaForCausalLM", {{"vocab_size", 0}}, "vocab_size"},
        InvalidCase{"layer_types_length",
                    "GptOssForCausalLM",
                    {{"layer_types", {"full_attention"}}},
                    "layer_types"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tessera
