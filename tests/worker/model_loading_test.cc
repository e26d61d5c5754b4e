// Tests for model loading: every non-MLA family loads from a make-model checkpoint in f32, bf16
// and fp8; broken checkpoints (missing tensor, wrong shape, missing fp8 scale, inconsistent
// config) fail with an error naming the tensor or config field.
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/checkpoint/safetensors_writer.h"
#include "worker/make_model.h"
#include "worker/models/layers.h"
#include "worker/models/model.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::string Make(const std::string& arch, const std::string& dtype) {
  MakeModelOptions o;
  o.arch = arch;
  o.out_dir = testing::MakeTempDir("load_" + arch + "_" + dtype);
  o.dtype = dtype;
  o.seed = 3;
  o.force = true;
  auto r = MakeModel(o);
  CHECK(r.ok()) << r.status();
  return o.out_dir;
}

// Copies checkpoint `src` to a new directory, dropping tensor `drop` and replacing tensor
// `reshape` by zeros of `new_shape` (either may be empty).
std::string Rewrite(const std::string& src, const std::string& name, const std::string& drop,
                    const std::string& reshape = "", Shape new_shape = {}) {
  const std::string dst = testing::MakeTempDir(name);
  for (const char* f : {"config.json", "generation_config.json"}) {
    if (fs::exists(fs::path(src) / f)) fs::copy_file(fs::path(src) / f, fs::path(dst) / f);
  }
  auto ckpt = Checkpoint::Open(src);
  CHECK(ckpt.ok()) << ckpt.status();
  SafetensorsWriter w;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : (*ckpt)->TensorNames()) {
    if (n == drop) continue;
    Tensor t = (*ckpt)->Get(n).value();
    if (n == reshape) t = Tensor::Zeros(new_shape, t.dtype()).value();
    w.Declare(n, t.dtype(), t.shape());
    tensors.emplace_back(n, t);
  }
  CHECK_OK(w.Open(dst + "/model.safetensors"));
  for (auto& [n, t] : tensors) CHECK_OK(w.WriteTensor(n, t));
  CHECK_OK(w.Close());
  return dst;
}

void EditConfig(const std::string& dir, const std::string& field, const nlohmann::json& value) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  CHECK(!j.is_discarded());
  j[field] = value;
  std::ofstream(path) << j.dump(2);
}

bool Contains(const absl::Status& st, const std::string& text) {
  return std::string(st.message()).find(text) != std::string::npos;
}

// ---- Every family loads --------------------------------------------------------------------

class LoadTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(LoadTest, LoadsAndRunsOneStep) {
  const auto& [arch, dtype] = GetParam();
  auto loaded = LoadModelFromDirectory(Make(arch, dtype));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // Every tensor make-model writes is read by the architecture (nothing silently ignored).
  EXPECT_EQ(UnknownTensors(*loaded->checkpoint, *loaded->config), std::vector<std::string>{});
  Model& m = *loaded->model;
  EXPECT_EQ(static_cast<int>(m.KvSpecs().size()), loaded->config->num_hidden_layers);
  auto cache = KvCache::Create(m.KvSpecs(), 2, 16);
  ASSERT_TRUE(cache.ok()) << cache.status();
  AttentionBatch b;
  b.num_seqs = 1;
  b.num_tokens = 3;
  b.block_size = 16;
  b.positions = Tensor::FromVector(std::vector<int32_t>{0, 1, 2}, {3});
  b.slot_mapping = Tensor::FromVector(std::vector<int64_t>{16, 17, 18}, {3});
  b.block_tables = Tensor::FromVector(std::vector<int32_t>{1}, {1, 1});
  b.seq_lens = Tensor::FromVector(std::vector<int32_t>{3}, {1});
  b.query_start_loc = Tensor::FromVector(std::vector<int32_t>{0, 3}, {2});
  b.last_token_rows = Tensor::FromVector(std::vector<int32_t>{2}, {1});
  Tensor ids = Tensor::FromVector(std::vector<int32_t>{5, 1, 7}, {3});
  Tensor logits;
  absl::Status st = m.Forward(ids, b, *cache, logits);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(logits.shape(), (Shape{1, m.vocab_size()}));
  double sum_sq = 0;
  for (int64_t i = 0; i < logits.numel(); ++i) sum_sq += logits.data<float>()[i] * logits.data<float>()[i];
  EXPECT_TRUE(std::isfinite(sum_sq));
  EXPECT_GT(sum_sq, 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Families, LoadTest,
    ::testing::Combine(::testing::Values("llama", "qwen3", "qwen3_moe", "qwen2_moe", "mixtral",
                                         "glm4_moe", "minimax_m2", "gpt_oss"),
                       ::testing::Values("f32", "bf16")));
INSTANTIATE_TEST_SUITE_P(Fp8, LoadTest,
                         ::testing::Combine(::testing::Values("qwen3_moe", "minimax_m2",
                                                              "glm4_moe"),
                                            ::testing::Values("fp8")));

// gpt-oss in the MXFP4 release format: experts stay MXFP4 LinearWeights.
INSTANTIATE_TEST_SUITE_P(Mxfp4, LoadTest,
                         ::testing::Combine(::testing::Values("gpt_oss"),
                                            ::testing::Values("mxfp4")));

TEST(BrokenCheckpointTest, MissingMxfp4ScalesAreNamed) {
  const std::string bad = Rewrite(Make("gpt_oss", "mxfp4"), "missing_mx_scales",
                                  "model.layers.2.mlp.experts.down_proj_scales");
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.layers.2.mlp.experts.down_proj_scales"))
      << loaded.status();
}

TEST(BrokenCheckpointTest, WrongMxfp4BlockShapeIsNamed) {
  const std::string bad = Rewrite(Make("gpt_oss", "mxfp4"), "bad_mx_blocks", "",
                                  "model.layers.1.mlp.experts.gate_up_proj_blocks",
                                  Shape{8, 64, 4, 8});
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.layers.1.mlp.experts.gate_up_proj_blocks"))
      << loaded.status();
}

TEST(UnknownTensorsTest, DeepSeekV3ReadsEveryTensor) {
  auto loaded = LoadModelFromDirectory(Make("deepseek_v3", "f32"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(UnknownTensors(*loaded->checkpoint, *loaded->config), std::vector<std::string>{});
}

// A tensor the architecture does not read is reported (LoadModelFromDirectory logs it); layers
// past num_hidden_layers (DeepSeek-V3's multi-token-prediction heads) are not.
TEST(UnknownTensorsTest, NamesTensorsTheModelDoesNotRead) {
  const std::string dir = Make("qwen3_moe", "f32");
  // Two files without an index (a lone model.safetensors would be the only file read).
  fs::rename(dir + "/model.safetensors", dir + "/model-1.safetensors");
  SafetensorsWriter w;
  const Tensor t = Tensor::Zeros({4, 4}, DType::kF32).value();
  w.Declare("model.layers.0.mlp.bogus.weight", t.dtype(), t.shape());
  w.Declare("model.layers.99.eh_proj.weight", t.dtype(), t.shape());
  ASSERT_TRUE(w.Open(dir + "/model-2.safetensors").ok());
  ASSERT_TRUE(w.WriteTensor("model.layers.0.mlp.bogus.weight", t).ok());
  ASSERT_TRUE(w.WriteTensor("model.layers.99.eh_proj.weight", t).ok());
  ASSERT_TRUE(w.Close().ok());
  auto loaded = LoadModelFromDirectory(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(UnknownTensors(*loaded->checkpoint, *loaded->config),
            std::vector<std::string>{"model.layers.0.mlp.bogus.weight"});
}

// ---- Broken checkpoints ----------------------------------------------------------------------

TEST(BrokenCheckpointTest, MissingTensorIsNamed) {
  const std::string bad = Rewrite(Make("qwen3_moe", "f32"), "missing",
                                  "model.layers.1.self_attn.k_proj.weight");
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.layers.1.self_attn.k_proj.weight"))
      << loaded.status();
}

TEST(BrokenCheckpointTest, MissingExpertIsNamed) {
  const std::string bad = Rewrite(Make("mixtral", "f32"), "missing_expert",
                                  "model.layers.0.block_sparse_moe.experts.3.w3.weight");
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.layers.0.block_sparse_moe.experts.3.w3.weight"))
      << loaded.status();
}

TEST(BrokenCheckpointTest, WrongShapeIsNamed) {
  const std::string src = Make("glm4_moe", "f32");
  auto cfg = LoadModelConfig(src);
  ASSERT_TRUE(cfg.ok());
  const std::string name = "model.layers.1.mlp.experts.0.down_proj.weight";
  const std::string bad = Rewrite(src, "wrong_shape", "", name,
                                  {cfg->hidden_size + 1, cfg->moe_intermediate_size});
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), name)) << loaded.status();
}

TEST(BrokenCheckpointTest, WrongSinksShapeIsNamed) {
  const std::string src = Make("gpt_oss", "f32");
  const std::string name = "model.layers.2.self_attn.sinks";
  const std::string bad = Rewrite(src, "wrong_sinks", "", name, {3});
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), name)) << loaded.status();
}

TEST(BrokenCheckpointTest, MissingFp8ScaleIsNamed) {
  const std::string bad = Rewrite(Make("qwen3_moe", "fp8"), "missing_scale",
                                  "model.layers.0.self_attn.q_proj.weight_scale_inv");
  auto loaded = LoadModelFromDirectory(bad);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.layers.0.self_attn.q_proj.weight_scale_inv"))
      << loaded.status();
}

TEST(BrokenCheckpointTest, HiddenSizeDisagreeingWithWeightsNamesTheTensor) {
  const std::string dir = Rewrite(Make("llama", "f32"), "hidden_mismatch", "");
  auto cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok());
  EditConfig(dir, "hidden_size", cfg->hidden_size * 2);
  EditConfig(dir, "head_dim", cfg->head_dim);
  auto loaded = LoadModelFromDirectory(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.embed_tokens.weight")) << loaded.status();
}

TEST(BrokenCheckpointTest, InconsistentHeadCountsNameTheField) {
  const std::string dir = Rewrite(Make("qwen3", "f32"), "heads_mismatch", "");
  auto cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok());
  EditConfig(dir, "num_key_value_heads", cfg->num_attention_heads + 1);
  auto loaded = LoadModelFromDirectory(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "num_key_value_heads")) << loaded.status();
}

TEST(BrokenCheckpointTest, TooFewExpertsInConfigIsCaughtByShape) {
  // num_local_experts smaller than the router's rows: the router tensor's shape is wrong.
  const std::string dir = Rewrite(Make("minimax_m2", "f32"), "experts_mismatch", "");
  auto cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok());
  EditConfig(dir, "num_local_experts", cfg->num_experts - 1);
  auto loaded = LoadModelFromDirectory(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), "model.layers.0.block_sparse_moe.gate.weight") ||
              Contains(loaded.status(), "num_experts_per_tok") ||
              Contains(loaded.status(), "num_local_experts"))
      << loaded.status();
}

// ---- Layer options --------------------------------------------------------------------------

TEST(LayerOptionsTest, FusedGateUpEqualsSeparateCalls) {
  const std::string dir = Make("qwen3_moe", "bf16");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok());
  WeightFormat separate = WeightFormatFromConfig(*cfg), fused = separate;
  fused.fuse_gate_up = true;
  const std::string prefix = "model.layers.0.mlp.experts.1";
  auto a = GatedMlp::Load(**ckpt, prefix, cfg->hidden_size, cfg->moe_intermediate_size, separate);
  auto b = GatedMlp::Load(**ckpt, prefix, cfg->hidden_size, cfg->moe_intermediate_size, fused);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  Tensor x = testing::RandomTensor({7, cfg->hidden_size}, 21);
  Tensor ya, yb;
  ASSERT_TRUE(a->Forward(x, ya).ok());
  ASSERT_TRUE(b->Forward(x, yb).ok());
  EXPECT_LT(testing::RelativeError(yb, ya), 1e-5);
}

TEST(LayerOptionsTest, MoeBlockWrongTopKIsInvalidArgument) {
  const std::string dir = Make("qwen3_moe", "f32");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok());
  MoeSpec spec;
  spec.num_experts = cfg->num_experts;
  spec.hidden_size = cfg->hidden_size;
  spec.moe_intermediate_size = cfg->moe_intermediate_size;
  spec.router.top_k = cfg->num_experts + 1;
  auto moe = MoeBlock::Load(**ckpt, "model.layers.0.mlp", spec, WeightFormatFromConfig(*cfg));
  EXPECT_EQ(moe.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(moe.status(), "top_k")) << moe.status();
}

}  // namespace
}  // namespace tessera
