// Tests for WriteKvCache and PagedAttention (kernels/ops.h) against the plain references in
// kernels/cpu/reference_attention.h, over every ISA path of the CPU kernel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/tensor.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/reference_attention.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;

struct SeqSpec {
  int seq_len;  // context length including the new tokens
  int q_len;    // new (query) tokens
};

struct Case {
  std::string name;
  int block_size = 16;
  int num_heads = 4;
  int num_kv_heads = 4;
  int head_dim_k = 32;
  int head_dim_v = 32;
  std::vector<SeqSpec> seqs;
  int sliding_window = 0;
  bool sinks = false;
  bool mla_layout = false;  // k/v caches share one buffer; v = first head_dim_v columns of k
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// A batch built from a Case: shuffled (non-sequential) block tables, random caches and queries.
struct Batch {
  Tensor q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out;
  AttentionParams params;
};

Batch MakeBatch(const Case& c, uint64_t seed) {
  Batch b;
  int max_blocks = 1;
  int total_blocks = 0;
  int num_tokens = 0;
  for (const SeqSpec& s : c.seqs) {
    const int blocks = (s.seq_len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, blocks + 1);  // one spare column of padding
    total_blocks += blocks;
    num_tokens += s.q_len;
  }
  const int num_blocks = total_blocks + 3;  // a few blocks no sequence uses
  if (c.mla_layout) {
    Tensor latent = RandomTensor({num_blocks, c.block_size, c.head_dim_k}, seed + 1);
    b.k_cache = latent.View({num_blocks, c.block_size, 1, c.head_dim_k});
    b.v_cache = b.k_cache.Slice(3, 0, c.head_dim_v);
  } else {
    b.k_cache = RandomTensor({num_blocks, c.block_size, c.num_kv_heads, c.head_dim_k}, seed + 1);
    b.v_cache = RandomTensor({num_blocks, c.block_size, c.num_kv_heads, c.head_dim_v}, seed + 2);
  }
  // Hand out the blocks in a shuffled order; pad unused table entries with -1.
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> table(c.seqs.size() * max_blocks, -1);
  std::vector<int32_t> seq_lens, qsl = {0};
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
  b.q = RandomTensor({num_tokens, c.num_heads, c.head_dim_k}, seed + 3);
  b.out = *Tensor::Zeros({num_tokens, c.num_heads, c.head_dim_v}, DType::kF32);
  b.params.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim_k)) * 2.0f;
  b.params.sliding_window = c.sliding_window;
  if (c.sinks) b.params.sinks = RandomTensor({c.num_heads}, seed + 4, -1.0f, 3.0f);
  return b;
}

class PagedAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttentionTest, MatchesReferenceOnEveryIsa) {
  const Case& c = GetParam();
  Batch b = MakeBatch(c, 1234);
  Tensor expected = *Tensor::Zeros(b.out.shape(), DType::kF32);
  ASSERT_TRUE(ref::PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                                  b.query_start_loc, b.params, expected)
                  .ok());
  for (cpu::Isa isa : {cpu::Isa::kScalar, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
    if (isa > cpu::BestSupportedIsa()) continue;
    cpu::SetIsaOverride(isa);
    b.out.SetZero();
    const absl::Status status = PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables,
                                               b.seq_lens, b.query_start_loc, b.params, b.out);
    cpu::SetIsaOverride(std::nullopt);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_LT(RelativeError(b.out, expected), 1e-5) << cpu::IsaName(isa);
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int bs : {1, 16, 64}) {
    Case c;
    c.name = "decode_bs" + std::to_string(bs);
    c.block_size = bs;
    c.seqs = {{1, 1}, {17, 1}, {130, 1}, {64, 1}};
    cases.push_back(c);
    c.name = "prefill_bs" + std::to_string(bs);
    c.seqs = {{37, 37}, {5, 5}, {65, 65}};
    cases.push_back(c);
    c.name = "mixed_chunked_prefill_bs" + std::to_string(bs);
    c.seqs = {{100, 23}, {1, 1}, {77, 1}, {16, 16}, {129, 40}};
    cases.push_back(c);
  }
  Case gqa;
  gqa.name = "gqa_odd_dims";
  gqa.num_heads = 12;
  gqa.num_kv_heads = 3;
  gqa.head_dim_k = gqa.head_dim_v = 67;
  gqa.seqs = {{90, 31}, {33, 1}, {200, 1}};
  cases.push_back(gqa);
  Case mqa = gqa;
  mqa.name = "mqa";
  mqa.num_heads = 8;
  mqa.num_kv_heads = 1;
  mqa.head_dim_k = mqa.head_dim_v = 128;
  cases.push_back(mqa);
  Case mha = gqa;
  mha.name = "mha_head_dim_64";
  mha.num_heads = mha.num_kv_heads = 5;
  mha.head_dim_k = mha.head_dim_v = 64;
  cases.push_back(mha);
  Case window = gqa;
  window.name = "sliding_window";
  window.sliding_window = 7;
  window.seqs = {{90, 31}, {5, 5}, {200, 1}, {40, 3}};
  cases.push_back(window);
  Case window_bs1 = window;
  window_bs1.name = "sliding_window_bs1";
  window_bs1.block_size = 1;
  window_bs1.sliding_window = 1;
  cases.push_back(window_bs1);
  Case sinks = gqa;
  sinks.name = "sinks";
  sinks.sinks = true;
  cases.push_back(sinks);
  Case sinks_window = window;
  sinks_window.name = "sinks_and_sliding_window";
  sinks_window.sinks = true;
  sinks_window.head_dim_k = sinks_window.head_dim_v = 64;
  cases.push_back(sinks_window);
  Case mla;
  mla.name = "mla_shared_latent_cache";
  mla.num_heads = 16;
  mla.num_kv_heads = 1;
  mla.head_dim_k = 72;  // kv_lora_rank + rope_dim
  mla.head_dim_v = 56;  // kv_lora_rank
  mla.seqs = {{70, 20}, {45, 1}, {3, 3}};
  cases.push_back(mla);
  Case mla_real = mla;
  mla_real.name = "mla_deepseek_dims";
  mla_real.block_size = 64;
  mla_real.head_dim_k = 576;
  mla_real.head_dim_v = 512;
  mla_real.num_heads = 4;
  mla_real.seqs = {{150, 1}, {70, 9}};
  cases.push_back(mla_real);
  Case dk_ne_dv;
  dk_ne_dv.name = "head_dim_k_ne_head_dim_v";
  dk_ne_dv.num_heads = 6;
  dk_ne_dv.num_kv_heads = 2;
  dk_ne_dv.head_dim_k = 48;
  dk_ne_dv.head_dim_v = 80;
  dk_ne_dv.seqs = {{50, 50}, {21, 1}};
  cases.push_back(dk_ne_dv);
  Case empty_query;
  empty_query.name = "sequence_without_new_tokens";
  empty_query.seqs = {{30, 0}, {12, 2}};
  cases.push_back(empty_query);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PagedAttentionTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

// The work split (kv-head, token and head chunks) depends on the thread count; the result must
// not, beyond rounding.
TEST(PagedAttention, MatchesReferenceForAnyThreadCount) {
  Case c;
  c.num_heads = 12;
  c.num_kv_heads = 3;
  c.head_dim_k = c.head_dim_v = 40;
  c.seqs = {{75, 1}, {40, 13}};
  Batch b = MakeBatch(c, 21);
  Tensor expected = *Tensor::Zeros(b.out.shape(), DType::kF32);
  ASSERT_TRUE(ref::PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                                  b.query_start_loc, b.params, expected)
                  .ok());
  const int original = ThreadPool::Default().num_threads();
  for (int threads : {1, 2, 3, 8, 16}) {
    ThreadPool::SetDefaultThreads(threads);
    b.out.SetZero();
    ASSERT_TRUE(PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                               b.query_start_loc, b.params, b.out)
                    .ok());
    EXPECT_LT(RelativeError(b.out, expected), 1e-5) << threads << " threads";
  }
  ThreadPool::SetDefaultThreads(original);
}

// The reference itself against a hand computation: one key gives exactly its value; a sink adds
// exp(sink) to the denominator only.
TEST(ReferenceAttention, SingleKeyWithSinkMatchesHandComputation) {
  Tensor k_cache = Tensor::FromVector(std::vector<float>{1.0f, 2.0f}, {1, 1, 1, 2});
  Tensor v_cache = Tensor::FromVector(std::vector<float>{3.0f, -4.0f}, {1, 1, 1, 2});
  Tensor q = Tensor::FromVector(std::vector<float>{0.5f, 0.25f}, {1, 1, 2});
  Tensor tables = Tensor::FromVector(std::vector<int32_t>{0}, {1, 1});
  Tensor seq_lens = Tensor::FromVector(std::vector<int32_t>{1}, {1});
  Tensor qsl = Tensor::FromVector(std::vector<int32_t>{0, 1}, {2});
  AttentionParams params;
  params.scale = 1.0f;
  params.sinks = Tensor::FromVector(std::vector<float>{0.3f}, {1});
  Tensor out = *Tensor::Zeros({1, 1, 2}, DType::kF32);
  for (bool optimised : {false, true}) {
    const absl::Status status =
        optimised ? PagedAttention(q, k_cache, v_cache, tables, seq_lens, qsl, params, out)
                  : ref::PagedAttention(q, k_cache, v_cache, tables, seq_lens, qsl, params, out);
    ASSERT_TRUE(status.ok()) << status;
    const double logit = 0.5 * 1.0 + 0.25 * 2.0;
    const double weight = std::exp(logit) / (std::exp(logit) + std::exp(0.3));
    EXPECT_NEAR(out.data<float>()[0], 3.0 * weight, 1e-6) << optimised;
    EXPECT_NEAR(out.data<float>()[1], -4.0 * weight, 1e-6) << optimised;
  }
}

// A query sees only keys at positions <= its own: changing a later key leaves earlier rows alone.
TEST(PagedAttention, CausalMaskIgnoresLaterKeys) {
  Case c;
  c.seqs = {{20, 20}};
  Batch b = MakeBatch(c, 7);
  ASSERT_TRUE(PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                             b.query_start_loc, b.params, b.out)
                  .ok());
  Tensor before = *b.out.Clone();
  // Overwrite position 19 (block_tables[0, 1], slot 3) with large values.
  const int32_t block = b.block_tables.data<int32_t>()[1];
  for (int64_t h = 0; h < c.num_kv_heads; ++h) {
    for (int64_t d = 0; d < c.head_dim_k; ++d) {
      b.k_cache
          .data<float>()[((block * c.block_size + 3) * c.num_kv_heads + h) * c.head_dim_k + d] =
          5.0f;
      b.v_cache
          .data<float>()[((block * c.block_size + 3) * c.num_kv_heads + h) * c.head_dim_v + d] =
          100.0f;
    }
  }
  ASSERT_TRUE(PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                             b.query_start_loc, b.params, b.out)
                  .ok());
  EXPECT_EQ(RelativeError(b.out.Slice(0, 0, 19), before.Slice(0, 0, 19)), 0.0);
  EXPECT_GT(RelativeError(b.out.Slice(0, 19, 20), before.Slice(0, 19, 20)), 0.1);
}

// q and out as strided views into wider buffers (e.g. a fused qkv projection).
TEST(PagedAttention, StridedQueryAndOutputViews) {
  Case c;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.seqs = {{40, 9}, {9, 1}};
  Batch b = MakeBatch(c, 11);
  Tensor expected = *Tensor::Zeros(b.out.shape(), DType::kF32);
  ASSERT_TRUE(ref::PagedAttention(b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                                  b.query_start_loc, b.params, expected)
                  .ok());
  Tensor qkv = RandomTensor({10, 3 * c.num_heads, c.head_dim_k}, 99);
  Tensor q_view = qkv.Slice(1, c.num_heads, 2 * c.num_heads);
  ASSERT_TRUE(q_view.CopyFrom(b.q).ok());
  Tensor wide_out = *Tensor::Zeros({10, c.num_heads, 2 * c.head_dim_v}, DType::kF32);
  Tensor out_view = wide_out.Slice(2, c.head_dim_v, 2 * c.head_dim_v);
  ASSERT_TRUE(PagedAttention(q_view, b.k_cache, b.v_cache, b.block_tables, b.seq_lens,
                             b.query_start_loc, b.params, out_view)
                  .ok());
  EXPECT_LT(RelativeError(out_view, expected), 1e-5);
  EXPECT_EQ(wide_out.data<float>()[0], 0.0f);  // the other half is untouched
}

// Writes through WriteKvCache then attends: the same as the reference on the same writes.
TEST(WriteKvCache, WritesSlotsAndSkipsNegativeOnes) {
  const int num_blocks = 5, block_size = 4, kv_heads = 2, dk = 6, dv = 3;
  Tensor k_cache = *Tensor::Zeros({num_blocks, block_size, kv_heads, dk}, DType::kF32);
  Tensor v_cache = *Tensor::Zeros({num_blocks, block_size, kv_heads, dv}, DType::kF32);
  Tensor k = RandomTensor({3, kv_heads, dk}, 1);
  Tensor v = RandomTensor({3, kv_heads, dv}, 2);
  Tensor slots = Tensor::FromVector(std::vector<int64_t>{13, -1, 0}, {3});
  ASSERT_TRUE(WriteKvCache(k, v, slots, k_cache, v_cache).ok());
  // Token 0 -> block 3, slot 1; token 2 -> block 0, slot 0; token 1 skipped.
  for (int h = 0; h < kv_heads; ++h) {
    for (int d = 0; d < dk; ++d) {
      EXPECT_EQ(k_cache.data<float>()[((3 * block_size + 1) * kv_heads + h) * dk + d],
                k.data<float>()[(0 * kv_heads + h) * dk + d]);
      EXPECT_EQ(k_cache.data<float>()[((0 * block_size + 0) * kv_heads + h) * dk + d],
                k.data<float>()[(2 * kv_heads + h) * dk + d]);
    }
    for (int d = 0; d < dv; ++d) {
      EXPECT_EQ(v_cache.data<float>()[((3 * block_size + 1) * kv_heads + h) * dv + d],
                v.data<float>()[(0 * kv_heads + h) * dv + d]);
    }
  }
  double nonzero = 0;
  for (int64_t i = 0; i < k_cache.numel(); ++i) nonzero += k_cache.data<float>()[i] != 0.0f;
  EXPECT_EQ(nonzero, 2 * kv_heads * dk);
}

TEST(WriteKvCache, MatchesReferenceOnSharedLatentCache) {
  const int num_blocks = 3, block_size = 8, dk = 40, dv = 32;
  Tensor latent = *Tensor::Zeros({num_blocks, block_size, dk}, DType::kF32);
  Tensor k_cache = latent.View({num_blocks, block_size, 1, dk});
  Tensor v_cache = k_cache.Slice(3, 0, dv);
  Tensor ref_latent = *Tensor::Zeros({num_blocks, block_size, dk}, DType::kF32);
  Tensor ref_k = ref_latent.View({num_blocks, block_size, 1, dk});
  Tensor ref_v = ref_k.Slice(3, 0, dv);
  Tensor k = RandomTensor({5, 1, dk}, 3);
  Tensor v = k.Slice(2, 0, dv);  // MLA: the value is the latent itself
  Tensor slots = Tensor::FromVector(std::vector<int64_t>{23, 0, 9, -5, 10}, {5});
  ASSERT_TRUE(WriteKvCache(k, v, slots, k_cache, v_cache).ok());
  ASSERT_TRUE(ref::WriteKvCache(k, v, slots, ref_k, ref_v).ok());
  EXPECT_EQ(RelativeError(latent, ref_latent), 0.0);
  for (int d = 0; d < dk; ++d) {
    EXPECT_EQ(latent.data<float>()[(2 * block_size + 7) * dk + d], k.data<float>()[d]);
  }
}

TEST(WriteKvCache, RejectsSlotOutsideTheCache) {
  Tensor k_cache = *Tensor::Zeros({2, 4, 1, 8}, DType::kF32);
  Tensor v_cache = *Tensor::Zeros({2, 4, 1, 8}, DType::kF32);
  Tensor k = RandomTensor({1, 1, 8}, 1);
  Tensor slots = Tensor::FromVector(std::vector<int64_t>{8}, {1});
  const absl::Status status = WriteKvCache(k, k, slots, k_cache, v_cache);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("slot_mapping[0]"), absl::string_view::npos) << status;
}

class PagedAttentionErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Case c;
    c.block_size = 4;
    c.seqs = {{10, 2}, {5, 1}};
    b_ = MakeBatch(c, 5);
  }
  absl::Status Run() {
    return PagedAttention(b_.q, b_.k_cache, b_.v_cache, b_.block_tables, b_.seq_lens,
                          b_.query_start_loc, b_.params, b_.out);
  }
  static void ExpectMentions(const absl::Status& status, absl::string_view text) {
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.message().find(text), absl::string_view::npos) << status;
  }
  Batch b_;
};

TEST_F(PagedAttentionErrorTest, BaselineIsValid) { EXPECT_TRUE(Run().ok()); }

TEST_F(PagedAttentionErrorTest, RejectsBlockTableEntryOutOfRange) {
  b_.block_tables.data<int32_t>()[1] = static_cast<int32_t>(b_.k_cache.dim(0));
  ExpectMentions(Run(), "block_tables[0, 1]");
}

TEST_F(PagedAttentionErrorTest, RejectsNegativeBlockTableEntry) {
  b_.block_tables.data<int32_t>()[b_.block_tables.dim(1)] = -1;
  ExpectMentions(Run(), "block_tables[1, 0]");
}

TEST_F(PagedAttentionErrorTest, RejectsSeqLenBeyondBlockTableCapacity) {
  b_.seq_lens.data<int32_t>()[0] = static_cast<int32_t>(b_.block_tables.dim(1) * 4 + 1);
  ExpectMentions(Run(), "seq_lens[0]");
}

TEST_F(PagedAttentionErrorTest, RejectsMoreQueriesThanContext) {
  b_.seq_lens.data<int32_t>()[1] = 0;
  ExpectMentions(Run(), "seq_lens[1]");
}

TEST_F(PagedAttentionErrorTest, RejectsQueryStartLocBeyondQ) {
  b_.query_start_loc.data<int32_t>()[2] = 100;
  ExpectMentions(Run(), "query_start_loc[2]");
}

TEST_F(PagedAttentionErrorTest, RejectsHeadsNotMultipleOfKvHeads) {
  b_.q = RandomTensor({3, 6, 32}, 1);
  b_.out = *Tensor::Zeros({3, 6, 32}, DType::kF32);
  b_.k_cache = RandomTensor({b_.k_cache.dim(0), 4, 4, 32}, 2);
  b_.v_cache = RandomTensor({b_.k_cache.dim(0), 4, 4, 32}, 3);
  ExpectMentions(Run(), "num_kv_heads");
}

TEST_F(PagedAttentionErrorTest, RejectsWrongSinksShape) {
  b_.params.sinks = RandomTensor({3}, 1);
  ExpectMentions(Run(), "sinks");
}

TEST_F(PagedAttentionErrorTest, RejectsWrongOutputShape) {
  b_.out = *Tensor::Zeros({3, 4, 31}, DType::kF32);
  ExpectMentions(Run(), "out");
}

}  // namespace
}  // namespace tessera
