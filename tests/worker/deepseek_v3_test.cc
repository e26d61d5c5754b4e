// Tests of worker/models/deepseek_v3.h on tiny DeepSeek-V3 / Kimi K2 checkpoints written by
// make-model (worker/make_model.h): loading in f32 and fp8, the latent KV spec, paged decode
// equal to full recomputation, absorbed == unabsorbed MLA at model level, greedy generation, and
// load errors naming the tensor at fault.
#include "worker/models/deepseek_v3.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/checkpoint/safetensors_writer.h"
#include "worker/kv_cache.h"
#include "worker/make_model.h"
#include "worker/models/model.h"

namespace tessera {
namespace {

using ::tessera::testing::MakeTempDir;
using ::tessera::testing::RelativeError;

// Writes a tiny checkpoint (deterministic for the seed) into a fresh temporary directory.
std::string TinyCheckpoint(const std::string& dtype, const std::string& from_config = "") {
  const std::string dir =
      MakeTempDir("deepseek_v3_" + dtype + (from_config.empty() ? "" : "_kimi"));
  MakeModelOptions o;
  o.arch = from_config.empty() ? "deepseek_v3" : "";
  o.out_dir = dir;
  o.preset = "tiny";
  o.seed = 7;
  o.dtype = dtype;
  o.force = true;
  if (!from_config.empty()) {
    o.from_config = from_config;
    o.layers = 3;
    o.experts = 16;
    o.hidden = 64;
  }
  absl::StatusOr<MakeModelResult> r = MakeModel(o);
  CHECK(r.ok()) << r.status();
  return dir;
}

using testing::SeqStep;
AttentionBatch MakeBatch(const std::vector<SeqStep>& seqs, int block_size) {
  return testing::MakeAttentionBatch(seqs, block_size);
}

Tensor Ids(const std::vector<int32_t>& ids) {
  return Tensor::FromVector(absl::MakeConstSpan(ids), {static_cast<int64_t>(ids.size())});
}

int32_t Argmax(const Tensor& logits, int64_t row) {
  const int64_t v = logits.dim(1);
  const float* p = logits.data<float>() + row * v;
  return static_cast<int32_t>(std::max_element(p, p + v) - p);
}

bool AllFinite(const Tensor& t) {
  const float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(p[i])) return false;
  }
  return true;
}

// Greedy generation of `steps` tokens after `prompt` with a paged cache (blocks of 4, shuffled
// block ids). Returns prompt + generated tokens; `logits_out` gets each step's logits row.
std::vector<int32_t> Generate(Model& model, const std::vector<int32_t>& prompt, int steps,
                              std::vector<Tensor>* logits_out = nullptr) {
  const int bs = 4;
  const std::vector<int32_t> blocks = {6, 2, 7, 0, 5, 3, 1, 4};
  absl::StatusOr<KvCache> cache = KvCache::Create(model.KvSpecs(), 8, bs);
  CHECK(cache.ok()) << cache.status();
  std::vector<int32_t> seq = prompt;
  Tensor logits;
  CHECK_OK(model.Forward(Ids(prompt), MakeBatch({{blocks, 0, static_cast<int>(prompt.size())}}, bs),
                         *cache, logits));
  for (int s = 0; s < steps; ++s) {
    if (logits_out) logits_out->push_back(*logits.Clone());
    seq.push_back(Argmax(logits, 0));
    if (s + 1 == steps) break;
    const int pos = static_cast<int>(seq.size()) - 1;
    CHECK_OK(model.Forward(Ids({seq.back()}), MakeBatch({{blocks, pos, 1}}, bs), *cache, logits));
  }
  return seq;
}

// Logits of every position of `seq` from one prefill in a fresh cache.
Tensor FullLogits(Model& model, const std::vector<int32_t>& seq) {
  absl::StatusOr<KvCache> cache = KvCache::Create(model.KvSpecs(), 8, 4);
  CHECK(cache.ok()) << cache.status();
  Tensor logits;
  CHECK_OK(model.ForwardAllLogits(
      Ids(seq), MakeBatch({{{0, 1, 2, 3, 4, 5, 6, 7}, 0, static_cast<int>(seq.size())}}, 4), *cache,
      logits));
  return logits;
}

const std::vector<int32_t> kPrompt = {3, 17, 254, 99, 12, 400, 7};

TEST(DeepseekV3Test, LoadsTinyF32AndDeclaresLatentKvCache) {
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(TinyCheckpoint("f32"));
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->model->config();
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
  const std::vector<LayerKvSpec> specs = m->model->KvSpecs();
  ASSERT_EQ(static_cast<int>(specs.size()), c.num_hidden_layers);
  for (const LayerKvSpec& s : specs) {
    EXPECT_EQ(s.num_kv_heads, 1);
    EXPECT_EQ(s.k_dim, c.kv_lora_rank + c.qk_rope_head_dim);
    EXPECT_EQ(s.v_dim, c.kv_lora_rank);
    EXPECT_TRUE(s.v_aliases_k);
    EXPECT_EQ(KvBytesPerToken(s), (c.kv_lora_rank + c.qk_rope_head_dim) * 4);
  }
}

TEST(DeepseekV3Test, PagedDecodeEqualsFullRecomputation) {
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(TinyCheckpoint("f32"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<Tensor> step_logits;
  const std::vector<int32_t> seq = Generate(*m->model, kPrompt, 8, &step_logits);
  ASSERT_EQ(seq.size(), kPrompt.size() + 8);
  for (int32_t t : seq) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, m->model->vocab_size());
  }
  const Tensor full = FullLogits(*m->model, seq);
  for (size_t s = 0; s < step_logits.size(); ++s) {
    const int64_t row = static_cast<int64_t>(kPrompt.size() + s) - 1;
    const Tensor ref = *full.Slice(0, row, row + 1).Clone();
    EXPECT_TRUE(AllFinite(step_logits[s]));
    EXPECT_LT(RelativeError(step_logits[s], ref), 1e-4) << "step " << s;
    EXPECT_EQ(Argmax(ref, 0), seq[kPrompt.size() + s]) << "step " << s;
  }
}

TEST(DeepseekV3Test, AbsorbedAndUnabsorbedModelsGiveTheSameLogits) {
  const std::string dir = TinyCheckpoint("f32");
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  DeepseekV3Options unabsorbed;
  unabsorbed.mla.path = MlaOptions::Path::kUnabsorbed;
  absl::StatusOr<std::unique_ptr<Model>> a = LoadDeepseekV3Model(**ckpt, *config, {});
  absl::StatusOr<std::unique_ptr<Model>> b =
      LoadDeepseekV3ModelWithOptions(**ckpt, *config, {}, unabsorbed);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const Tensor la = FullLogits(**a, kPrompt);
  const Tensor lb = FullLogits(**b, kPrompt);
  EXPECT_TRUE(AllFinite(la));
  EXPECT_LT(RelativeError(la, lb), 1e-5);
}

// An f32 copy of an fp8 checkpoint: every fp8 weight dequantised with its block scales, the
// scale tensors and quantization_config dropped. The fp8 model must compute what this one does.
std::string DequantizedCopy(const std::string& src, const std::string& name) {
  const std::string dir = MakeTempDir(name);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(src);
  CHECK(config.ok()) << config.status();
  {
    std::ifstream in(src + "/config.json");
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    CHECK(!j.is_discarded());
    j.erase("quantization_config");
    j["torch_dtype"] = "float32";
    std::ofstream(dir + "/config.json") << j.dump(2);
  }
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(src);
  CHECK(ckpt.ok()) << ckpt.status();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : (*ckpt)->TensorNames()) {
    if (absl::EndsWith(n, "_scale_inv")) continue;
    Tensor t = *(*ckpt)->Get(n);
    if (t.dtype() == DType::kF8E4M3) {
      LinearWeight w;
      w.weight = t;
      w.scale_inv = *(*ckpt)->GetAs(n + "_scale_inv", DType::kF32);
      w.block_n = config->quantization.block_n;
      w.block_k = config->quantization.block_k;
      absl::StatusOr<Tensor> deq = DequantizeLinearWeight(w, n);
      CHECK(deq.ok()) << deq.status();
      tensors.emplace_back(n, *deq);
    } else {
      tensors.emplace_back(n, *t.To(DType::kF32));
    }
  }
  SafetensorsWriter w;
  for (const auto& [n, t] : tensors) w.Declare(n, t.dtype(), t.shape());
  CHECK_OK(w.Open(dir + "/model.safetensors"));
  for (const auto& [n, t] : tensors) CHECK_OK(w.WriteTensor(n, t));
  CHECK_OK(w.Close());
  return dir;
}

TEST(DeepseekV3Test, Fp8CheckpointEqualsItsDequantisedF32Copy) {
  const std::string fp8_dir = TinyCheckpoint("fp8");
  absl::StatusOr<LoadedModel> fp8 = LoadModelFromDirectory(fp8_dir);
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_TRUE(fp8->model->config().quantization.fp8);
  absl::StatusOr<LoadedModel> deq = LoadModelFromDirectory(DequantizedCopy(fp8_dir, "ds_deq"));
  ASSERT_TRUE(deq.ok()) << deq.status();
  EXPECT_FALSE(deq->model->config().quantization.fp8);
  const Tensor a = FullLogits(*fp8->model, kPrompt);
  const Tensor b = FullLogits(*deq->model, kPrompt);
  EXPECT_TRUE(AllFinite(a));
  EXPECT_LT(RelativeError(a, b), 1e-4);
}

TEST(DeepseekV3Test, Fp8CheckpointGeneratesWithPagedDecode) {
  absl::StatusOr<LoadedModel> fp8 = LoadModelFromDirectory(TinyCheckpoint("fp8"));
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  std::vector<Tensor> step_logits;
  const std::vector<int32_t> seq = Generate(*fp8->model, kPrompt, 6, &step_logits);
  ASSERT_EQ(seq.size(), kPrompt.size() + 6);
  const Tensor full = FullLogits(*fp8->model, seq);
  for (size_t s = 0; s < step_logits.size(); ++s) {
    const int64_t row = static_cast<int64_t>(kPrompt.size() + s) - 1;
    EXPECT_LT(RelativeError(step_logits[s], *full.Slice(0, row, row + 1).Clone()), 1e-4)
        << "step " << s;
  }
}

TEST(DeepseekV3Test, KimiK2ConfigScaledDownLoadsAndGenerates) {
  const std::string kimi =
      ::tessera::testing::TestDataDir() + "/configs/moonshotai__Kimi-K2-Instruct/config.json";
  if (!std::filesystem::exists(kimi)) GTEST_SKIP() << "no " << kimi;
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(TinyCheckpoint("f32", kimi));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->model->config().family, ModelFamily::kDeepseekV3);
  EXPECT_EQ(m->model->config().n_group, 1);
  std::vector<int32_t> prompt;
  for (int32_t t : kPrompt) prompt.push_back(t % static_cast<int32_t>(m->model->vocab_size()));
  std::vector<Tensor> step_logits;
  const std::vector<int32_t> seq = Generate(*m->model, prompt, 4, &step_logits);
  const Tensor full = FullLogits(*m->model, seq);
  for (size_t s = 0; s < step_logits.size(); ++s) {
    const int64_t row = static_cast<int64_t>(prompt.size() + s) - 1;
    EXPECT_LT(RelativeError(step_logits[s], *full.Slice(0, row, row + 1).Clone()), 1e-4);
  }
}

// Copies the checkpoint in `src` to a new directory, dropping tensor `drop` or replacing it by
// a tensor of shape `reshape` (when non-empty).
std::string CopyCheckpointWith(const std::string& src, const std::string& name,
                               const std::string& drop, const Shape& reshape) {
  const std::string dir = MakeTempDir(name);
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json");
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(src);
  CHECK(ckpt.ok()) << ckpt.status();
  SafetensorsWriter w;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : (*ckpt)->TensorNames()) {
    absl::StatusOr<Tensor> t = (*ckpt)->Get(n);
    CHECK(t.ok()) << t.status();
    if (n == drop) {
      if (reshape.empty()) continue;
      tensors.emplace_back(n, *Tensor::Zeros(reshape, t->dtype()));
    } else {
      tensors.emplace_back(n, *t);
    }
  }
  for (const auto& [n, t] : tensors) w.Declare(n, t.dtype(), t.shape());
  CHECK_OK(w.Open(dir + "/model.safetensors"));
  for (const auto& [n, t] : tensors) CHECK_OK(w.WriteTensor(n, t));
  CHECK_OK(w.Close());
  return dir;
}

TEST(DeepseekV3Test, MissingKvBProjFailsNamingTheTensor) {
  const std::string dir = CopyCheckpointWith(TinyCheckpoint("f32"), "ds_missing_kvb",
                                             "model.layers.2.self_attn.kv_b_proj.weight", {});
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model.layers.2.self_attn.kv_b_proj.weight"),
            absl::string_view::npos)
      << m.status();
}

TEST(DeepseekV3Test, MisShapedKvBProjFailsNamingTheTensor) {
  const std::string src = TinyCheckpoint("f32");
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(src);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const std::string name = "model.layers.1.self_attn.kv_b_proj.weight";
  absl::StatusOr<const TensorInfo*> info = (*ckpt)->Info(name);
  ASSERT_TRUE(info.ok()) << info.status();
  Shape bad = (*info)->shape;
  bad[1] += 1;  // kv_lora_rank + 1 columns
  const std::string dir = CopyCheckpointWith(src, "ds_bad_kvb", name, bad);
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find(name), absl::string_view::npos) << m.status();
}

TEST(DeepseekV3Test, MissingCorrectionBiasFailsNamingTheTensor) {
  const std::string dir = CopyCheckpointWith(TinyCheckpoint("f32"), "ds_missing_bias",
                                             "model.layers.1.mlp.gate.e_score_correction_bias", {});
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model.layers.1.mlp.gate.e_score_correction_bias"),
            absl::string_view::npos)
      << m.status();
}

TEST(DeepseekV3Test, KvCacheWithWrongGeometryIsRejected) {
  absl::StatusOr<LoadedModel> m = LoadModelFromDirectory(TinyCheckpoint("f32"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<LayerKvSpec> specs = m->model->KvSpecs();
  for (LayerKvSpec& s : specs) s = LayerKvSpec{4, 32, 32, false};
  absl::StatusOr<KvCache> cache = KvCache::Create(specs, 4, 4);
  ASSERT_TRUE(cache.ok()) << cache.status();
  Tensor logits;
  absl::Status s = m->model->Forward(Ids({1, 2}), MakeBatch({{{0}, 0, 2}}, 4), *cache, logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("KV cache"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace tessera
