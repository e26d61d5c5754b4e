// CUDA paged attention (kernels/cuda/attention.cu) against the CPU PagedAttention on the same
// shuffled block tables: decode batches (GQA, MQA), long contexts that take the split-K path,
// prefill chunks mixed with decode, sliding window, sinks, the MLA latent layout (k and v views
// of one buffer), and WriteKvCache with skipped slots. Skips without a CUDA device.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::PoisonedCuda;
using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

struct SeqSpec {
  int seq_len;
  int q_len;
};

struct Case {
  std::string name;
  int block_size = 16;
  int num_heads = 4;
  int num_kv_heads = 4;
  int head_dim_k = 64;
  int head_dim_v = 64;
  std::vector<SeqSpec> seqs;
  int sliding_window = 0;
  bool sinks = false;
  bool mla_layout = false;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Batch {
  Tensor latent;  // MLA only: the shared buffer
  Tensor q, k_cache, v_cache, block_tables, seq_lens, query_start_loc;
  AttentionParams params;
  int64_t num_tokens = 0;
};

Batch MakeBatch(const Case& c, uint64_t seed) {
  Batch b;
  int max_blocks = 1, total_blocks = 0;
  for (const SeqSpec& s : c.seqs) {
    const int blocks = (s.seq_len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, blocks + 1);
    total_blocks += blocks;
    b.num_tokens += s.q_len;
  }
  const int num_blocks = total_blocks + 3;
  if (c.mla_layout) {
    b.latent = RandomTensor({num_blocks, c.block_size, c.head_dim_k}, seed + 1);
    b.k_cache = b.latent.View({num_blocks, c.block_size, 1, c.head_dim_k});
    b.v_cache = b.k_cache.Slice(3, 0, c.head_dim_v);
  } else {
    b.k_cache = RandomTensor({num_blocks, c.block_size, c.num_kv_heads, c.head_dim_k}, seed + 1);
    b.v_cache = RandomTensor({num_blocks, c.block_size, c.num_kv_heads, c.head_dim_v}, seed + 2);
  }
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> table(c.seqs.size() * max_blocks, -1), seq_lens, qsl = {0};
  int next = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const int blocks = (c.seqs[s].seq_len + c.block_size - 1) / c.block_size;
    for (int i = 0; i < blocks; ++i) table[s * max_blocks + i] = pool[next++];
    seq_lens.push_back(c.seqs[s].seq_len);
    qsl.push_back(qsl.back() + c.seqs[s].q_len);
  }
  b.block_tables = Tensor::FromVector(absl::MakeConstSpan(table),
                                      {static_cast<int64_t>(c.seqs.size()), max_blocks});
  b.seq_lens =
      Tensor::FromVector(absl::MakeConstSpan(seq_lens), {static_cast<int64_t>(seq_lens.size())});
  b.query_start_loc =
      Tensor::FromVector(absl::MakeConstSpan(qsl), {static_cast<int64_t>(qsl.size())});
  b.q = RandomTensor({b.num_tokens, c.num_heads, c.head_dim_k}, seed + 3);
  b.params.scale = 2.0f / std::sqrt(static_cast<float>(c.head_dim_k));
  b.params.sliding_window = c.sliding_window;
  if (c.sinks) b.params.sinks = RandomTensor({c.num_heads}, seed + 4, -1.0f, 3.0f);
  return b;
}

class CudaPagedAttentionTest : public testing::CudaKernelParamTest<Case> {};

TEST_P(CudaPagedAttentionTest, MatchesCpu) {
  const Case& c = GetParam();
  const Batch b = MakeBatch(c, 99);
  Tensor ref = Tensor::Zeros({b.num_tokens, c.num_heads, c.head_dim_v}, DType::kF32).value();
  ASSERT_TRUE(PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                             b.query_start_loc, b.params, ref)
                  .ok());
  Tensor k_cache, v_cache;
  if (c.mla_layout) {
    const Tensor latent = ToCuda(b.latent);
    k_cache = latent.View({b.latent.dim(0), c.block_size, 1, c.head_dim_k});
    v_cache = k_cache.Slice(3, 0, c.head_dim_v);
  } else {
    k_cache = ToCuda(b.k_cache);
    v_cache = ToCuda(b.v_cache);
  }
  AttentionParams params = b.params;
  params.sinks = ToCuda(b.params.sinks);
  Tensor out = PoisonedCuda({b.num_tokens, c.num_heads, c.head_dim_v});
  const absl::Status s =
      PagedAttention(ToCuda(b.q), k_cache, v_cache, ToCuda(b.block_tables), ToCuda(b.seq_lens),
                     ToCuda(b.query_start_loc), params, out);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_LT(RelativeError(ToHost(out), ref), 2e-5);
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  cases.push_back({"decode_batch", 16, 8, 8, 64, 64, {{5, 1}, {33, 1}, {17, 1}, {1, 1}}});
  cases.push_back({"decode_gqa", 16, 32, 4, 128, 128, {{100, 1}, {250, 1}}});
  cases.push_back({"decode_mqa", 8, 16, 1, 64, 64, {{40, 1}, {9, 1}}});
  cases.push_back({"decode_long_split_k", 32, 8, 2, 128, 128, {{3000, 1}}});
  cases.push_back({"prefill_causal", 16, 4, 2, 64, 64, {{70, 70}}});
  cases.push_back({"chunked_prefill_and_decode", 16, 4, 2, 64, 64, {{90, 30}, {12, 1}, {7, 7}}});
  Case window{"sliding_window", 16, 8, 2, 64, 64, {{300, 1}, {64, 40}}};
  window.sliding_window = 32;
  cases.push_back(window);
  Case sinks{"sinks_gpt_oss", 16, 8, 2, 64, 64, {{50, 1}, {20, 20}}};
  sinks.sinks = true;
  cases.push_back(sinks);
  Case sinks_window{"sinks_window_long", 32, 8, 2, 64, 64, {{2000, 1}}};
  sinks_window.sinks = true;
  sinks_window.sliding_window = 128;
  cases.push_back(sinks_window);
  Case sinks_long{"sinks_split_k", 32, 4, 4, 64, 64, {{4000, 1}}};
  sinks_long.sinks = true;
  cases.push_back(sinks_long);
  Case mla{"mla_latent", 16, 16, 1, 576, 512, {{60, 1}, {30, 30}}};
  mla.mla_layout = true;
  cases.push_back(mla);
  cases.push_back({"empty_sequence_in_batch", 16, 4, 4, 32, 32, {{10, 1}, {5, 0}, {8, 1}}});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaPagedAttentionTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

class CudaKvCacheTest : public testing::CudaKernelTest {};

TEST_F(CudaKvCacheTest, WriteKvCacheMatchesCpuAndSkipsNegativeSlots) {
  const Tensor k = RandomTensor({6, 2, 32}, 1), v = RandomTensor({6, 2, 16}, 2);
  const std::vector<int64_t> slots = {0, 17, -1, 63, 5, -1};
  const Tensor slot_t = Tensor::FromVector(absl::MakeConstSpan(slots), {6});
  Tensor k_ref = RandomTensor({4, 16, 2, 32}, 3), v_ref = RandomTensor({4, 16, 2, 16}, 4);
  Tensor k_dev = ToCuda(k_ref), v_dev = ToCuda(v_ref);
  ASSERT_TRUE(WriteKvCache(k, v, slot_t, k_ref, v_ref).ok());
  ASSERT_TRUE(WriteKvCache(ToCuda(k), ToCuda(v), ToCuda(slot_t), k_dev, v_dev).ok());
  EXPECT_EQ(RelativeError(ToHost(k_dev), k_ref), 0.0);
  EXPECT_EQ(RelativeError(ToHost(v_dev), v_ref), 0.0);
}

TEST_F(CudaKvCacheTest, WriteKvCacheOnSharedLatentBufferWritesValuesLast) {
  const Tensor k = RandomTensor({3, 1, 40}, 5), v = RandomTensor({3, 1, 32}, 6);
  const std::vector<int64_t> slots = {2, 9, 30};
  const Tensor slot_t = Tensor::FromVector(absl::MakeConstSpan(slots), {3});
  Tensor latent_ref = RandomTensor({2, 16, 40}, 7);
  const Tensor latent_dev = ToCuda(latent_ref);
  Tensor kr = latent_ref.View({2, 16, 1, 40}), vr = kr.Slice(3, 0, 32);
  ASSERT_TRUE(WriteKvCache(k, v, slot_t, kr, vr).ok());
  Tensor kd = latent_dev.View({2, 16, 1, 40}), vd = kd.Slice(3, 0, 32);
  ASSERT_TRUE(WriteKvCache(ToCuda(k), ToCuda(v), ToCuda(slot_t), kd, vd).ok());
  EXPECT_EQ(RelativeError(ToHost(latent_dev), latent_ref), 0.0);
}

}  // namespace
}  // namespace tessera
