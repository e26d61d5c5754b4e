// The sharding planner and `tessera plan` on the real config.json files of the target models.
// Expected byte counts are worked out by hand below from each config (arithmetic in comments),
// independently of the planner's tensor inventory.
#include "coordinator/cluster/planner.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/checkpoint/tensor_layout.h"
#include "worker/make_model.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kGB80 = 80'000'000'000;  // "80 GB"
constexpr int64_t kGiB = int64_t{1} << 30;

ModelConfig Load(const std::string& name) {
  absl::StatusOr<ModelConfig> c =
      LoadModelConfig(testing::TestDataDir() + "/configs/" + name + "/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

PlanOptions Devices(int n, int64_t memory = kGB80) {
  PlanOptions o;
  o.devices = n;
  o.device_memory_bytes = memory;
  return o;
}

PlanOptions Layout(int tp, int dp, int pp, int ep, int64_t memory = kGB80) {
  PlanOptions o = Devices(tp * dp * pp, memory);
  o.tp = tp;
  o.dp = dp;
  o.pp = pp;
  o.ep = ep;
  return o;
}

ShardingPlan MustPlan(const ModelConfig& c, const PlanOptions& o) {
  absl::StatusOr<ShardingPlan> plan = PlanSharding(c, o);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : ShardingPlan{};
}

std::string PlanError(const ModelConfig& c, const PlanOptions& o) {
  absl::StatusOr<ShardingPlan> plan = PlanSharding(c, o);
  EXPECT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(plan.status().message());
}

// ---- Qwen3-30B-A3B (bf16) on 1 x 80 GB -----------------------------------------------------
// hidden 2048, vocab 151936, 48 layers, 32 q heads / 4 KV heads of 128, 128 experts of 768, every
// layer MoE (decoder_sparse_step 1), untied lm_head, per-head q/k norms.
constexpr int64_t kQ30Embed = 151936LL * 2048;                  // 311,164,928 params
constexpr int64_t kQ30Attn = 4096LL * 2048                     // q_proj [32*128, 2048]
                             + 2 * 512LL * 2048                // k_proj, v_proj [4*128, 2048]
                             + 2048LL * 4096                   // o_proj
                             + 2 * 128;                        // q_norm, k_norm [128]
constexpr int64_t kQ30Layer = 2 * 2048                         // input / post-attention norms
                              + kQ30Attn + 128LL * 2048        // router [128, 2048]
                              + 128 * 3 * 2048LL * 768;        // 128 experts x gate/up/down
constexpr int64_t kQ30Params = 2 * kQ30Embed + 2048 + 48 * kQ30Layer;

TEST(PlannerTest, Qwen3_30B_ParameterCountMatchesPublished) {
  const ShardingPlan plan = MustPlan(Load("Qwen__Qwen3-30B-A3B"), Devices(1));
  EXPECT_EQ(plan.num_parameters, kQ30Params);  // 30,532,122,624
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 30.5e9, 0.05e9);  // model card: 30.5B
}

TEST(PlannerTest, Qwen3_30B_OneDeviceWeightsAndKv) {
  const ShardingPlan plan = MustPlan(Load("Qwen__Qwen3-30B-A3B"), Devices(1));
  EXPECT_EQ(plan.shape.world_size(), 1);
  ASSERT_EQ(plan.ranks.size(), 1u);
  const RankPlan& r = plan.ranks[0];
  EXPECT_EQ(r.weight_bytes, 2 * kQ30Params);  // everything bf16 on the one rank
  // KV: 4 heads x 128 x (k + v) x 2 bytes x 48 layers = 98,304 bytes per token.
  EXPECT_EQ(r.kv_bytes_per_token, 4 * 128 * 2 * 2 * 48);
  // usable = 80e9 * 0.9 = 72e9; KV = 72e9 - weights.
  EXPECT_EQ(r.usable_bytes, 72'000'000'000);
  EXPECT_EQ(r.kv_bytes, 72'000'000'000 - 2 * kQ30Params);
  EXPECT_EQ(plan.max_kv_tokens, (72'000'000'000 - 2 * kQ30Params) / 98'304);
  EXPECT_EQ(plan.max_context, 40960);  // capped by max_position_embeddings
  // Sequences of 40960 tokens (2560 blocks of 16): 40960 * 98304 bytes each.
  EXPECT_EQ(plan.max_sequences, (72'000'000'000 - 2 * kQ30Params) / (40960LL * 98'304));
}

// ---- Qwen3-30B-A3B-FP8 on 1 x 80 GB ---------------------------------------------------------
// Same shapes; attention and expert projections are fp8 (1 byte) with f32 weight_scale_inv of
// ceil(out/128) x ceil(in/128); embedding, lm_head, norms and routers stay bf16.
constexpr int64_t kQ30Fp8Scales = 4 * (32 * 16      // q_proj [4096, 2048] -> [32, 16]
                                       + 4 * 16     // k_proj [512, 2048] -> [4, 16]
                                       + 4 * 16     // v_proj
                                       + 16 * 32);  // o_proj [2048, 4096] -> [16, 32]
constexpr int64_t kQ30Fp8ExpertScales = 4 * (6 * 16 + 6 * 16 + 16 * 6);  // [768,2048] x2, down
constexpr int64_t kQ30Fp8Layer = 2 * 2048 * 2                              // norms, bf16
                                 + (kQ30Attn - 256) + kQ30Fp8Scales        // fp8 attention
                                 + 256 * 2                                 // q/k norms, bf16
                                 + 128 * 2048 * 2                          // router, bf16
                                 + 128 * (3 * 2048LL * 768 + kQ30Fp8ExpertScales);
constexpr int64_t kQ30Fp8Bytes = 2 * kQ30Embed * 2 + 2048 * 2 + 48 * kQ30Fp8Layer;

TEST(PlannerTest, Qwen3_30B_Fp8OneDeviceWeights) {
  const ShardingPlan plan = MustPlan(Load("Qwen__Qwen3-30B-A3B-FP8"), Devices(1));
  ASSERT_EQ(plan.ranks.size(), 1u);
  EXPECT_EQ(plan.ranks[0].weight_bytes, kQ30Fp8Bytes);
  EXPECT_EQ(plan.num_parameters, kQ30Params);  // scales are not parameters
  EXPECT_THAT(plan.weight_format, HasSubstr("fp8"));
}

// ---- DeepSeek-V3 / R1 on 16 x 80 GB -----------------------------------------------------------
// hidden 7168, vocab 129280, 61 layers (0-2 dense, 3-60 MoE), 128 heads; MLA q_lora 1536,
// kv_lora 512, qk_nope 128, qk_rope 64, v 128; dense MLP 18432; 256 routed + 1 shared expert of
// 2048. fp8 weights with f32 scales [ceil(out/128), ceil(in/128)]; embedding / lm_head / router /
// norms bf16, e_score_correction_bias f32.
constexpr int64_t Fp8(int64_t out, int64_t in) {  // weight bytes + scale bytes
  return out * in + 4 * ((out + 127) / 128) * ((in + 127) / 128);
}
constexpr int64_t kDsEmbedBytes = 129280LL * 7168 * 2;        // 1,853,358,080 (and lm_head)
constexpr int64_t kDsNormsBytes = 2 * 7168 * 2                // input / post-attention norms
                                  + 1536 * 2 + 512 * 2;       // q_a / kv_a layernorms
constexpr int64_t kDsAttnBytes = Fp8(1536, 7168)              // q_a_proj
                                 + Fp8(128 * 192, 1536)       // q_b_proj
                                 + Fp8(512 + 64, 7168)        // kv_a_proj_with_mqa
                                 + Fp8(128 * 256, 512)        // kv_b_proj (nope + v per head)
                                 + Fp8(7168, 128 * 128);      // o_proj
constexpr int64_t kDsDenseMlp = 2 * Fp8(18432, 7168) + Fp8(7168, 18432);
constexpr int64_t kDsExpert = 2 * Fp8(2048, 7168) + Fp8(7168, 2048);  // 44,050,944
// The shared expert split over a MoE group of 16: 128 rows of gate/up, 128 columns of down.
constexpr int64_t kDsShared16 = 2 * Fp8(128, 7168) + Fp8(7168, 128);  // 2,753,184
constexpr int64_t kDsRouter = 256 * 7168 * 2 + 256 * 4;      // gate bf16 + correction bias f32

TEST(PlannerTest, DeepSeekV3_SixteenDevicesChoosesDataParallelAttentionWithExpertParallelism) {
  const ShardingPlan plan = MustPlan(Load("deepseek-ai__DeepSeek-V3"), Devices(16));
  // Policy: no PP, smallest TP that fits (1: MLA's non-expert weights are small), DP fills the
  // 16 devices, EP = tp * dp = 16 -> 16 routed experts per rank per MoE layer; the shared expert
  // is split over the 16-rank MoE group, attention and dense MLPs are whole on every rank.
  EXPECT_EQ(plan.shape.tp, 1);
  EXPECT_EQ(plan.shape.dp, 16);
  EXPECT_EQ(plan.shape.pp, 1);
  EXPECT_EQ(plan.shape.ep, 16);
  EXPECT_TRUE(plan.auto_layout);
  ASSERT_EQ(plan.ranks.size(), 16u);
  const int64_t expected = 2 * kDsEmbedBytes + 7168 * 2                  // embed, lm_head, norm
                           + 61 * (kDsNormsBytes + kDsAttnBytes)        // every layer
                           + 3 * kDsDenseMlp                            // layers 0-2
                           + 58 * (kDsRouter + kDsShared16              // shared expert
                                   + 16 * kDsExpert);                   // 256 / 16 routed
  for (const RankPlan& r : plan.ranks) {
    EXPECT_EQ(r.weight_bytes, expected) << "rank " << r.coord.rank;
    EXPECT_EQ(r.experts_per_layer, 16);
    // MLA caches (kv_lora_rank + qk_rope_head_dim) = 576 bf16 per token per layer.
    EXPECT_EQ(r.kv_bytes_per_token, 576 * 2 * 61);
  }
}

TEST(PlannerTest, DeepSeekV3_TensorParallel16SplitsHeadsAndReplicatesLatentProjections) {
  const ShardingPlan plan = MustPlan(Load("deepseek-ai__DeepSeek-V3"), Layout(16, 1, 1, 16));
  // TP 16: q_b_proj / kv_b_proj split by heads (8 per rank), o_proj by columns, q_a / kv_a
  // (latent down-projections) replicated; dense / shared MLPs column/row split (1152 / 128 rows:
  // multiples of the 128-row fp8 blocks); embedding / lm_head 129280 / 16 = 8080 rows each.
  const int64_t attn = Fp8(1536, 7168) + Fp8(8 * 192, 1536) + Fp8(576, 7168) +
                       Fp8(8 * 256, 512) + Fp8(7168, 8 * 128);
  const int64_t dense = 2 * Fp8(1152, 7168) + Fp8(7168, 1152);
  const int64_t expected = 2 * (8080LL * 7168 * 2) + 7168 * 2 + 61 * (kDsNormsBytes + attn) +
                           3 * dense + 58 * (kDsRouter + kDsShared16 + 16 * kDsExpert);
  for (const RankPlan& r : plan.ranks) EXPECT_EQ(r.weight_bytes, expected);
  // The latent cache is not split by TP: every rank caches all 576 values per token and layer.
  EXPECT_EQ(plan.ranks[5].kv_bytes_per_token, 576 * 2 * 61);
}

TEST(PlannerTest, DeepSeekV3_ParameterCountsMatchPublished) {
  const ShardingPlan plan = MustPlan(Load("deepseek-ai__DeepSeek-V3"), Devices(16));
  // "671B main model weights and 14B MTP module weights" (685B total, DeepSeek-V3 README).
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 671e9, 0.5e9);
  EXPECT_NEAR(static_cast<double>(plan.num_parameters + plan.mtp_parameters), 685e9, 1e9);
  // The MTP layer: its own embedding and head (2 x 926,679,040), eh_proj [7168, 14336], 4 norms
  // and one MoE decoder layer.
  EXPECT_GT(plan.mtp_parameters, 13e9);
  // The MTP layer is in the checkpoint but not loaded for plain decoding.
  EXPECT_FALSE(plan.load_mtp);
  EXPECT_GT(plan.checkpoint_bytes, plan.model_weight_bytes);
}

TEST(PlannerTest, DeepSeekR1_PlansLikeV3) {
  const ShardingPlan v3 = MustPlan(Load("deepseek-ai__DeepSeek-V3"), Devices(16));
  const ShardingPlan r1 = MustPlan(Load("deepseek-ai__DeepSeek-R1"), Devices(16));
  EXPECT_EQ(r1.ranks[0].weight_bytes, v3.ranks[0].weight_bytes);
  EXPECT_EQ(r1.max_sequences, v3.max_sequences);
}

TEST(PlannerTest, LoadMtpAddsTheMtpLayerToTheLastStage) {
  const ModelConfig c = Load("deepseek-ai__DeepSeek-V3");
  PlanOptions o = Layout(1, 16, 1, 16);
  const ShardingPlan without = MustPlan(c, o);
  o.load_mtp = true;
  const ShardingPlan with = MustPlan(c, o);
  // MTP layer on a rank of the tp 1 / ep 16 layout: its embedding + head (bf16), eh_proj
  // (bf16 [7168, 14336]), enorm / hnorm / shared_head.norm / 2 layer norms + MLA norms, MLA
  // attention, router, 1/16 of the shared expert and 16 routed experts.
  const int64_t mtp = 2 * kDsEmbedBytes + 7168LL * 14336 * 2 + 3 * 7168 * 2 + kDsNormsBytes +
                      kDsAttnBytes + kDsRouter + kDsShared16 + 16 * kDsExpert;
  EXPECT_EQ(with.ranks[0].weight_bytes - without.ranks[0].weight_bytes, mtp);
  EXPECT_EQ(with.ranks[0].kv_bytes_per_token, 576 * 2 * 62);
}

// ---- Kimi K2 ---------------------------------------------------------------------------------
TEST(PlannerTest, KimiK2_ParameterCountAndSixteenDevicePlan) {
  const ModelConfig c = Load("moonshotai__Kimi-K2-Instruct");
  const ShardingPlan plan = MustPlan(c, Devices(16));
  // Model card: 1T total parameters (1.04T counted with the embeddings).
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 1.03e12, 0.02e12);
  EXPECT_EQ(plan.mtp_parameters, 0);  // num_nextn_predict_layers 0
  // ~960 GiB of fp8 weights on 16 x 80 GB: every layout without PP fits the weights but none
  // holds a 131072-token sequence; the policy keeps pp = 1 and takes the layout with the most
  // KV room (tp 16: attention and embeddings split 16 ways), lowering max_model_len.
  EXPECT_EQ(plan.shape.pp, 1);
  EXPECT_EQ(plan.shape.tp, 16);
  EXPECT_TRUE(plan.max_model_len_lowered);
  EXPECT_GT(plan.max_model_len, 65536);
  EXPECT_EQ(plan.ranks[0].experts_per_layer, 384 / 16);
  // 64 MLA heads, 61 layers of 576-value latents.
  EXPECT_EQ(plan.ranks[0].kv_bytes_per_token, 576 * 2 * 61);
}

TEST(PlannerTest, KimiK2_DoesNotFitOnEightEightyGigabyteDevices) {
  const std::string error = PlanError(Load("moonshotai__Kimi-K2-Instruct"), Devices(8));
  EXPECT_THAT(error, HasSubstr("weights exceed device memory"));
  EXPECT_THAT(error, HasSubstr("short"));
  EXPECT_THAT(error, HasSubstr("use 16 or more devices"));
}

// ---- Qwen3-235B-A22B on 8 x 80 GB, --tp 8 --ep 8 --------------------------------------------------
TEST(PlannerTest, Qwen3_235B_TensorParallel8ReplicatesKvHeads) {
  const ModelConfig c = Load("Qwen__Qwen3-235B-A22B");
  const ShardingPlan plan = MustPlan(c, Layout(8, 1, 1, 8));
  // hidden 4096, 94 layers, 64 q heads / 4 KV heads of 128, 128 experts of 1536, vocab 151936.
  // TP 8: 8 q heads per rank; 4 KV heads < 8 ranks -> each rank holds one KV head (128 rows).
  const int64_t layer = 2 * 4096 * 2            // norms
                        + 1024LL * 4096 * 2     // q_proj rows of 8 heads
                        + 2 * 128LL * 4096 * 2  // k_proj, v_proj: one head each
                        + 4096LL * 1024 * 2     // o_proj columns of 8 heads
                        + 2 * 128 * 2           // q_norm, k_norm
                        + 128LL * 4096 * 2      // router
                        + 16 * 3 * 4096LL * 1536 * 2;  // 128 / 8 experts
  const int64_t expected = 2 * (151936LL / 8 * 4096 * 2) + 4096 * 2 + 94 * layer;
  for (const RankPlan& r : plan.ranks) EXPECT_EQ(r.weight_bytes, expected);
  // KV per token: one head x 128 x (k + v) x 2 bytes x 94 layers.
  EXPECT_EQ(plan.ranks[0].kv_bytes_per_token, 1 * 128 * 2 * 2 * 94);
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 235e9, 0.5e9);  // model card: 235B
}

TEST(PlannerTest, Qwen3_235B_AutoLayoutOnEightDevices) {
  const ShardingPlan plan = MustPlan(Load("Qwen__Qwen3-235B-A22B"), Devices(8));
  // tp 1 (dp 8) leaves no room for one 40960-token sequence next to 1/8 of the experts and a
  // full copy of attention + embeddings; tp 2 (dp 4, ep 8) is the smallest that does.
  EXPECT_EQ(plan.shape.tp, 2);
  EXPECT_EQ(plan.shape.dp, 4);
  EXPECT_EQ(plan.shape.ep, 8);
  EXPECT_GE(plan.max_context, 40960);
  EXPECT_EQ(plan.max_sequences, plan.max_sequences_per_replica * 4);
}

// ---- gpt-oss ---------------------------------------------------------------------------------
// hidden 2880, vocab 201088, 36 layers alternating sliding (128) / full attention, 64 q heads /
// 8 KV heads of 64 with biases, sinks, 128 MXFP4 experts of 2880.
constexpr int64_t OssLayerNonExpert(int64_t experts) {
  return 2 * 2880 * 2                        // norms
         + (4096LL * 2880 + 4096) * 2        // q_proj + bias
         + 2 * (512LL * 2880 + 512) * 2      // k, v + biases
         + (2880LL * 4096 + 2880) * 2        // o_proj + bias
         + 64 * 2                            // sinks
         + (experts * 2880 + experts) * 2;   // router + bias
}
// Per expert: gate_up 5760 x 2880 and down 2880 x 2880 weights at 4.25 bits (16 bytes of
// nibbles + 1 scale byte per 32) and bf16 biases [5760] and [2880].
constexpr int64_t kOssExpert = 5760LL * 90 * 17 + 5760 * 2 + 2880LL * 90 * 17 + 2880 * 2;

TEST(PlannerTest, GptOss120b_OneDeviceWeights) {
  const ShardingPlan plan = MustPlan(Load("openai__gpt-oss-120b"), Devices(1));
  const int64_t expected =
      2 * (201088LL * 2880 * 2) + 2880 * 2 + 36 * (OssLayerNonExpert(128) + 128 * kOssExpert);
  EXPECT_EQ(plan.ranks[0].weight_bytes, expected);  // ~65.2 GB: fits one 80 GB device
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 116.8e9, 0.1e9);  // model card
}

TEST(PlannerTest, GptOss_Mxfp4ExpertsAre4Point25BitsPerWeight) {
  const ModelConfig c = Load("openai__gpt-oss-120b");
  int64_t weights = 0, bytes = 0;
  for (const CheckpointTensor& t : CheckpointTensors(c)) {
    if (t.dtype != DType::kU8) continue;
    bytes += t.nbytes();
    weights += t.num_elements() * t.params_per_element;
  }
  EXPECT_EQ(weights, 36 * 128 * (5760LL * 2880 + 2880LL * 2880));
  EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(bytes) / static_cast<double>(weights), 4.25);
}

TEST(PlannerTest, GptOss_SlidingLayersHoldOnlyTheWindow) {
  const ModelConfig c = Load("openai__gpt-oss-120b");
  const ShardingPlan plan = MustPlan(c, Devices(1));
  const RankPlan& r = plan.ranks[0];
  // 8 KV heads x 64 x (k + v) x 2 bytes = 2048 bytes per layer; 18 of 36 layers slide.
  EXPECT_EQ(r.kv_bytes_per_token, 36 * 2048);
  EXPECT_EQ(r.kv_bytes_per_token_sliding, 18 * 2048);
  // 131072 tokens = 8192 blocks; sliding layers keep ceil(128 / 16) + 1 = 9 blocks.
  EXPECT_EQ(SequenceKvBytes(c, r, 131072, 16), 18 * 2048 * (8192 + 9) * 16LL);
  EXPECT_EQ(plan.max_context, 131072);
}

TEST(PlannerTest, Mixtral_WithoutExpertParallelismEveryExpertIsSplitOverTp) {
  const ModelConfig c = Load("mistralai__Mixtral-8x7B-v0.1");
  const ShardingPlan split = MustPlan(c, Layout(8, 1, 1, 1));
  const ShardingPlan ep = MustPlan(c, Layout(8, 1, 1, 8));
  // ep 1: each of the 8 experts keeps 14336 / 8 = 1792 rows of w1 / w3 and columns of w2 on
  // every rank: the same bytes as one whole expert per rank.
  EXPECT_EQ(split.ranks[3].weight_bytes, ep.ranks[3].weight_bytes);
  EXPECT_EQ(split.ranks[3].experts_per_layer, 8);
  const std::vector<CheckpointTensor> tensors = CheckpointTensors(c);
  const Mesh mesh = *Mesh::Create(split.shape);
  int seen = 0;
  for (const TensorSlice& s : RankTensors(c, tensors, split.shape, mesh.Coord(3))) {
    if (s.tensor->name == "model.layers.0.block_sparse_moe.experts.5.w1.weight") {
      EXPECT_EQ(s.dim, 0);
      EXPECT_EQ(s.begin, 3 * 1792);
      EXPECT_EQ(s.end, 4 * 1792);
      ++seen;
    } else if (s.tensor->name == "model.layers.0.block_sparse_moe.experts.5.w2.weight") {
      EXPECT_EQ(s.dim, 1);
      EXPECT_EQ(s.begin, 3 * 1792);
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2);
}

TEST(PlannerTest, GptOss20b_TensorParallel2SplitsMxfp4ExpertsAndKeepsRowBiasesOnRankZero) {
  const ShardingPlan plan = MustPlan(Load("openai__gpt-oss-20b"), Layout(2, 1, 1, 1));
  // TP 2: 32 q heads, 4 KV heads of 64 per rank; 32 experts each with 2880 of the 5760
  // gate_up rows (gate/up pairs) and 45 of the 90 input blocks of down; o_proj and the expert
  // down biases only on TP rank 0.
  const int64_t attn = (2048LL * 2880 + 2048) * 2 + 2 * (256LL * 2880 + 256) * 2 +
                       2880LL * 2048 * 2 + 32 * 2;
  const int64_t experts = 32 * (2880LL * 90 * 17 + 2880 * 2 + 2880LL * 45 * 17);
  const int64_t layer = 2 * 2880 * 2 + attn + (32LL * 2880 + 32) * 2 + experts;
  const int64_t rank1 = 2 * (100544LL * 2880 * 2) + 2880 * 2 + 24 * layer;
  EXPECT_EQ(plan.ranks[1].weight_bytes, rank1);
  EXPECT_EQ(plan.ranks[0].weight_bytes, rank1 + 24 * (2880 * 2 + 32 * 2880 * 2));
}

TEST(PlannerTest, GptOss20b_ParameterCount) {
  const ShardingPlan plan = MustPlan(Load("openai__gpt-oss-20b"), Devices(1));
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 20.9e9, 0.05e9);  // model card: 20.9B
  const int64_t expected =
      2 * (201088LL * 2880 * 2) + 2880 * 2 + 24 * (OssLayerNonExpert(32) + 32 * kOssExpert);
  EXPECT_EQ(plan.ranks[0].weight_bytes, expected);
}

// ---- GLM-4.5 / Air -------------------------------------------------------------------------
TEST(PlannerTest, Glm45_ParameterCountsMatchPublished) {
  // Model cards: GLM-4.5 355B total, GLM-4.5-Air 106B total; the Hugging Face checkpoints
  // hold 358B / 110B with the MTP layer (its own embedding and head included).
  const ShardingPlan big = MustPlan(Load("zai-org__GLM-4.5"), Devices(16));
  EXPECT_NEAR(static_cast<double>(big.num_parameters), 355e9, 3e9);
  EXPECT_NEAR(static_cast<double>(big.num_parameters + big.mtp_parameters), 358e9, 1e9);
  const ShardingPlan air = MustPlan(Load("zai-org__GLM-4.5-Air"), Devices(8));
  EXPECT_NEAR(static_cast<double>(air.num_parameters), 106e9, 1.5e9);
  EXPECT_NEAR(static_cast<double>(air.num_parameters + air.mtp_parameters), 110e9, 1e9);
}

TEST(PlannerTest, Glm45Air_TensorParallel4Weights) {
  const ShardingPlan plan = MustPlan(Load("zai-org__GLM-4.5-Air"), Layout(4, 1, 1, 4));
  // hidden 4096, 46 layers (layer 0 dense 10944, 1-45 MoE: 128 experts of 1408 + 1 shared),
  // 96 q heads / 8 KV heads of 128 with q/k/v biases (o_proj unbiased), no qk norm, vocab 151552.
  // TP 4: 24 q heads and 2 KV heads per rank.
  const int64_t attn = (3072LL * 4096 + 3072) * 2 + 2 * (256LL * 4096 + 256) * 2 +
                       4096LL * 3072 * 2;
  const int64_t dense = 3 * 4096LL * (10944 / 4) * 2;
  const int64_t moe = 128LL * 4096 * 2 + 128 * 4                 // router + correction bias
                      + 3 * 4096LL * (1408 / 4) * 2              // shared expert, TP split
                      + 32 * 3 * 4096LL * 1408 * 2;              // 128 / 4 routed experts
  const int64_t expected = 2 * (151552LL / 4 * 4096 * 2) + 4096 * 2 +
                           46 * (2 * 4096 * 2 + attn) + dense + 45 * moe;
  for (const RankPlan& r : plan.ranks) EXPECT_EQ(r.weight_bytes, expected);
  EXPECT_EQ(plan.ranks[0].kv_bytes_per_token, 2 * 128 * 2 * 2 * 46);
}

// ---- MiniMax-M2.7 on 8 x 80 GB, --tp 8 --ep 8 ------------------------------------------------
TEST(PlannerTest, MiniMaxM2_TensorParallel8Fp8Weights) {
  const ShardingPlan plan = MustPlan(Load("MiniMaxAI__MiniMax-M2.7"), Layout(8, 1, 1, 8));
  // hidden 3072, 62 layers, 48 q heads / 8 KV heads of 128, per-layer q/k norms over all heads
  // (split with the heads), 256 fp8 experts of 1536, router ("gate") and lm_head unquantised,
  // vocab 200064. TP 8: 6 q heads (768 rows) and 1 KV head (128 rows) per rank.
  const int64_t attn = Fp8(768, 3072) + 2 * Fp8(128, 3072) + Fp8(3072, 768) + 768 * 2 + 128 * 2;
  const int64_t moe = 256LL * 3072 * 2 + 256 * 4 +  // gate bf16, e_score_correction_bias f32
                      32 * (2 * Fp8(1536, 3072) + Fp8(3072, 1536));
  const int64_t expected =
      2 * (200064LL / 8 * 3072 * 2) + 3072 * 2 + 62 * (2 * 3072 * 2 + attn + moe);
  for (const RankPlan& r : plan.ranks) EXPECT_EQ(r.weight_bytes, expected);
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 229e9, 1.5e9);  // model card: 230B
}

// ---- Mixtral-8x7B on 8 x 80 GB ---------------------------------------------------------------
TEST(PlannerTest, Mixtral_ExpertParallel8HoldsOneExpertPerRank) {
  const ShardingPlan plan = MustPlan(Load("mistralai__Mixtral-8x7B-v0.1"), Layout(8, 1, 1, 8));
  // hidden 4096, 32 layers, 32 q heads / 8 KV heads of 128, 8 experts of 14336, vocab 32000.
  const int64_t layer = 2 * 4096 * 2 + 512LL * 4096 * 2 + 2 * 128LL * 4096 * 2 +
                        4096LL * 512 * 2 + 8 * 4096 * 2 + 3 * 4096LL * 14336 * 2;
  const int64_t expected = 2 * (4000LL * 4096 * 2) + 4096 * 2 + 32 * layer;
  for (const RankPlan& r : plan.ranks) EXPECT_EQ(r.weight_bytes, expected);
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 46.7e9, 0.05e9);
}

TEST(PlannerTest, PipelineStagesSplitLayersAndPlaceEmbeddingAndHead) {
  const ShardingPlan plan = MustPlan(Load("mistralai__Mixtral-8x7B-v0.1"), Layout(2, 1, 3, 2));
  ASSERT_EQ(plan.ranks.size(), 6u);
  // 32 layers over 3 stages: [0, 10), [10, 21), [21, 32); ranks: tp fastest, then pp.
  EXPECT_EQ(plan.ranks[0].layers.begin, 0);
  EXPECT_EQ(plan.ranks[0].layers.end, 10);
  EXPECT_EQ(plan.ranks[2].layers.begin, 10);
  EXPECT_EQ(plan.ranks[2].layers.end, 21);
  EXPECT_EQ(plan.ranks[5].layers.end, 32);
  EXPECT_TRUE(plan.ranks[0].has_embedding);
  EXPECT_FALSE(plan.ranks[0].has_head);
  EXPECT_TRUE(plan.ranks[5].has_head);
  EXPECT_FALSE(plan.ranks[3].has_embedding || plan.ranks[3].has_head);
  // KV per token on a stage: its layers only (4 KV heads per rank x 128 x 2 x 2 bytes).
  EXPECT_EQ(plan.ranks[2].kv_bytes_per_token, 11 * 4 * 128 * 2 * 2);
}

// ---- Dense models (inline configs with the published Qwen3 shapes) ---------------------------
ModelConfig Qwen3Dense(int64_t hidden, int layers, int heads, int kv_heads, int64_t inter,
                       bool tied) {
  const nlohmann::json j = {{"architectures", {"Qwen3ForCausalLM"}},
                            {"model_type", "qwen3"},
                            {"vocab_size", 151936},
                            {"hidden_size", hidden},
                            {"num_hidden_layers", layers},
                            {"num_attention_heads", heads},
                            {"num_key_value_heads", kv_heads},
                            {"head_dim", 128},
                            {"intermediate_size", inter},
                            {"max_position_embeddings", 40960},
                            {"tie_word_embeddings", tied},
                            {"torch_dtype", "bfloat16"}};
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "qwen3-dense/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

TEST(PlannerTest, DenseQwen3_8B_TensorParallel2) {
  // Qwen3-8B: hidden 4096, 36 layers, 32 q / 8 KV heads of 128, MLP 12288, untied.
  const ModelConfig c = Qwen3Dense(4096, 36, 32, 8, 12288, false);
  const ShardingPlan plan = MustPlan(c, Layout(2, 1, 1, 1));
  const int64_t layer = 2 * 4096 * 2                 // norms
                        + 2048LL * 4096 * 2          // q_proj, 16 heads
                        + 2 * 512LL * 4096 * 2       // k_proj, v_proj, 4 heads each
                        + 4096LL * 2048 * 2          // o_proj
                        + 2 * 128 * 2                // q_norm, k_norm
                        + 3 * 4096LL * 6144 * 2;     // gate/up rows, down columns: 12288 / 2
  EXPECT_EQ(plan.ranks[1].weight_bytes, 2 * (75968LL * 4096 * 2) + 4096 * 2 + 36 * layer);
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 8.19e9, 0.01e9);  // model card: 8.2B
  EXPECT_EQ(plan.ranks[0].experts_per_layer, 0);
}

TEST(PlannerValidationTest, EpOnADenseModelIsRefused) {
  EXPECT_THAT(PlanError(Qwen3Dense(4096, 36, 32, 8, 12288, false), Layout(2, 1, 1, 2)),
              HasSubstr("--ep 2 given but Qwen3ForCausalLM has no routed experts"));
}

TEST(PlannerValidationTest, MlpRowsMustSplitEvenly) {
  // An MLP of 12290 rows does not split over 4 ranks (heads do).
  const std::string error =
      PlanError(Qwen3Dense(4096, 4, 32, 8, 12290, false), Layout(4, 1, 1, 1));
  EXPECT_THAT(error, HasSubstr("tensor model.layers.*.mlp.gate_proj.weight (layers 0..3): dim 0 "
                               "holds 12290 rows, which do not split evenly over --tp 4"));
}

TEST(PlannerTest, TiedEmbeddingIsHeldByFirstAndLastStage) {
  // Qwen3-0.6B: hidden 1024, 28 layers, 16 q / 8 KV heads, MLP 3072, tied embeddings.
  const ModelConfig c = Qwen3Dense(1024, 28, 16, 8, 3072, true);
  const ShardingPlan plan = MustPlan(c, Layout(1, 1, 2, 1));
  const int64_t embed = 151936LL * 1024 * 2;
  const int64_t layer = 2 * 1024 * 2 + 2048LL * 1024 * 2 + 2 * 1024LL * 1024 * 2 +
                        1024LL * 2048 * 2 + 2 * 128 * 2 + 3 * 1024LL * 3072 * 2;
  EXPECT_EQ(plan.ranks[0].weight_bytes, embed + 14 * layer);
  EXPECT_EQ(plan.ranks[1].weight_bytes, embed + 14 * layer + 1024 * 2);  // + model.norm
  EXPECT_NEAR(static_cast<double>(plan.num_parameters), 0.596e9, 0.005e9);  // 0.6B, tied once
}

// ---- Validation: every violation, each with its own message ----------------------------------
TEST(PlannerValidationTest, WorldSizeMustMatchDevices) {
  PlanOptions o = Layout(4, 1, 1, 4);
  o.devices = 8;
  EXPECT_THAT(PlanError(Load("Qwen__Qwen3-30B-A3B"), o),
              HasSubstr("world size tp * dp * pp = 4 * 1 * 1 = 4 does not match --devices 8"));
}

TEST(PlannerValidationTest, HeadsMustDivideByTp) {
  EXPECT_THAT(PlanError(Load("deepseek-ai__DeepSeek-V3"), Layout(3, 1, 1, 3)),
              HasSubstr("num_attention_heads (128) is not divisible by --tp 3"));
}

TEST(PlannerValidationTest, KvHeadsAndTpMustDivideOneAnother) {
  // GLM-4.5-Air: 96 heads split over 12, but 8 KV heads and 12 ranks do not divide.
  EXPECT_THAT(PlanError(Load("zai-org__GLM-4.5-Air"), Layout(12, 1, 1, 1)),
              HasSubstr("num_key_value_heads (8) and --tp 12 must divide one another"));
}

TEST(PlannerValidationTest, ExpertsMustDivideByEp) {
  EXPECT_THAT(PlanError(Load("mistralai__Mixtral-8x7B-v0.1"), Layout(16, 1, 1, 16)),
              HasSubstr("the 8 routed experts do not divide over --ep 16"));
}

TEST(PlannerValidationTest, EpMustBeOneOrTpTimesDp) {
  EXPECT_THAT(PlanError(Load("Qwen__Qwen3-30B-A3B"), Layout(2, 2, 1, 2)),
              HasSubstr("--ep 2 must be 1 (experts replicated) or tp * dp = 4"));
}

TEST(PlannerValidationTest, LayersMustCoverEveryPipelineStage) {
  EXPECT_THAT(PlanError(Load("openai__gpt-oss-20b"), Layout(1, 1, 32, 1, 100 * kGiB)),
              HasSubstr("num_hidden_layers (24) < --pp 32"));
}

TEST(PlannerValidationTest, Fp8ScaleBlocksMustNotBeCut) {
  // TP 32: the dense MLP's 18432 rows give 576 per rank, not a multiple of the 128-row blocks.
  const std::string error = PlanError(Load("deepseek-ai__DeepSeek-V3"), Layout(32, 1, 1, 32));
  EXPECT_THAT(error, HasSubstr("mlp.gate_proj.weight_scale_inv (layers 0..2)"));
  EXPECT_THAT(error, HasSubstr("cuts its 128-wide scale blocks"));
}

TEST(PlannerValidationTest, Mxfp4ExpertBlocksMustSplitEvenlyWithoutExpertParallelism) {
  // down_proj's 2880 inputs are 90 MXFP4 blocks of 32: they do not split over 8 ranks.
  // The worker's loader refuses the same layouts (MoeBlock; sharded_generate_test.py).
  const std::string error = PlanError(Load("openai__gpt-oss-120b"), Layout(8, 1, 1, 1));
  EXPECT_THAT(error, HasSubstr("tensor model.layers.*.mlp.experts.down_proj_blocks (layers "
                               "0..35): MXFP4 experts split over --tp 8 need whole MX blocks of "
                               "32 per rank, but moe_intermediate_size 2880 holds 90 block(s); "
                               "use a --tp that divides 90, or expert parallelism (--ep)"));
  EXPECT_THAT(error, Not(HasSubstr("down_proj_scales")));  // reported once, on the blocks
}

TEST(PlannerValidationTest, WeightsExceedingMemorySayByHowMuchAndWhatToChange) {
  const std::string error = PlanError(Load("zai-org__GLM-4.5"), Layout(8, 1, 1, 8));
  // 355B bf16 parameters / 8 ranks = ~82 GiB per rank > 72 GB usable.
  EXPECT_THAT(error, HasSubstr("weights exceed device memory: rank 0 needs 82."));
  EXPECT_THAT(error, HasSubstr("GiB short"));
  EXPECT_THAT(error, HasSubstr("use 16 or more devices (e.g. --devices 16"));
}

TEST(PlannerValidationTest, EveryViolationIsListed) {
  PlanOptions o = Layout(3, 2, 100, 5);
  o.devices = 8;
  const std::string error = PlanError(Load("zai-org__GLM-4.5"), o);
  EXPECT_THAT(error, HasSubstr("does not match --devices 8"));
  EXPECT_THAT(error, HasSubstr("num_key_value_heads (8) and --tp 3"));
  EXPECT_THAT(error, HasSubstr("--ep 5 must be 1 (experts replicated) or tp * dp = 6"));
  EXPECT_THAT(error, HasSubstr("num_hidden_layers (92) < --pp 100"));
}

TEST(PlannerValidationTest, MaxModelLenBeyondPositionEmbeddings) {
  PlanOptions o = Devices(1);
  o.max_model_len = 65536;
  EXPECT_THAT(PlanError(Load("Qwen__Qwen3-30B-A3B"), o),
              HasSubstr("--max-model-len 65536 exceeds the model's max_position_embeddings "
                        "(40960)"));
}

TEST(PlannerValidationTest, MaxModelLenMustFitTheKvCache) {
  // gpt-oss-120b on one 80 GB device: ~6.7 GB left for KV holds ~90k full-attention tokens.
  PlanOptions o = Devices(1);
  o.max_model_len = 131072;
  o.kv_dtype = DType::kF32;
  const std::string error = PlanError(Load("openai__gpt-oss-120b"), o);
  EXPECT_THAT(error, HasSubstr("--max-model-len 131072 does not fit in the KV cache"));
  EXPECT_THAT(error, HasSubstr("lower --max-model-len to"));
}

TEST(PlannerValidationTest, InvalidOptionsAreReportedTogether) {
  PlanOptions o;
  o.devices = 0;
  o.device_memory_bytes = 0;
  o.overhead_fraction = 1.5;
  const std::string error = PlanError(Load("Qwen__Qwen3-30B-A3B"), o);
  EXPECT_THAT(error, HasSubstr("--devices must be >= 1"));
  EXPECT_THAT(error, HasSubstr("--device-memory must be positive"));
  EXPECT_THAT(error, HasSubstr("--overhead-fraction must be in [0, 1)"));
}

TEST(PlannerTest, DefaultMaxModelLenIsLoweredToWhatFits) {
  // Qwen3-30B-A3B bf16 on a 64 GiB device: 61 GB of weights leave ~0.7 GB for KV.
  const ShardingPlan plan = MustPlan(Load("Qwen__Qwen3-30B-A3B"), Devices(1, 64 * kGiB));
  EXPECT_TRUE(plan.max_model_len_lowered);
  EXPECT_LT(plan.max_model_len, 40960);
  EXPECT_EQ(plan.max_model_len, plan.max_context);
  EXPECT_EQ(plan.max_sequences, 1);
}

TEST(PlannerTest, KvDtypeFp8HalvesKvBytes) {
  const ModelConfig c = Load("Qwen__Qwen3-30B-A3B");
  PlanOptions o = Devices(1);
  o.kv_dtype = DType::kF8E4M3;
  EXPECT_EQ(MustPlan(c, o).ranks[0].kv_bytes_per_token, 4 * 128 * 2 * 1 * 48);
}

// ---- The tensor layout a model loader reads -----------------------------------------------
TEST(TensorLayoutTest, RankReadsOnlyItsOwnExperts) {
  const ModelConfig c = Load("deepseek-ai__DeepSeek-V3");
  const std::vector<CheckpointTensor> tensors = CheckpointTensors(c);
  const MeshShape shape{1, 16, 1, 16};
  const Mesh mesh = *Mesh::Create(shape);
  std::set<int> experts;
  for (const TensorSlice& s : RankTensors(c, tensors, shape, mesh.Coord(5))) {
    if (s.tensor->expert >= 0) experts.insert(s.tensor->expert);
    EXPECT_NE(s.tensor->placement, TensorPlacement::kMtp) << s.tensor->name;
  }
  // EP rank 5 of 16 owns experts [80, 96).
  ASSERT_EQ(experts.size(), 16u);
  EXPECT_EQ(*experts.begin(), 80);
  EXPECT_EQ(*experts.rbegin(), 95);
}

TEST(TensorLayoutTest, RankTensorsSumToThePlannedWeightBytes) {
  const ModelConfig c = Load("MiniMaxAI__MiniMax-M2.7");
  const ShardingPlan plan = MustPlan(c, Layout(4, 2, 1, 8));
  const std::vector<CheckpointTensor> tensors = CheckpointTensors(c);
  const Mesh mesh = *Mesh::Create(plan.shape);
  for (int rank : {0, 3, 6}) {
    int64_t bytes = 0;
    for (const TensorSlice& s : RankTensors(c, tensors, plan.shape, mesh.Coord(rank))) {
      bytes += s.nbytes;
    }
    EXPECT_EQ(bytes, plan.ranks[rank].weight_bytes) << "rank " << rank;
  }
}

TEST(TensorLayoutTest, TensorParallelSlicesCoverEachTensorExactlyOnce) {
  const ModelConfig c = Load("zai-org__GLM-4.5-Air");
  const std::vector<CheckpointTensor> tensors = CheckpointTensors(c, {.include_mtp = false});
  const MeshShape shape{8, 1, 1, 8};
  const Mesh mesh = *Mesh::Create(shape);
  std::map<std::string, int64_t> covered;
  for (int r = 0; r < 8; ++r) {
    for (const TensorSlice& s : RankTensors(c, tensors, shape, mesh.Coord(r))) {
      if (s.tensor->split == TensorSplit::kTensorParallel ||
          s.tensor->split == TensorSplit::kVocab || s.tensor->split == TensorSplit::kKvHeads) {
        covered[s.tensor->name] += s.nbytes;
      }
    }
  }
  ASSERT_FALSE(covered.empty());
  for (const CheckpointTensor& t : tensors) {
    if (covered.count(t.name)) {
      EXPECT_EQ(covered[t.name], t.nbytes()) << t.name;
    }
  }
}

TEST(TensorLayoutTest, RowParallelSliceByteRangesAreOnePerRow) {
  const ModelConfig c = Load("deepseek-ai__DeepSeek-V3");
  const std::vector<CheckpointTensor> tensors = CheckpointTensors(c);
  const MeshShape shape{16, 1, 1, 16};
  const Mesh mesh = *Mesh::Create(shape);
  for (const TensorSlice& s : RankTensors(c, tensors, shape, mesh.Coord(3))) {
    if (s.tensor->name != "model.layers.0.self_attn.o_proj.weight") continue;
    // o_proj [7168, 16384] fp8, columns of heads [24, 32) x 128 = [3072, 4096).
    EXPECT_EQ(s.dim, 1);
    EXPECT_EQ(s.begin, 3072);
    EXPECT_EQ(s.end, 4096);
    const std::vector<ByteRange> ranges = SliceByteRanges(s);
    ASSERT_EQ(ranges.size(), 7168u);
    EXPECT_EQ(ranges[0].offset, 3072);
    EXPECT_EQ(ranges[0].size, 1024);
    EXPECT_EQ(ranges[1].offset, 16384 + 3072);
    return;
  }
  FAIL() << "o_proj of layer 0 not held by rank 3";
}

// make-model writes checkpoints "in the exact Hugging Face layout"; its tensor plan and the
// planner's inventory are written independently and must agree on every name and shape.
class LayoutMatchesMakeModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LayoutMatchesMakeModelTest, SameTensorNamesShapesAndFp8Scales) {
  const std::string path = testing::TestDataDir() + "/configs/" + GetParam() + "/config.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(path));
  const std::string method =
      j.contains("quantization_config") ? j["quantization_config"].value("quant_method", "") : "";
  const bool fp8 = method == "fp8";  // mxfp4 (gpt-oss) is kept: make-model writes it too
  absl::StatusOr<ModelConfig> config = ParseModelConfig(j, path);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::vector<PlannedTensor>> planned =
      PlanTensors(j, fp8 ? DType::kF8E4M3 : DType::kBF16);
  ASSERT_TRUE(planned.ok()) << planned.status();
  std::map<std::string, std::vector<int64_t>> theirs, ours;
  for (const PlannedTensor& t : *planned) theirs[t.name] = t.shape;
  for (const CheckpointTensor& t : CheckpointTensors(*config, {.include_mtp = false})) {
    ours[t.name] = t.shape;
  }
  for (const auto& [name, shape] : ours) {
    auto it = theirs.find(name);
    if (it == theirs.end()) {
      ADD_FAILURE() << "only in the planner: " << name;
      continue;
    }
    EXPECT_EQ(it->second, shape) << name;
  }
  for (const auto& [name, shape] : theirs) {
    if (!ours.count(name)) ADD_FAILURE() << "only in make-model: " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(RealConfigs, LayoutMatchesMakeModelTest,
                         ::testing::Values("Qwen__Qwen3-30B-A3B", "Qwen__Qwen3-30B-A3B-FP8",
                                           "deepseek-ai__DeepSeek-V3", "moonshotai__Kimi-K2-Instruct",
                                           "zai-org__GLM-4.5", "zai-org__GLM-4.5-Air",
                                           "MiniMaxAI__MiniMax-M2.7", "mistralai__Mixtral-8x7B-v0.1",
                                           "openai__gpt-oss-20b"));

// ---- Sizes ------------------------------------------------------------------------------------
TEST(ByteSizeTest, ParsesBinaryDecimalAndScientific) {
  EXPECT_EQ(*ParseByteSize("80GiB"), 80 * kGiB);
  EXPECT_EQ(*ParseByteSize("80 GiB"), 80 * kGiB);
  EXPECT_EQ(*ParseByteSize("80GB"), 80'000'000'000);
  EXPECT_EQ(*ParseByteSize("80e9"), 80'000'000'000);
  EXPECT_EQ(*ParseByteSize("81920MiB"), 80 * kGiB);
  EXPECT_EQ(*ParseByteSize("1.5TiB"), 1536 * kGiB);
  EXPECT_EQ(*ParseByteSize("123"), 123);
}

TEST(ByteSizeTest, RefusesAmbiguousAndMalformedSizes) {
  EXPECT_THAT(std::string(ParseByteSize("80G").status().message()), HasSubstr("unknown unit"));
  EXPECT_FALSE(ParseByteSize("GiB").ok());
  EXPECT_FALSE(ParseByteSize("-5GB").ok());
  EXPECT_FALSE(ParseByteSize("").ok());
}

// ---- tessera plan --json ---------------------------------------------------------------------
struct CommandResult {
  int exit_code = -1;
  std::string out;
};

CommandResult RunTessera(const std::string& args) {
  CommandResult r;
  const std::string cmd = testing::TesseraBinary() + " plan " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string ConfigDir(const std::string& name) {
  return testing::TestDataDir() + "/configs/" + name;
}

TEST(PlanCommandTest, JsonForDeepSeekV3OnSixteenDevices) {
  const CommandResult r = RunTessera("--model " + ConfigDir("deepseek-ai__DeepSeek-V3") +
                                     " --devices 16 --device-memory 80GB --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "DeepseekV3ForCausalLM");
  EXPECT_EQ(j["layout"]["tp"], 1);
  EXPECT_EQ(j["layout"]["dp"], 16);
  EXPECT_EQ(j["layout"]["ep"], 16);
  EXPECT_EQ(j["layout"]["auto"], true);
  ASSERT_EQ(j["ranks"].size(), 16u);
  EXPECT_EQ(j["ranks"][7]["experts_per_layer"], 16);
  EXPECT_EQ(j["ranks"][7]["ep_rank"], 7);
  EXPECT_EQ(j["ranks"][7]["kv_bytes_per_token"], 576 * 2 * 61);
  EXPECT_EQ(j["kv_dtype"], "bf16");
  EXPECT_EQ(j["device_memory_bytes"], 80'000'000'000);
  EXPECT_EQ(j["max_context"], 163840);
}

TEST(PlanCommandTest, JsonForQwen3FixedLayoutWithKvDtypeAndContext) {
  const CommandResult r =
      RunTessera("--model " + ConfigDir("Qwen__Qwen3-235B-A22B") + "/config.json" +
                 " --devices 8 --device-memory 80GiB --tp 8 --ep 8 --dp 1 --pp 1"
                 " --kv-dtype fp8 --max-model-len 32768 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["layout"]["tp"], 8);
  EXPECT_EQ(j["layout"]["auto"], false);
  EXPECT_EQ(j["kv_dtype"], "f8_e4m3");
  EXPECT_EQ(j["max_model_len"], 32768);
  // One fp8 KV head of 128 per rank: 128 x 2 x 1 byte x 94 layers.
  EXPECT_EQ(j["ranks"][0]["kv_bytes_per_token"], 128 * 2 * 94);
  const int64_t kv = j["ranks"][0]["kv_bytes"];
  EXPECT_EQ(j["max_sequences"], kv / (32768LL * 128 * 2 * 94));
}

TEST(PlanCommandTest, JsonErrorListsViolationsAndExitsNonZero) {
  const CommandResult r = RunTessera("--model " + ConfigDir("mistralai__Mixtral-8x7B-v0.1") +
                                     " --devices 16 --device-memory 80GB --tp 16 --dp 1 --pp 1"
                                     " --ep 16 --json");
  EXPECT_EQ(r.exit_code, 1);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["violations"].size(), 1u);
  EXPECT_THAT(j["violations"][0].get<std::string>(), HasSubstr("routed experts"));
}

TEST(PlanCommandTest, TextReportShowsLayoutAndMemory) {
  const CommandResult r = RunTessera("--model " + ConfigDir("openai__gpt-oss-20b") +
                                     " --devices 1 --device-memory 80GiB");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("layout       tp 1 x dp 1 x pp 1 = 1 ranks, ep 1"));
  EXPECT_THAT(r.out, HasSubstr("mxfp4 experts + bf16"));
  EXPECT_THAT(r.out, HasSubstr("max context  131072 tokens"));
}

}  // namespace
}  // namespace tessera
