// Tests for `tessera make-model` (worker/make_model.h): the Hugging Face tensor layout of every
// architecture, determinism, fp8 block quantisation, sharding, scaling of real configs, the
// tokenizer option and the error paths. Safetensors files are parsed here independently of the
// project's reader.
#include "worker/make_model.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/base/dtype.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/checkpoint/checkpoint.h"

#if __has_include("worker/checkpoint/model_config.h")
#include "worker/checkpoint/model_config.h"
#define TESSERA_HAVE_MODEL_CONFIG 1
#endif

namespace tessera {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- An independent safetensors reader ---------------------------------------------------------

struct StoredTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string file;
  uint64_t begin = 0, end = 0;  // absolute file offsets
};

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json ReadJson(const fs::path& path) { return json::parse(ReadFile(path)); }

// All tensors of a checkpoint directory (single file or index + shards).
std::map<std::string, StoredTensor> ReadCheckpoint(const fs::path& dir) {
  std::vector<std::string> files;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    json index = ReadJson(dir / "model.safetensors.index.json");
    std::map<std::string, bool> seen;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      std::string f = it.value().get<std::string>();
      if (!seen[f]) files.push_back(f);
      seen[f] = true;
    }
  } else {
    files.push_back("model.safetensors");
  }
  std::map<std::string, StoredTensor> out;
  for (const std::string& f : files) {
    std::string data = ReadFile(dir / f);
    EXPECT_GE(data.size(), 8u) << f;
    if (data.size() < 8) continue;
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(static_cast<uint8_t>(data[i])) << (8 * i);
    json header = json::parse(data.substr(8, len));
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      StoredTensor t;
      t.dtype = it.value()["dtype"].get<std::string>();
      t.shape = it.value()["shape"].get<std::vector<int64_t>>();
      t.file = f;
      t.begin = 8 + len + it.value()["data_offsets"][0].get<uint64_t>();
      t.end = 8 + len + it.value()["data_offsets"][1].get<uint64_t>();
      EXPECT_LE(t.end, data.size()) << it.key();
      EXPECT_EQ(out.count(it.key()), 0u) << "duplicate tensor " << it.key();
      out[it.key()] = t;
    }
  }
  return out;
}

std::string TensorBytes(const fs::path& dir, const StoredTensor& t) {
  std::ifstream in(dir / t.file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(t.begin));
  std::string bytes(t.end - t.begin, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

std::vector<float> TensorF32(const fs::path& dir, const StoredTensor& t) {
  std::string bytes = TensorBytes(dir, t);
  absl::StatusOr<DType> dtype = DTypeFromSafetensors(t.dtype);
  EXPECT_TRUE(dtype.ok());
  size_t n = bytes.size() / DTypeSize(*dtype);
  std::vector<float> out(n);
  ConvertBuffer(bytes.data(), *dtype, out.data(), DType::kF32, n);
  return out;
}

MakeModelResult Make(const std::string& arch, const std::string& dtype, uint64_t seed,
                     const std::string& dir_name) {
  MakeModelOptions o;
  o.arch = arch;
  o.dtype = dtype;
  o.seed = seed;
  o.out_dir = testing::MakeTempDir(dir_name);
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : MakeModelResult{};
}

// ---- Expected layouts (written from the Hugging Face modelling code) ---------------------------

struct Expected {
  std::string name;
  std::vector<int64_t> shape;
  bool linear;  // an nn.Linear weight: fp8 with --dtype fp8
};

struct Layout {
  std::vector<Expected> present;
  std::vector<std::string> absent;
};

// Tiny preset: hidden 64, 4 layers, vocab 512, 8 experts (16 for DeepSeek), 4 heads.
Layout ExpectedLayout(const std::string& arch) {
  const std::string l0 = "model.layers.0.", l1 = "model.layers.1.", l3 = "model.layers.3.";
  Layout x;
  x.present = {{"model.embed_tokens.weight", {512, 64}, false},
               {"model.norm.weight", {64}, false},
               {l0 + "input_layernorm.weight", {64}, false},
               {l3 + "post_attention_layernorm.weight", {64}, false}};
  auto add = [&](std::vector<Expected> v) { x.present.insert(x.present.end(), v.begin(), v.end()); };
  if (arch != "qwen3") add({{"lm_head.weight", {512, 64}, false}});
  if (arch == "qwen3_moe") {
    add({{l0 + "self_attn.q_proj.weight", {128, 64}, true},
         {l0 + "self_attn.k_proj.weight", {64, 64}, true},
         {l0 + "self_attn.o_proj.weight", {64, 128}, true},
         {l0 + "self_attn.q_norm.weight", {32}, false},
         {l0 + "self_attn.k_norm.weight", {32}, false},
         {l0 + "mlp.gate.weight", {8, 64}, false},
         {l0 + "mlp.experts.0.gate_proj.weight", {32, 64}, true},
         {l3 + "mlp.experts.7.down_proj.weight", {64, 32}, true}});
    x.absent = {l0 + "self_attn.q_proj.bias", l0 + "mlp.shared_expert_gate.weight"};
  } else if (arch == "qwen2_moe") {
    add({{l0 + "self_attn.q_proj.weight", {64, 64}, true},
         {l0 + "self_attn.q_proj.bias", {64}, false},
         {l0 + "self_attn.k_proj.bias", {32}, false},
         {l0 + "self_attn.v_proj.bias", {32}, false},
         {l0 + "mlp.gate.weight", {8, 64}, false},
         {l1 + "mlp.experts.3.up_proj.weight", {32, 64}, true},
         {l0 + "mlp.shared_expert.gate_proj.weight", {128, 64}, true},
         {l0 + "mlp.shared_expert.down_proj.weight", {64, 128}, true},
         {l0 + "mlp.shared_expert_gate.weight", {1, 64}, false}});
    x.absent = {l0 + "self_attn.o_proj.bias", l0 + "self_attn.q_norm.weight"};
  } else if (arch == "mixtral") {
    add({{l0 + "self_attn.q_proj.weight", {64, 64}, true},
         {l0 + "self_attn.k_proj.weight", {32, 64}, true},
         {l0 + "block_sparse_moe.gate.weight", {8, 64}, false},
         {l0 + "block_sparse_moe.experts.0.w1.weight", {64, 64}, true},
         {l0 + "block_sparse_moe.experts.7.w2.weight", {64, 64}, true},
         {l3 + "block_sparse_moe.experts.5.w3.weight", {64, 64}, true}});
    x.absent = {l0 + "mlp.gate.weight", l0 + "self_attn.q_proj.bias"};
  } else if (arch == "deepseek_v3") {
    add({{l0 + "self_attn.q_a_proj.weight", {32, 64}, true},
         {l0 + "self_attn.q_a_layernorm.weight", {32}, false},
         {l0 + "self_attn.q_b_proj.weight", {96, 32}, true},
         {l0 + "self_attn.kv_a_proj_with_mqa.weight", {24, 64}, true},
         {l0 + "self_attn.kv_a_layernorm.weight", {16}, false},
         {l0 + "self_attn.kv_b_proj.weight", {128, 16}, true},
         {l0 + "self_attn.o_proj.weight", {64, 64}, true},
         {l0 + "mlp.gate_proj.weight", {128, 64}, true},
         {l0 + "mlp.down_proj.weight", {64, 128}, true},
         {l1 + "mlp.gate.weight", {16, 64}, false},
         {l1 + "mlp.gate.e_score_correction_bias", {16}, false},
         {l1 + "mlp.experts.15.down_proj.weight", {64, 32}, true},
         {l1 + "mlp.shared_experts.up_proj.weight", {32, 64}, true}});
    x.absent = {l0 + "mlp.gate.weight", l0 + "self_attn.q_proj.weight", l1 + "mlp.gate_proj.weight"};
  } else if (arch == "glm4_moe") {
    add({{l0 + "self_attn.q_proj.weight", {128, 64}, true},
         {l0 + "self_attn.q_proj.bias", {128}, false},
         {l0 + "self_attn.k_proj.bias", {64}, false},
         {l0 + "self_attn.q_norm.weight", {32}, false},
         {l0 + "mlp.up_proj.weight", {128, 64}, true},
         {l1 + "mlp.gate.weight", {8, 64}, false},
         {l1 + "mlp.gate.e_score_correction_bias", {8}, false},
         {l1 + "mlp.experts.7.gate_proj.weight", {32, 64}, true},
         {l1 + "mlp.shared_experts.down_proj.weight", {64, 32}, true}});
    x.absent = {l0 + "self_attn.o_proj.bias", l0 + "mlp.gate.weight"};
  } else if (arch == "minimax_m2") {
    add({{l0 + "self_attn.q_proj.weight", {128, 64}, true},
         {l0 + "self_attn.q_norm.weight", {128}, false},
         {l0 + "self_attn.k_norm.weight", {64}, false},
         {l0 + "block_sparse_moe.gate.weight", {8, 64}, false},
         {l0 + "block_sparse_moe.e_score_correction_bias", {8}, false},
         {l0 + "block_sparse_moe.experts.0.w1.weight", {32, 64}, true},
         {l0 + "block_sparse_moe.experts.0.w2.weight", {64, 32}, true}});
    x.absent = {l0 + "self_attn.q_proj.bias", l0 + "mlp.gate.weight"};
  } else if (arch == "gpt_oss") {
    add({{l0 + "self_attn.q_proj.weight", {128, 64}, true},
         {l0 + "self_attn.q_proj.bias", {128}, false},
         {l0 + "self_attn.o_proj.bias", {64}, false},
         {l0 + "self_attn.sinks", {4}, false},
         {l0 + "mlp.router.weight", {8, 64}, false},
         {l0 + "mlp.router.bias", {8}, false},
         {l0 + "mlp.experts.gate_up_proj", {8, 64, 64}, false},  // stacked, not nn.Linear
         {l0 + "mlp.experts.gate_up_proj_bias", {8, 64}, false},
         {l0 + "mlp.experts.down_proj", {8, 32, 64}, false},
         {l0 + "mlp.experts.down_proj_bias", {8, 64}, false}});
    x.absent = {l0 + "mlp.gate.weight", l0 + "self_attn.q_norm.weight"};
  } else if (arch == "llama") {
    add({{l0 + "self_attn.q_proj.weight", {128, 64}, true},
         {l0 + "self_attn.v_proj.weight", {64, 64}, true},
         {l0 + "mlp.gate_proj.weight", {128, 64}, true},
         {l0 + "mlp.down_proj.weight", {64, 128}, true}});
    x.absent = {l0 + "self_attn.q_norm.weight", l0 + "self_attn.q_proj.bias"};
  } else if (arch == "qwen3") {
    add({{l0 + "self_attn.q_proj.weight", {128, 64}, true},
         {l0 + "self_attn.q_norm.weight", {32}, false},
         {l0 + "mlp.up_proj.weight", {128, 64}, true}});
    x.absent = {"lm_head.weight"};  // tie_word_embeddings
  }
  return x;
}

std::vector<int64_t> BlockScaleShape(std::vector<int64_t> shape) {
  size_t n = shape.size();
  shape[n - 2] = (shape[n - 2] + 127) / 128;
  shape[n - 1] = (shape[n - 1] + 127) / 128;
  return shape;
}

// ---- Layout, per architecture x dtype ----------------------------------------------------------

class MakeModelLayoutTest
    : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(MakeModelLayoutTest, TinyPresetHasTheHuggingFaceTensors) {
  const auto& [arch, dtype] = GetParam();
  MakeModelResult r = Make(arch, dtype, 7, "layout_" + arch + "_" + dtype);
  ASSERT_FALSE(r.out_dir.empty());
  std::map<std::string, StoredTensor> stored = ReadCheckpoint(r.out_dir);
  const Layout layout = ExpectedLayout(arch);
  ASSERT_FALSE(layout.absent.empty());
  for (const Expected& e : layout.present) {
    auto it = stored.find(e.name);
    ASSERT_NE(it, stored.end()) << arch << " lacks " << e.name;
    EXPECT_EQ(it->second.shape, e.shape) << e.name;
    std::string want = dtype == "f32" ? "F32" : "BF16";
    if (dtype == "fp8" && e.linear) want = "F8_E4M3";
    if (e.name.find("e_score_correction_bias") != std::string::npos) want = "F32";
    EXPECT_EQ(it->second.dtype, want) << e.name;
    auto scale = stored.find(e.name + "_scale_inv");
    if (dtype == "fp8" && e.linear) {
      ASSERT_NE(scale, stored.end()) << e.name << "_scale_inv";
      EXPECT_EQ(scale->second.dtype, "F32");
      EXPECT_EQ(scale->second.shape, BlockScaleShape(e.shape)) << e.name;
    } else {
      EXPECT_EQ(scale, stored.end()) << e.name << " must not be quantised";
    }
  }
  for (const std::string& name : layout.absent) {
    EXPECT_EQ(stored.count(name), 0u) << arch << " must not have " << name;
  }
  // Every layer is complete: layer 3 has as many tensors as layer 2 (all MoE or all dense).
  int layer2 = 0, layer3 = 0;
  for (const auto& [name, t] : stored) {
    layer2 += name.rfind("model.layers.2.", 0) == 0;
    layer3 += name.rfind("model.layers.3.", 0) == 0;
  }
  EXPECT_GT(layer3, 0);
  EXPECT_EQ(layer2, layer3);
  EXPECT_EQ(stored.count("model.layers.4.input_layernorm.weight"), 0u);
  // The project's checkpoint reader sees the same tensors.
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(r.out_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->TensorNames().size(), stored.size());
  for (const Expected& e : layout.present) {
    absl::StatusOr<const TensorInfo*> info = (*ckpt)->Info(e.name);
    ASSERT_TRUE(info.ok()) << e.name;
    EXPECT_EQ(std::vector<int64_t>((*info)->shape.begin(), (*info)->shape.end()), e.shape);
  }
}

TEST_P(MakeModelLayoutTest, ConfigNamesTheArchitectureAndDtype) {
  const auto& [arch, dtype] = GetParam();
  MakeModelResult r = Make(arch, dtype, 1, "config_" + arch + "_" + dtype);
  json c = ReadJson(fs::path(r.out_dir) / "config.json");
  EXPECT_EQ(c["model_type"], arch);
  ASSERT_TRUE(c["architectures"].is_array());
  EXPECT_EQ(c["torch_dtype"], dtype == "f32" ? "float32" : "bfloat16");
  EXPECT_EQ(c["vocab_size"], 512);
  EXPECT_GE(c["num_hidden_layers"].get<int>(), 4);
  if (dtype == "fp8") {
    json q = c["quantization_config"];
    EXPECT_EQ(q["quant_method"], "fp8");
    EXPECT_EQ(q["fmt"], "e4m3");
    EXPECT_EQ(q["activation_scheme"], "dynamic");
    EXPECT_EQ(q["weight_block_size"], json::array({128, 128}));
  } else {
    EXPECT_FALSE(c.contains("quantization_config"));
  }
  json g = ReadJson(fs::path(r.out_dir) / "generation_config.json");
  EXPECT_TRUE(g.contains("eos_token_id"));
#ifdef TESSERA_HAVE_MODEL_CONFIG
  absl::StatusOr<ModelConfig> loaded = LoadModelConfig(r.out_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(ValidateModelConfig(*loaded).ok()) << ValidateModelConfig(*loaded);
  EXPECT_EQ(loaded->model_type, arch);
  EXPECT_EQ(loaded->hidden_size, c["hidden_size"].get<int64_t>());
  EXPECT_EQ(loaded->num_hidden_layers, c["num_hidden_layers"].get<int>());
  EXPECT_EQ(loaded->vocab_size, 512);
  EXPECT_EQ(loaded->is_moe(), arch != "llama" && arch != "qwen3");
  EXPECT_EQ(loaded->quantization.fp8, dtype == "fp8");
  EXPECT_EQ(loaded->NumParameters(), r.num_parameters);
#endif
}

TEST_P(MakeModelLayoutTest, SameSeedIsByteIdenticalOtherSeedDiffers) {
  const auto& [arch, dtype] = GetParam();
  MakeModelResult a = Make(arch, dtype, 11, "det_a_" + arch + dtype);
  MakeModelResult b = Make(arch, dtype, 11, "det_b_" + arch + dtype);
  MakeModelResult c = Make(arch, dtype, 12, "det_c_" + arch + dtype);
  const std::string file = "model.safetensors";
  std::string da = ReadFile(fs::path(a.out_dir) / file);
  ASSERT_GT(da.size(), 1000u);
  EXPECT_TRUE(da == ReadFile(fs::path(b.out_dir) / file));
  EXPECT_TRUE(ReadFile(fs::path(a.out_dir) / "config.json") ==
              ReadFile(fs::path(b.out_dir) / "config.json"));
  std::string dc = ReadFile(fs::path(c.out_dir) / file);
  EXPECT_EQ(da.size(), dc.size());
  EXPECT_FALSE(da == dc);
}

INSTANTIATE_TEST_SUITE_P(
    AllArchs, MakeModelLayoutTest,
    ::testing::Combine(::testing::Values("qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3",
                                         "glm4_moe", "minimax_m2", "gpt_oss", "llama", "qwen3"),
                       ::testing::Values("f32", "bf16", "fp8")),
    [](const auto& info) {
      return std::get<0>(info.param) + "_" + std::get<1>(info.param);
    });

// ---- Values ------------------------------------------------------------------------------------

class MakeModelFp8Test : public ::testing::TestWithParam<std::string> {};

TEST_P(MakeModelFp8Test, DequantisedWeightsMatchF32Checkpoint) {
  const std::string arch = GetParam();
  MakeModelResult f = Make(arch, "f32", 5, "fp8ref_" + arch);
  MakeModelResult q = Make(arch, "fp8", 5, "fp8q_" + arch);
  std::map<std::string, StoredTensor> ft = ReadCheckpoint(f.out_dir);
  std::map<std::string, StoredTensor> qt = ReadCheckpoint(q.out_dir);
  int checked = 0;
  for (const auto& [name, t] : qt) {
    if (t.dtype != "F8_E4M3") continue;
    ASSERT_TRUE(ft.count(name)) << name;
    std::vector<float> ref = TensorF32(f.out_dir, ft.at(name));
    std::vector<float> w = TensorF32(q.out_dir, t);
    std::vector<float> s = TensorF32(q.out_dir, qt.at(name + "_scale_inv"));
    const size_t nd = t.shape.size();
    const int64_t rows = t.shape[nd - 2], cols = t.shape[nd - 1];
    const int64_t rb = (rows + 127) / 128, cb = (cols + 127) / 128;
    ASSERT_EQ(w.size(), ref.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const int64_t m = static_cast<int64_t>(i) / (rows * cols);
      const int64_t r = (static_cast<int64_t>(i) / cols) % rows, c = static_cast<int64_t>(i) % cols;
      const float deq = w[i] * s[(m * rb + r / 128) * cb + c / 128];
      num += (deq - ref[i]) * (deq - ref[i]);
      den += ref[i] * ref[i];
    }
    const double rel = std::sqrt(num / den);
    EXPECT_LT(rel, 0.05) << name;  // e4m3: 3 mantissa bits; NaN fails this comparison
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

INSTANTIATE_TEST_SUITE_P(Archs, MakeModelFp8Test,
                         ::testing::Values("deepseek_v3", "gpt_oss", "qwen3_moe"));

TEST(MakeModelValuesTest, WeightsAreWellScaledAndNormsNearOne) {
  MakeModelResult r = Make("qwen3_moe", "f32", 3, "scale");
  std::map<std::string, StoredTensor> t = ReadCheckpoint(r.out_dir);
  auto stats = [&](const std::string& name) {
    std::vector<float> v = TensorF32(r.out_dir, t.at(name));
    double s = 0, s2 = 0;
    for (float x : v) {
      EXPECT_TRUE(std::isfinite(x));
      s += x;
      s2 += double(x) * x;
    }
    double mean = s / v.size();
    return std::make_pair(mean, std::sqrt(s2 / v.size() - mean * mean));
  };
  auto [qm, qs] = stats("model.layers.0.self_attn.q_proj.weight");
  EXPECT_NEAR(qm, 0.0, 0.01);
  EXPECT_NEAR(qs, 1.0 / 8.0, 0.02);  // 1/sqrt(hidden)
  auto [nm, ns] = stats("model.layers.0.input_layernorm.weight");
  EXPECT_NEAR(nm, 1.0, 0.05);
  EXPECT_GT(ns, 0.01);
  auto [gm, gs] = stats("model.layers.0.mlp.gate.weight");
  EXPECT_GT(gs, 0.05);  // routing is not uniform
  (void)gm;
}

TEST(MakeModelValuesTest, ValueDependsOnSeedNameAndIndexOnly) {
  PlannedTensor t;
  t.name = "model.layers.0.mlp.gate.weight";
  t.scale = 1.0f;
  PlannedTensor u = t;
  u.name = "model.layers.1.mlp.gate.weight";
  EXPECT_EQ(MakeModelValue(1, t, 5), MakeModelValue(1, t, 5));
  EXPECT_NE(MakeModelValue(1, t, 5), MakeModelValue(2, t, 5));
  EXPECT_NE(MakeModelValue(1, t, 5), MakeModelValue(1, u, 5));
  EXPECT_NE(MakeModelValue(1, t, 5), MakeModelValue(1, t, 6));
  double s = 0, s2 = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    double v = MakeModelValue(9, t, i);
    s += v;
    s2 += v * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.02);
  EXPECT_NEAR(s2 / n, 1.0, 0.03);
}

// ---- Sharding ----------------------------------------------------------------------------------

TEST(MakeModelShardTest, LargeModelsAreShardedWithAnIndex) {
  MakeModelOptions o;
  o.arch = "mixtral";
  o.out_dir = testing::MakeTempDir("shard");
  o.max_shard_bytes = 200 * 1024;
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(fs::exists(fs::path(o.out_dir) / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "model.safetensors"));
  json index = ReadJson(fs::path(o.out_dir) / "model.safetensors.index.json");
  std::map<std::string, StoredTensor> stored = ReadCheckpoint(o.out_dir);
  EXPECT_EQ(index["weight_map"].size(), stored.size());
  int64_t total = 0;
  std::map<std::string, bool> files;
  for (const auto& [name, t] : stored) {
    EXPECT_EQ(index["weight_map"][name], t.file) << name;
    total += static_cast<int64_t>(t.end - t.begin);
    files[t.file] = true;
    EXPECT_LE(fs::file_size(fs::path(o.out_dir) / t.file), 200u * 1024 + 64 * 1024) << t.file;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(total, r->bytes);
  ASSERT_GT(files.size(), 2u);
  const size_t n = files.size();
  EXPECT_TRUE(files.count(absl::StrFormat("model-00001-of-%05d.safetensors", n)));
  EXPECT_TRUE(files.count(absl::StrFormat("model-%05d-of-%05d.safetensors", n, n)));
}

TEST(MakeModelShardTest, ShardedBytesEqualSingleFileBytes) {
  MakeModelOptions o;
  o.arch = "qwen3";
  o.seed = 4;
  o.out_dir = testing::MakeTempDir("shard_eq_a");
  o.max_shard_bytes = 100 * 1024;
  ASSERT_TRUE(MakeModel(o).ok());
  MakeModelResult single = Make("qwen3", "bf16", 4, "shard_eq_b");
  std::map<std::string, StoredTensor> a = ReadCheckpoint(o.out_dir);
  std::map<std::string, StoredTensor> b = ReadCheckpoint(single.out_dir);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : b) {
    ASSERT_TRUE(a.count(name)) << name;
    EXPECT_TRUE(TensorBytes(o.out_dir, a.at(name)) == TensorBytes(single.out_dir, t)) << name;
  }
}

// ---- Presets, --from-config, options -----------------------------------------------------------

TEST(MakeModelPresetTest, BenchIsTheQwen3MoeShape) {
  MakeModelOptions o;
  o.arch = "qwen3_moe";
  o.preset = "bench";
  absl::StatusOr<json> c = BuildMakeModelConfig(o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)["hidden_size"], 2048);
  EXPECT_EQ((*c)["num_hidden_layers"], 16);
  EXPECT_EQ((*c)["num_experts"], 32);
  EXPECT_EQ((*c)["num_experts_per_tok"], 8);
  EXPECT_EQ((*c)["vocab_size"], 151936);
  absl::StatusOr<std::vector<PlannedTensor>> t = PlanTensors(*c, DType::kBF16);
  ASSERT_TRUE(t.ok());
  int64_t params = 0;
  for (const PlannedTensor& p : *t) {
    int64_t n = 1;
    for (int64_t d : p.shape) n *= d;
    params += n;
  }
  EXPECT_NEAR(params / 1e9, 3.34, 0.01);
}

TEST(MakeModelPresetTest, BenchForOtherArchsIsAnError) {
  MakeModelOptions o;
  o.arch = "mixtral";
  o.preset = "bench";
  absl::StatusOr<json> c = BuildMakeModelConfig(o);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("qwen3_moe"), std::string::npos);
}

TEST(MakeModelPresetTest, SmallPresetIsAFewHundredMegabytes) {
  for (const std::string& arch : MakeModelArchitectures()) {
    MakeModelOptions o;
    o.arch = arch;
    o.preset = "small";
    absl::StatusOr<json> c = BuildMakeModelConfig(o);
    ASSERT_TRUE(c.ok()) << arch;
    absl::StatusOr<std::vector<PlannedTensor>> t = PlanTensors(*c, DType::kBF16);
    ASSERT_TRUE(t.ok()) << arch;
    int64_t bytes = 0;
    for (const PlannedTensor& p : *t) {
      int64_t n = 2;
      for (int64_t d : p.shape) n *= d;
      bytes += n;
    }
    EXPECT_GT(bytes, 60e6) << arch;
    EXPECT_LT(bytes, 400e6) << arch;
  }
}

TEST(MakeModelPresetTest, DeepseekTinyHasGroupsSharedExpertsAndDenseFirstLayer) {
  MakeModelOptions o;
  o.arch = "deepseek_v3";
  absl::StatusOr<json> c = BuildMakeModelConfig(o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)["n_group"], 4);
  EXPECT_EQ((*c)["topk_group"], 2);
  EXPECT_EQ((*c)["first_k_dense_replace"], 1);
  EXPECT_EQ((*c)["n_shared_experts"], 1);
  EXPECT_EQ((*c)["scoring_func"], "sigmoid");
  EXPECT_EQ((*c)["topk_method"], "noaux_tc");
  EXPECT_EQ((*c)["rope_scaling"]["type"], "yarn");
  EXPECT_TRUE((*c)["rope_scaling"].contains("mscale_all_dim"));
  EXPECT_EQ((*c)["n_routed_experts"].get<int>() % 4, 0);
}

TEST(MakeModelPresetTest, GptOssTinyAlternatesSlidingAndFullLayers) {
  MakeModelOptions o;
  o.arch = "gpt_oss";
  absl::StatusOr<json> c = BuildMakeModelConfig(o);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ((*c)["layer_types"].size(), 4u);
  EXPECT_EQ((*c)["layer_types"][0], "sliding_attention");
  EXPECT_EQ((*c)["layer_types"][1], "full_attention");
  EXPECT_EQ((*c)["rope_scaling"]["rope_type"], "yarn");
  EXPECT_TRUE((*c).contains("swiglu_limit"));
  EXPECT_TRUE((*c)["sliding_window"].is_number());
}

json ScaledConfig(const std::string& model, int64_t layers, int64_t experts, int64_t hidden) {
  MakeModelOptions o;
  o.from_config = testing::TestDataDir() + "/configs/" + model + "/config.json";
  o.layers = layers;
  o.experts = experts;
  o.hidden = hidden;
  absl::StatusOr<json> c = BuildMakeModelConfig(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : json();
}

TEST(MakeModelFromConfigTest, DeepseekV3KeepsItsStructure) {
  json c = ScaledConfig("deepseek-ai__DeepSeek-V3", 4, 16, 64);
  EXPECT_EQ(c["model_type"], "deepseek_v3");
  EXPECT_EQ(c["hidden_size"], 64);
  EXPECT_EQ(c["num_hidden_layers"], 4);
  EXPECT_EQ(c["n_routed_experts"], 16);
  EXPECT_EQ(c["first_k_dense_replace"], 3);
  EXPECT_EQ(c["n_group"], 8);  // 16 experts in 8 groups of 2
  EXPECT_EQ(c["topk_group"], 4);
  EXPECT_EQ(c["num_experts_per_tok"], 8);
  EXPECT_EQ(c["scoring_func"], "sigmoid");
  EXPECT_EQ(c["topk_method"], "noaux_tc");
  EXPECT_EQ(c["routed_scaling_factor"], 2.5);
  EXPECT_EQ(c["rope_scaling"]["type"], "yarn");
  EXPECT_EQ(c["num_nextn_predict_layers"], 0);
  EXPECT_FALSE(c.contains("quantization_config"));
  EXPECT_GT(c["q_lora_rank"].get<int>(), 0);
  EXPECT_GT(c["kv_lora_rank"].get<int>(), 0);
  EXPECT_EQ(c["qk_rope_head_dim"].get<int>() * 2, c["qk_nope_head_dim"].get<int>());
  EXPECT_EQ(c["vocab_size"], 129280);
  absl::StatusOr<std::vector<PlannedTensor>> t = PlanTensors(c, DType::kBF16);
  ASSERT_TRUE(t.ok()) << t.status();
  std::map<std::string, bool> names;
  for (const PlannedTensor& p : *t) names[p.name] = true;
  EXPECT_TRUE(names.count("model.layers.2.mlp.down_proj.weight"));  // dense: first 3
  EXPECT_TRUE(names.count("model.layers.3.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(names.count("model.layers.3.mlp.experts.15.up_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.3.mlp.shared_experts.up_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"));
  EXPECT_FALSE(names.count("model.layers.2.mlp.gate.weight"));
}

TEST(MakeModelFromConfigTest, GroupCountFollowsTheExpertCount) {
  json c = ScaledConfig("deepseek-ai__DeepSeek-V3", 2, 12, 64);
  const int experts = c["n_routed_experts"], groups = c["n_group"], topk_group = c["topk_group"];
  EXPECT_EQ(experts % groups, 0);
  EXPECT_GE(experts / groups, 2);
  EXPECT_LE(topk_group, groups);
  EXPECT_GE(topk_group * (experts / groups), c["num_experts_per_tok"].get<int>());
  EXPECT_LE(c["first_k_dense_replace"].get<int>(), 2);
}

TEST(MakeModelFromConfigTest, Qwen3MoeKeepsItsStructure) {
  json c = ScaledConfig("Qwen__Qwen3-30B-A3B", 3, 8, 128);
  EXPECT_EQ(c["model_type"], "qwen3_moe");
  EXPECT_EQ(c["num_hidden_layers"], 3);
  EXPECT_EQ(c["num_experts"], 8);
  EXPECT_EQ(c["num_experts_per_tok"], 8);
  EXPECT_EQ(c["head_dim"], 128);  // kept: heads * head_dim != hidden as in the real model
  EXPECT_EQ(c["num_attention_heads"].get<int>() / c["num_key_value_heads"].get<int>(), 8);
  EXPECT_EQ(c["moe_intermediate_size"], 48);  // 768 * 128 / 2048
  EXPECT_EQ(c["norm_topk_prob"], true);
  EXPECT_EQ(c["max_window_layers"], 3);
  EXPECT_EQ(c["vocab_size"], 151936);
}

// transformers' in-tree MiniMaxM2Config reads partial RoPE only from partial_rotary_factor, the
// releases only state the legacy rotary_dim: make-model writes both, consistently.
TEST(MakeModelFromConfigTest, MiniMaxM2StatesPartialRotaryFactorToo) {
  json c = ScaledConfig("MiniMaxAI__MiniMax-M2.7", 3, 8, 64);
  ASSERT_TRUE(c.contains("partial_rotary_factor"));
  EXPECT_DOUBLE_EQ(c["partial_rotary_factor"].get<double>(),
                   c["rotary_dim"].get<double>() / c["head_dim"].get<double>());
  EXPECT_DOUBLE_EQ(c["partial_rotary_factor"].get<double>(), 0.5);
  MakeModelOptions o;
  o.arch = "minimax_m2";
  absl::StatusOr<json> tiny = BuildMakeModelConfig(o);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_DOUBLE_EQ((*tiny)["partial_rotary_factor"].get<double>(), 0.5);
}

TEST(MakeModelFromConfigTest, AllRealConfigsScaleAndPlan) {
  for (const auto& entry : fs::directory_iterator(testing::TestDataDir() + "/configs")) {
    if (!fs::exists(entry.path() / "config.json")) continue;
    json c = ScaledConfig(entry.path().filename().string(), 2, 8, 64);
    ASSERT_TRUE(c.is_object()) << entry.path();
    absl::StatusOr<std::vector<PlannedTensor>> t = PlanTensors(c, DType::kF8E4M3);
    EXPECT_TRUE(t.ok()) << entry.path() << ": " << t.status();
#ifdef TESSERA_HAVE_MODEL_CONFIG
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(c, entry.path().string());
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(ValidateModelConfig(*parsed).ok()) << ValidateModelConfig(*parsed);
    EXPECT_EQ(parsed->num_hidden_layers, 2);
    EXPECT_EQ(parsed->hidden_size, 64);
    if (parsed->is_moe()) {
      EXPECT_EQ(parsed->num_experts, 8) << entry.path();
    }
    if (t.ok()) {
      int64_t params = 0;
      for (const PlannedTensor& p : *t) {
        if (p.name.size() > 10 && p.name.compare(p.name.size() - 10, 10, "_scale_inv") == 0) continue;
        int64_t n = 1;
        for (int64_t d : p.shape) n *= d;
        params += n;
      }
      EXPECT_EQ(parsed->NumParameters(), params) << entry.path();
    }
#endif
    if (c.contains("layer_types")) {
      EXPECT_EQ(c["layer_types"].size(), 2u);
    }
  }
}

TEST(MakeModelFromConfigTest, WritesACheckpointFromAScaledConfig) {
  MakeModelOptions o;
  o.from_config = testing::TestDataDir() + "/configs/openai__gpt-oss-20b/config.json";
  o.layers = 2;
  o.experts = 4;
  o.hidden = 64;
  o.out_dir = testing::MakeTempDir("from_config_write");
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->arch, "gpt_oss");
  std::map<std::string, StoredTensor> t = ReadCheckpoint(o.out_dir);
  ASSERT_TRUE(t.count("model.layers.1.mlp.experts.gate_up_proj"));
  EXPECT_EQ(t["model.layers.1.mlp.experts.gate_up_proj"].shape[0], 4);
  json c = ReadJson(fs::path(o.out_dir) / "config.json");
  EXPECT_FALSE(c.contains("quantization_config"));  // mxfp4 of the release is not written
  EXPECT_EQ(c["num_experts_per_tok"], 4);
}

TEST(MakeModelTokenizerTest, VocabAndSpecialIdsComeFromTokenizerJson) {
  MakeModelOptions o;
  o.arch = "qwen3_moe";
  o.tokenizer_dir = testing::TestDataDir() + "/tokenizers/qwen3";
  o.out_dir = testing::MakeTempDir("tok_qwen3");
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_TRUE(r.ok()) << r.status();
  json c = ReadJson(fs::path(o.out_dir) / "config.json");
  json tok = ReadJson(fs::path(o.tokenizer_dir) / "tokenizer.json");
  int64_t max_id = 0;
  for (auto it = tok["model"]["vocab"].begin(); it != tok["model"]["vocab"].end(); ++it) {
    max_id = std::max<int64_t>(max_id, it.value().get<int64_t>());
  }
  for (const json& t : tok["added_tokens"]) max_id = std::max<int64_t>(max_id, t["id"].get<int64_t>());
  EXPECT_EQ(c["vocab_size"], max_id + 1);
  EXPECT_EQ(c["eos_token_id"], 151645);  // <|im_end|> in tokenizer_config.json
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "tokenizer_config.json"));
  std::map<std::string, StoredTensor> t = ReadCheckpoint(o.out_dir);
  EXPECT_EQ(t["model.embed_tokens.weight"].shape[0], max_id + 1);
  EXPECT_EQ(t["lm_head.weight"].shape[0], max_id + 1);
}

TEST(MakeModelTokenizerTest, SentencePieceModelGivesItsSize) {
  MakeModelOptions o;
  o.arch = "mixtral";
  o.tokenizer_dir = testing::TestDataDir() + "/tokenizers/mistral_v1";
  o.out_dir = testing::MakeTempDir("tok_spm");
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_TRUE(r.ok()) << r.status();
  json c = ReadJson(fs::path(o.out_dir) / "config.json");
  EXPECT_EQ(c["vocab_size"], 32000);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "tokenizer.model"));
}

// Greedy decoding of the tiny random models is not stuck on one token (needs `tessera generate`).
class MakeModelGreedyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MakeModelGreedyTest, GreedyDecodingIsNotDegenerate) {
  const std::string arch = GetParam();
  const std::string bin = testing::TesseraBinary();
  if (std::system((bin + " generate --help > /dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "tessera generate is not available";
  }
  MakeModelResult r = Make(arch, "bf16", 0, "greedy_" + arch);
  const std::string out = testing::MakeTempDir("greedy_out_" + arch) + "/gen.json";
  std::string cmd = bin + " generate --model " + r.out_dir +
                    " --prompt-ids 5,17,42 --max-tokens 16 --temperature 0 --json > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  json j = ReadJson(out);
  std::map<int64_t, int> distinct;
  for (const json& id : j["output_ids"]) distinct[id.get<int64_t>()]++;
  EXPECT_GE(distinct.size(), 4u) << j.dump();
}

INSTANTIATE_TEST_SUITE_P(AllArchs, MakeModelGreedyTest,
                         ::testing::Values("qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3",
                                           "glm4_moe", "minimax_m2", "gpt_oss", "llama",
                                           "qwen3"));

TEST(MakeModelErrorTest, UnknownArchListsValidOnes) {
  MakeModelOptions o;
  o.arch = "gpt2";
  o.out_dir = testing::MakeTempDir("bad_arch");
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("deepseek_v3"), std::string::npos);
  EXPECT_NE(r.status().message().find("gpt2"), std::string::npos);
}

TEST(MakeModelErrorTest, NonEmptyOutNeedsForce) {
  MakeModelOptions o;
  o.arch = "llama";
  o.out_dir = testing::MakeTempDir("nonempty");
  ASSERT_TRUE(MakeModel(o).ok());
  absl::StatusOr<MakeModelResult> again = MakeModel(o);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("--force"), std::string::npos);
  o.force = true;
  EXPECT_TRUE(MakeModel(o).ok());
}

TEST(MakeModelErrorTest, BadDtypeIsRejected) {
  MakeModelOptions o;
  o.arch = "llama";
  o.dtype = "int4";
  o.out_dir = testing::MakeTempDir("bad_dtype");
  EXPECT_FALSE(MakeModel(o).ok());
}

// ---- MXFP4 (the gpt-oss release format) --------------------------------------------------------

// e2m1 code -> value, as transformers' FP4_VALUES (integrations/mxfp4.py).
constexpr float kFp4Values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Dequantises "<base>_blocks" [E, R, G, 16] / "<base>_scales" [E, R, G] as transformers'
// _convert_moe_packed_tensors does, before its final transpose: [E, R, G * 32].
std::vector<float> DequantizeMxfp4(const fs::path& dir, const StoredTensor& blocks,
                                   const StoredTensor& scales) {
  const std::string b = TensorBytes(dir, blocks), s = TensorBytes(dir, scales);
  std::vector<float> out(b.size() * 2);
  for (size_t i = 0; i < b.size(); ++i) {
    const uint8_t byte = static_cast<uint8_t>(b[i]);
    const int exp = static_cast<int>(static_cast<uint8_t>(s[i / 16])) - 127;
    out[2 * i] = std::ldexp(kFp4Values[byte & 0xF], exp);
    out[2 * i + 1] = std::ldexp(kFp4Values[byte >> 4], exp);
  }
  return out;
}

MakeModelResult MakeGptOss(const std::string& dtype, uint64_t seed, const std::string& dir) {
  return Make("gpt_oss", dtype, seed, dir);
}

TEST(MakeModelMxfp4Test, WritesTheReleaseTensorsAndNothingElseChanges) {
  MakeModelResult q = MakeGptOss("mxfp4", 11, "mx_layout");
  MakeModelResult b = MakeGptOss("bf16", 11, "mx_layout_bf16");
  std::map<std::string, StoredTensor> qt = ReadCheckpoint(q.out_dir);
  std::map<std::string, StoredTensor> bt = ReadCheckpoint(b.out_dir);
  // Tiny gpt-oss: 8 experts, hidden 64, expert width 32.
  for (int l = 0; l < 4; ++l) {
    const std::string x = absl::StrFormat("model.layers.%d.mlp.experts.", l);
    const std::map<std::string, std::pair<std::string, std::vector<int64_t>>> want = {
        {x + "gate_up_proj_blocks", {"U8", {8, 64, 2, 16}}},
        {x + "gate_up_proj_scales", {"U8", {8, 64, 2}}},
        {x + "gate_up_proj_bias", {"BF16", {8, 64}}},
        {x + "down_proj_blocks", {"U8", {8, 64, 1, 16}}},
        {x + "down_proj_scales", {"U8", {8, 64, 1}}},
        {x + "down_proj_bias", {"BF16", {8, 64}}}};
    for (const auto& [name, dt] : want) {
      ASSERT_TRUE(qt.count(name)) << name;
      EXPECT_EQ(qt[name].dtype, dt.first) << name;
      EXPECT_EQ(qt[name].shape, dt.second) << name;
    }
    EXPECT_FALSE(qt.count(x + "gate_up_proj")) << l;
    EXPECT_FALSE(qt.count(x + "down_proj")) << l;
  }
  // Every other tensor is the bf16 checkpoint's, byte for byte.
  int same = 0;
  for (const auto& [name, t] : bt) {
    if (absl::EndsWith(name, "experts.gate_up_proj") || absl::EndsWith(name, "experts.down_proj")) {
      continue;
    }
    ASSERT_TRUE(qt.count(name)) << name;
    EXPECT_EQ(TensorBytes(q.out_dir, qt[name]), TensorBytes(b.out_dir, t)) << name;
    ++same;
  }
  EXPECT_EQ(static_cast<size_t>(same) + 4 * 4, qt.size());
  EXPECT_EQ(q.num_parameters, b.num_parameters);  // scales are no parameters
}

TEST(MakeModelMxfp4Test, ConfigStatesTheReleaseQuantizationConfig) {
  MakeModelResult q = MakeGptOss("mxfp4", 1, "mx_config");
  json c = ReadJson(fs::path(q.out_dir) / "config.json");
  json real = ReadJson(testing::TestDataDir() + "/configs/openai__gpt-oss-20b/config.json");
  EXPECT_EQ(c["quantization_config"], real["quantization_config"]);
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
#ifdef TESSERA_HAVE_MODEL_CONFIG
  absl::StatusOr<ModelConfig> loaded = LoadModelConfig(q.out_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->quantization.mxfp4);
#endif
}

// The stored blocks are the f32 checkpoint's expert values (transposed to [out, in] rows),
// each block scaled by 2^(floor(log2 amax) - 2) and rounded to the nearest e2m1 value.
TEST(MakeModelMxfp4Test, DequantisedExpertsAreTheNearestMxfp4OfTheF32Values) {
  MakeModelResult q = MakeGptOss("mxfp4", 5, "mx_values");
  MakeModelResult f = MakeGptOss("f32", 5, "mx_values_f32");
  std::map<std::string, StoredTensor> qt = ReadCheckpoint(q.out_dir);
  std::map<std::string, StoredTensor> ft = ReadCheckpoint(f.out_dir);
  int checked = 0;
  for (const std::string& base : {"model.layers.0.mlp.experts.gate_up_proj",
                                  "model.layers.3.mlp.experts.down_proj"}) {
    const StoredTensor& blocks = qt.at(base + "_blocks");
    const std::vector<float> deq = DequantizeMxfp4(q.out_dir, blocks, qt.at(base + "_scales"));
    const std::string scales = TensorBytes(q.out_dir, qt.at(base + "_scales"));
    const std::vector<float> ref = TensorF32(f.out_dir, ft.at(base));  // [E, in, out]
    const int64_t experts = blocks.shape[0], out = blocks.shape[1];
    const int64_t in = blocks.shape[2] * 32;
    ASSERT_EQ(static_cast<int64_t>(deq.size()), experts * out * in);
    double num = 0, den = 0;
    for (int64_t e = 0; e < experts; ++e) {
      for (int64_t r = 0; r < out; ++r) {
        for (int64_t g = 0; g < in / 32; ++g) {
          const int exp = static_cast<uint8_t>(scales[(e * out + r) * (in / 32) + g]) - 127;
          float amax = 0;
          for (int64_t j = 0; j < 32; ++j) {
            amax = std::max(amax, std::fabs(ref[(e * in + g * 32 + j) * out + r]));
          }
          // The shared exponent puts amax in [4, 8) x 2^exp (e2m1's largest binade).
          EXPECT_GE(amax, std::ldexp(4.0f, exp)) << base;
          EXPECT_LT(amax, std::ldexp(8.0f, exp)) << base;
          for (int64_t j = 0; j < 32; ++j) {
            const float v = ref[(e * in + g * 32 + j) * out + r];
            const float d = deq[(e * out + r) * in + g * 32 + j];
            // No e2m1 value of this block is strictly closer to v than the stored one.
            for (float c : kFp4Values) {
              ASSERT_LE(std::fabs(d - v), std::fabs(std::ldexp(c, exp) - v) + 1e-9f)
                  << base << " e" << e << " r" << r << " col " << g * 32 + j;
            }
            num += (d - v) * (d - v);
            den += v * v;
          }
        }
      }
    }
    EXPECT_LT(std::sqrt(num / den), 0.2) << base;  // 1 mantissa bit; NaN fails this
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(MakeModelMxfp4Test, BlockQuantiserRoundsTiesToEvenAndSaturates) {
  float v[32] = {};
  uint8_t codes[32];
  // amax 6 -> floor(log2 6) - 2 = 0: unit scale, biased 127.
  const float in[] = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -0.25f, -5.5f, 0.3f};
  const uint8_t want[] = {7, 0, 2, 2, 4, 4, 6, 6, 8, 15, 1};
  std::copy(std::begin(in), std::end(in), v);
  EXPECT_EQ(QuantizeMxfp4Block(v, codes), 127);
  for (size_t j = 0; j < std::size(want); ++j) EXPECT_EQ(codes[j], want[j]) << in[j];
  EXPECT_EQ(codes[31], 0);
  // amax 7.9 stays in the binade [4, 8): 7.9 saturates to 6.
  v[0] = 7.9f;
  EXPECT_EQ(QuantizeMxfp4Block(v, codes), 127);
  EXPECT_EQ(codes[0], 7);
  // amax 0.1 -> floor(log2 0.1) - 2 = -6: 0.1 * 64 = 6.4 -> 6, -0.05 * 64 = -3.2 -> -3.
  float small[32] = {0.1f, -0.05f};
  EXPECT_EQ(QuantizeMxfp4Block(small, codes), 127 - 6);
  EXPECT_EQ(codes[0], 7);
  EXPECT_EQ(codes[1], 8 | 5);
  float zero[32] = {};
  EXPECT_EQ(QuantizeMxfp4Block(zero, codes), 0);  // all-zero block: the smallest scale
  EXPECT_EQ(codes[0], 0);
}

TEST(MakeModelMxfp4Test, OtherArchitecturesAreRefused) {
  MakeModelOptions o;
  o.arch = "qwen3_moe";
  o.dtype = "mxfp4";
  o.out_dir = testing::MakeTempDir("mx_qwen");
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("gpt-oss"), std::string::npos) << r.status();
}

TEST(MakeModelMxfp4Test, SizesThatAreNotWholeBlocksAreRefusedByName) {
  MakeModelOptions o;
  o.arch = "gpt_oss";
  absl::StatusOr<json> c = BuildMakeModelConfig(o);
  ASSERT_TRUE(c.ok());
  (*c)["intermediate_size"] = 48;
  const std::string dir = testing::MakeTempDir("mx_sizes");
  const std::string path = dir + "/config.json";
  std::ofstream(path) << c->dump();
  o.arch.clear();
  o.from_config = path;
  o.dtype = "mxfp4";
  o.out_dir = dir + "/out";
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'intermediate_size' is 48"), std::string::npos)
      << r.status();
  o.hidden = 80;  // scales intermediate_size too; hidden_size is named first
  r = MakeModel(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'hidden_size' is 80"), std::string::npos) << r.status();
}

TEST(MakeModelCliTest, JsonOutputDescribesTheCheckpoint) {
  const std::string dir = testing::MakeTempDir("cli") + "/model";
  const std::string out = dir + ".json";
  std::string cmd = testing::TesseraBinary() + " make-model --arch glm4_moe --seed 3 --out " +
                    dir + " --json > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  json j = ReadJson(out);
  EXPECT_EQ(j["arch"], "glm4_moe");
  EXPECT_EQ(j["out"], dir);
  EXPECT_GT(j["num_parameters"].get<int64_t>(), 100000);
  EXPECT_GT(j["bytes"].get<int64_t>(), 2 * 100000);
  bool has_weights = false;
  for (const json& f : j["files"]) has_weights |= f == "model.safetensors";
  EXPECT_TRUE(has_weights);
  std::string bad = testing::TesseraBinary() + " make-model --arch nope --out " + dir + "_x 2>/dev/null";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

}  // namespace
}  // namespace tessera
