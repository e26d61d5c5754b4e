// Tests of worker/models/mla.h: the absorbed path equals the unabsorbed one on the same latent
// cache, both equal an independent dense reference written from Hugging Face's
// DeepseekV3Attention (de-interleaved rope + rotate_half), the cache stores only
// [c | k_pe] per token, and paged decode equals full recomputation.
#include "worker/models/mla.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/dtype.h"
#include "tests/test_util.h"
#include "worker/kv_cache.h"

namespace tessera {
namespace {

using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;

struct Dims {
  int64_t hidden = 40;
  int64_t heads = 3;
  int64_t q_lora = 24;  // 0: q_proj
  int64_t kv_lora = 20;
  int64_t nope = 12;
  int64_t rope = 8;
  int64_t v = 10;
};

MlaConfig MakeConfig(const Dims& d, bool yarn = false) {
  MlaConfig c;
  c.hidden_size = d.hidden;
  c.num_heads = d.heads;
  c.q_lora_rank = d.q_lora;
  c.kv_lora_rank = d.kv_lora;
  c.qk_nope_head_dim = d.nope;
  c.qk_rope_head_dim = d.rope;
  c.v_head_dim = d.v;
  c.rms_norm_eps = 1e-6f;
  c.rope.theta = 10000.0;
  c.rope.max_position = 512;
  if (yarn) {
    c.rope.scaling = RopeConfig::Scaling::kYarn;
    c.rope.factor = 40.0;
    c.rope.original_max_position = 64;
    c.rope.beta_fast = 32.0;
    c.rope.beta_slow = 1.0;
    c.rope.mscale = 1.0;
    c.rope.mscale_all_dim = 1.0;
  }
  return c;
}

LinearWeight RandomLinear(int64_t n, int64_t k, uint64_t seed) {
  LinearWeight w;
  const float bound = 1.0f / std::sqrt(static_cast<float>(k));
  w.weight = RandomTensor({n, k}, seed, -bound, bound);
  return w;
}

// fp8 e4m3 block-quantised copy of an f32 weight with [block, block] scales.
LinearWeight QuantizeFp8(const Tensor& w, int block) {
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t bn = (n + block - 1) / block, bk = (k + block - 1) / block;
  LinearWeight q;
  q.block_n = block;
  q.block_k = block;
  q.weight = *Tensor::Empty({n, k}, DType::kF8E4M3);
  q.scale_inv = *Tensor::Empty({bn, bk}, DType::kF32);
  const float* src = w.data<float>();
  uint8_t* dst = q.weight.data<uint8_t>();
  float* s = q.scale_inv.data<float>();
  for (int64_t bi = 0; bi < bn; ++bi) {
    for (int64_t bj = 0; bj < bk; ++bj) {
      float amax = 1e-12f;
      for (int64_t i = bi * block; i < std::min(n, (bi + 1) * block); ++i) {
        for (int64_t j = bj * block; j < std::min(k, (bj + 1) * block); ++j) {
          amax = std::max(amax, std::fabs(src[i * k + j]));
        }
      }
      const float scale = amax / 448.0f;
      s[bi * bk + bj] = scale;
      for (int64_t i = bi * block; i < std::min(n, (bi + 1) * block); ++i) {
        for (int64_t j = bj * block; j < std::min(k, (bj + 1) * block); ++j) {
          dst[i * k + j] = FloatToF8E4M3(src[i * k + j] / scale);
        }
      }
    }
  }
  return q;
}

MlaWeights RandomWeights(const Dims& d, uint64_t seed) {
  MlaWeights w;
  const int64_t qk = d.nope + d.rope;
  if (d.q_lora == 0) {
    w.q_proj = RandomLinear(d.heads * qk, d.hidden, seed + 1);
  } else {
    w.q_a_proj = RandomLinear(d.q_lora, d.hidden, seed + 2);
    w.q_a_layernorm = RandomTensor({d.q_lora}, seed + 3, 0.5f, 1.5f);
    w.q_b_proj = RandomLinear(d.heads * qk, d.q_lora, seed + 4);
  }
  w.kv_a_proj_with_mqa = RandomLinear(d.kv_lora + d.rope, d.hidden, seed + 5);
  w.kv_a_layernorm = RandomTensor({d.kv_lora}, seed + 6, 0.5f, 1.5f);
  w.kv_b_proj = RandomLinear(d.heads * (d.nope + d.v), d.kv_lora, seed + 7);
  w.o_proj = RandomLinear(d.hidden, d.heads * d.v, seed + 8);
  return w;
}

// One scheduled sequence of a step: its blocks, tokens already cached, tokens this step.
using testing::SeqStep;
AttentionBatch MakeBatch(const std::vector<SeqStep>& seqs, int block_size) {
  return testing::MakeAttentionBatch(seqs, block_size);
}

Tensor Rows(const Tensor& x, int64_t begin, int64_t end) { return *x.Slice(0, begin, end).Clone(); }

// ---- Independent dense reference (Hugging Face DeepseekV3Attention, eager, one sequence) -------

std::vector<double> MatVec(const Tensor& w, const std::vector<double>& x) {
  Tensor wf = *w.To(DType::kF32);
  const int64_t n = wf.dim(0), k = wf.dim(1);
  const float* p = wf.data<float>();
  std::vector<double> y(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) y[i] += p[i * k + j] * x[j];
  }
  return y;
}

std::vector<double> RmsNormRef(const std::vector<double>& x, const Tensor& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w.data<float>()[i];
  return y;
}

// HF apply_rotary_pos_emb_interleave on one head vector: de-interleave, then rotate_half with
// cos/sin = cat(freqs, freqs). Output is in de-interleaved order.
std::vector<double> RopeInterleaveRef(const std::vector<double>& x, int pos, double theta) {
  const size_t d = x.size(), half = d / 2;
  std::vector<double> de(d), y(d);
  for (size_t i = 0; i < half; ++i) {
    de[i] = x[2 * i];
    de[half + i] = x[2 * i + 1];
  }
  for (size_t i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / d);
    const double cs = std::cos(pos * inv_freq), sn = std::sin(pos * inv_freq);
    y[i] = de[i] * cs - de[half + i] * sn;
    y[half + i] = de[half + i] * cs + de[i] * sn;
  }
  return y;
}

Tensor DenseReference(const Dims& d, const MlaWeights& w, const Tensor& hidden, double theta,
                      double scale) {
  const int64_t len = hidden.dim(0), qk = d.nope + d.rope;
  std::vector<std::vector<double>> q(len), k_nope_v(len), k_pe(len);
  for (int64_t t = 0; t < len; ++t) {
    std::vector<double> x(hidden.data<float>() + t * d.hidden,
                          hidden.data<float>() + (t + 1) * d.hidden);
    if (d.q_lora == 0) {
      q[t] = MatVec(w.q_proj.weight, x);
    } else {
      q[t] = MatVec(w.q_b_proj.weight,
                    RmsNormRef(MatVec(w.q_a_proj.weight, x), w.q_a_layernorm, 1e-6));
    }
    for (int64_t h = 0; h < d.heads; ++h) {
      std::vector<double> pe(q[t].begin() + h * qk + d.nope, q[t].begin() + (h + 1) * qk);
      pe = RopeInterleaveRef(pe, static_cast<int>(t), theta);
      std::copy(pe.begin(), pe.end(), q[t].begin() + h * qk + d.nope);
    }
    std::vector<double> kv_a = MatVec(w.kv_a_proj_with_mqa.weight, x);
    std::vector<double> c(kv_a.begin(), kv_a.begin() + d.kv_lora);
    k_nope_v[t] = MatVec(w.kv_b_proj.weight, RmsNormRef(c, w.kv_a_layernorm, 1e-6));
    k_pe[t] = RopeInterleaveRef(std::vector<double>(kv_a.begin() + d.kv_lora, kv_a.end()),
                                static_cast<int>(t), theta);
  }
  std::vector<double> attn(d.heads * d.v);
  Tensor out = *Tensor::Empty({len, d.hidden}, DType::kF32);
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t h = 0; h < d.heads; ++h) {
      std::vector<double> s(t + 1);
      double mx = -INFINITY;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < d.nope; ++i) {
          dot += q[t][h * qk + i] * k_nope_v[j][h * (d.nope + d.v) + i];
        }
        for (int64_t i = 0; i < d.rope; ++i) dot += q[t][h * qk + d.nope + i] * k_pe[j][i];
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      double den = 0;
      for (double& v : s) den += (v = std::exp(v - mx));
      for (int64_t i = 0; i < d.v; ++i) {
        double acc = 0;
        for (int64_t j = 0; j <= t; ++j) acc += s[j] * k_nope_v[j][h * (d.nope + d.v) + d.nope + i];
        attn[h * d.v + i] = acc / den;
      }
    }
    std::vector<double> o = MatVec(w.o_proj.weight, attn);
    for (int64_t i = 0; i < d.hidden; ++i) out.data<float>()[t * d.hidden + i] = o[i];
  }
  return out;
}

Tensor NewCache(const Dims& d, int num_blocks, int block_size) {
  return *Tensor::Zeros({num_blocks, block_size, 1, d.kv_lora + d.rope}, DType::kF32);
}

// ---- Absorbed == unabsorbed over mixed batches -------------------------------------------------

struct PathCase {
  int block_size;
  int64_t q_lora;
  bool yarn;
};

class MlaPathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(MlaPathTest, AbsorbedEqualsUnabsorbedOnMixedBatches) {
  const PathCase pc = GetParam();
  Dims d;
  d.q_lora = pc.q_lora;
  absl::StatusOr<MlaAttention> mla =
      MlaAttention::Create(MakeConfig(d, pc.yarn), RandomWeights(d, 11), "layer0");
  ASSERT_TRUE(mla.ok()) << mla.status();
  const int bs = pc.block_size;
  const int blocks_per_seq = (70 + bs - 1) / bs;
  // Three sequences with interleaved (non-contiguous) block ids.
  std::vector<std::vector<int32_t>> blocks(3);
  for (int j = 0; j < blocks_per_seq; ++j) {
    for (int s = 0; s < 3; ++s) blocks[s].push_back(j * 3 + (2 - s));
  }
  Tensor cache = NewCache(d, 3 * blocks_per_seq, bs);
  // Step 1: prefill 17 and 5 tokens of sequences 0 and 1. Step 2: one decode token of seq 0, a
  // 9-token chunk of seq 1 and a 23-token prefill of seq 2. Step 3: decode all three.
  const std::vector<std::vector<SeqStep>> steps = {
      {{blocks[0], 0, 17}, {blocks[1], 0, 5}},
      {{blocks[0], 17, 1}, {blocks[1], 5, 9}, {blocks[2], 0, 23}},
      {{blocks[0], 18, 1}, {blocks[1], 14, 1}, {blocks[2], 23, 1}},
  };
  uint64_t seed = 100;
  for (const auto& step : steps) {
    AttentionBatch batch = MakeBatch(step, bs);
    Tensor x = RandomTensor({batch.num_tokens, d.hidden}, seed++);
    Tensor absorbed = *Tensor::Empty({batch.num_tokens, d.hidden}, DType::kF32);
    Tensor unabsorbed = *Tensor::Empty({batch.num_tokens, d.hidden}, DType::kF32);
    ASSERT_TRUE(mla->Forward(x, batch, cache, absorbed, MlaOptions::Path::kAbsorbed).ok());
    ASSERT_TRUE(mla->Forward(x, batch, cache, unabsorbed, MlaOptions::Path::kUnabsorbed).ok());
    EXPECT_LT(RelativeError(absorbed, unabsorbed), 1e-5)
        << "step with " << batch.num_tokens << " tokens";
  }
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, MlaPathTest,
                         ::testing::Values(PathCase{1, 24, false}, PathCase{16, 24, false},
                                           PathCase{64, 24, false}, PathCase{16, 0, false},
                                           PathCase{16, 24, true}, PathCase{64, 0, true}),
                         [](const ::testing::TestParamInfo<PathCase>& info) {
                           return "bs" + std::to_string(info.param.block_size) +
                                  (info.param.q_lora ? "_qlora" : "_qproj") +
                                  (info.param.yarn ? "_yarn" : "");
                         });

// ---- Against the Hugging Face formulation ------------------------------------------------------

class MlaReferenceTest : public ::testing::TestWithParam<MlaOptions::Path> {};

TEST_P(MlaReferenceTest, PrefillMatchesDenseHfReference) {
  Dims d;
  const MlaWeights w = RandomWeights(d, 21);
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), w, "layer0");
  ASSERT_TRUE(mla.ok()) << mla.status();
  const int len = 13, bs = 4;
  Tensor cache = NewCache(d, 4, bs);
  AttentionBatch batch = MakeBatch({{{3, 0, 2, 1}, 0, len}}, bs);
  Tensor x = RandomTensor({len, d.hidden}, 5);
  Tensor out = *Tensor::Empty({len, d.hidden}, DType::kF32);
  ASSERT_TRUE(mla->Forward(x, batch, cache, out, GetParam()).ok());
  const Tensor ref = DenseReference(d, w, x, 10000.0, 1.0 / std::sqrt(double(d.nope + d.rope)));
  EXPECT_LT(RelativeError(out, ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Paths, MlaReferenceTest,
                         ::testing::Values(MlaOptions::Path::kAbsorbed,
                                           MlaOptions::Path::kUnabsorbed),
                         [](const ::testing::TestParamInfo<MlaOptions::Path>& info) {
                           return info.param == MlaOptions::Path::kAbsorbed ? "absorbed"
                                                                            : "unabsorbed";
                         });

TEST(MlaTest, PagedDecodeEqualsFullRecomputation) {
  Dims d;
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), RandomWeights(d, 31), "");
  ASSERT_TRUE(mla.ok()) << mla.status();
  const int len = 21, bs = 4, prompt = 6;
  const std::vector<int32_t> blocks = {5, 0, 3, 6, 1, 4};
  Tensor x = RandomTensor({len, d.hidden}, 9);
  // Full recomputation: one prefill of all tokens in a fresh cache.
  Tensor full_cache = NewCache(d, 8, bs);
  Tensor full = *Tensor::Empty({len, d.hidden}, DType::kF32);
  ASSERT_TRUE(mla->Forward(x, MakeBatch({{blocks, 0, len}}, bs), full_cache, full).ok());
  // Paged: a prompt, then decode tokens one at a time.
  Tensor cache = NewCache(d, 8, bs);
  Tensor out = *Tensor::Empty({prompt, d.hidden}, DType::kF32);
  ASSERT_TRUE(
      mla->Forward(Rows(x, 0, prompt), MakeBatch({{blocks, 0, prompt}}, bs), cache, out).ok());
  EXPECT_LT(RelativeError(out, Rows(full, 0, prompt)), 1e-5);
  for (int pos = prompt; pos < len; ++pos) {
    Tensor step = *Tensor::Empty({1, d.hidden}, DType::kF32);
    ASSERT_TRUE(
        mla->Forward(Rows(x, pos, pos + 1), MakeBatch({{blocks, pos, 1}}, bs), cache, step).ok());
    EXPECT_LT(RelativeError(step, Rows(full, pos, pos + 1)), 1e-5) << "position " << pos;
  }
  EXPECT_LT(RelativeError(cache, full_cache), 1e-6);
}

// ---- The latent cache -------------------------------------------------------------------------

TEST(MlaTest, LatentCacheHoldsOnlyNormalisedLatentAndRotatedKpe) {
  Dims d;
  const MlaWeights w = RandomWeights(d, 41);
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), w, "");
  ASSERT_TRUE(mla.ok()) << mla.status();
  // The layer's KV spec: one "head" of kv_lora_rank + qk_rope_head_dim floats, v aliased.
  const LayerKvSpec spec{1, static_cast<int>(d.kv_lora + d.rope), static_cast<int>(d.kv_lora),
                         true};
  EXPECT_EQ(KvBytesPerToken(spec), (d.kv_lora + d.rope) * 4);
  absl::StatusOr<KvCache> kv = KvCache::Create({spec}, 4, 4);
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->nbytes(), 4 * 4 * (d.kv_lora + d.rope) * 4);
  Tensor cache = kv->k_cache(0);
  const int len = 6;
  AttentionBatch batch = MakeBatch({{{2, 0}, 0, len}}, 4);
  Tensor x = RandomTensor({len, d.hidden}, 3);
  Tensor out = *Tensor::Empty({len, d.hidden}, DType::kF32);
  ASSERT_TRUE(mla->Forward(x, batch, cache, out).ok());
  const float* cd = cache.data<float>();
  const int64_t row = d.kv_lora + d.rope;
  for (int64_t slot = 0; slot < 16; ++slot) {
    const int64_t block = slot / 4;
    int pos = -1;
    if (block == 2) pos = static_cast<int>(slot % 4);
    if (block == 0) pos = 4 + static_cast<int>(slot % 4);
    if (pos < 0 || pos >= len) {
      for (int64_t i = 0; i < row; ++i) ASSERT_EQ(cd[slot * row + i], 0.0f) << "slot " << slot;
      continue;
    }
    std::vector<double> xv(x.data<float>() + pos * d.hidden,
                           x.data<float>() + (pos + 1) * d.hidden);
    std::vector<double> kv_a = MatVec(w.kv_a_proj_with_mqa.weight, xv);
    std::vector<double> c = RmsNormRef(std::vector<double>(kv_a.begin(), kv_a.begin() + d.kv_lora),
                                       w.kv_a_layernorm, 1e-6);
    for (int64_t i = 0; i < d.kv_lora; ++i) {
      EXPECT_NEAR(cd[slot * row + i], c[i], 1e-4) << "slot " << slot << " c[" << i << "]";
    }
    // k_pe is stored GPT-J rotated in checkpoint order: pairs (2i, 2i+1) rotated by freq i,
    // which is HF's de-interleaved result permuted back.
    std::vector<double> pe_hf =
        RopeInterleaveRef(std::vector<double>(kv_a.begin() + d.kv_lora, kv_a.end()), pos, 10000.0);
    for (int64_t i = 0; i < d.rope / 2; ++i) {
      EXPECT_NEAR(cd[slot * row + d.kv_lora + 2 * i], pe_hf[i], 1e-4);
      EXPECT_NEAR(cd[slot * row + d.kv_lora + 2 * i + 1], pe_hf[d.rope / 2 + i], 1e-4);
    }
  }
}

TEST(MlaTest, AcceptsKvCacheViewsAndThreeDimensionalCache) {
  Dims d;
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), RandomWeights(d, 51), "");
  ASSERT_TRUE(mla.ok()) << mla.status();
  AttentionBatch batch = MakeBatch({{{1, 0}, 0, 7}}, 4);
  Tensor x = RandomTensor({7, d.hidden}, 4);
  Tensor cache4 = NewCache(d, 2, 4);
  Tensor cache3 = *Tensor::Zeros({2, 4, d.kv_lora + d.rope}, DType::kF32);
  Tensor a = *Tensor::Empty({7, d.hidden}, DType::kF32);
  Tensor b = *Tensor::Empty({7, d.hidden}, DType::kF32);
  ASSERT_TRUE(mla->Forward(x, batch, cache4, a).ok());
  ASSERT_TRUE(mla->Forward(x, batch, cache3, b).ok());
  EXPECT_EQ(RelativeError(a, b), 0.0);
  Tensor wrong = *Tensor::Zeros({2, 4, d.kv_lora}, DType::kF32);
  absl::Status s = mla->Forward(x, batch, wrong, a);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("latent cache"), absl::string_view::npos) << s;
}

// ---- fp8 and the absorbed matrices -------------------------------------------------------------

TEST(MlaTest, Fp8KvBProjAbsorbedEqualsUnabsorbed) {
  Dims d;
  d.kv_lora = 24;
  MlaWeights w = RandomWeights(d, 61);
  w.kv_b_proj = QuantizeFp8(w.kv_b_proj.weight, 8);  // odd tiles: 66 rows over 8-row blocks
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), w, "");
  ASSERT_TRUE(mla.ok()) << mla.status();
  AttentionBatch batch = MakeBatch({{{0, 1, 2}, 0, 11}, {{3, 4}, 0, 5}}, 4);
  Tensor x = RandomTensor({16, d.hidden}, 8);
  Tensor cache = NewCache(d, 5, 4);
  Tensor a = *Tensor::Empty({16, d.hidden}, DType::kF32);
  Tensor b = *Tensor::Empty({16, d.hidden}, DType::kF32);
  ASSERT_TRUE(mla->Forward(x, batch, cache, a, MlaOptions::Path::kAbsorbed).ok());
  ASSERT_TRUE(mla->Forward(x, batch, cache, b, MlaOptions::Path::kUnabsorbed).ok());
  EXPECT_LT(RelativeError(a, b), 1e-5);
}

TEST(MlaTest, AbsorbedMatricesAreKvBProjRows) {
  Dims d;
  MlaWeights w = RandomWeights(d, 71);
  const Tensor kvb = w.kv_b_proj.weight;
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), w, "");
  ASSERT_TRUE(mla.ok()) << mla.status();
  const float* p = kvb.data<float>();
  for (int64_t h = 0; h < d.heads; ++h) {
    for (int64_t i = 0; i < d.nope; ++i) {
      for (int64_t j = 0; j < d.kv_lora; ++j) {
        ASSERT_EQ(mla->w_uk().data<float>()[(h * d.nope + i) * d.kv_lora + j],
                  p[(h * (d.nope + d.v) + i) * d.kv_lora + j]);
      }
    }
    for (int64_t i = 0; i < d.v; ++i) {
      for (int64_t j = 0; j < d.kv_lora; ++j) {
        ASSERT_EQ(mla->w_uv_t().data<float>()[(h * d.kv_lora + j) * d.v + i],
                  p[(h * (d.nope + d.v) + d.nope + i) * d.kv_lora + j]);
      }
    }
  }
}

TEST(MlaTest, DequantizeAppliesBlockScales) {
  Tensor w = RandomTensor({5, 7}, 3);
  LinearWeight q = QuantizeFp8(w, 2);
  absl::StatusOr<Tensor> deq = DequantizeLinearWeight(q, "w");
  ASSERT_TRUE(deq.ok()) << deq.status();
  EXPECT_LT(RelativeError(*deq, w), 0.07);  // e4m3 has 3 mantissa bits
  for (int64_t i = 0; i < 5; ++i) {
    for (int64_t j = 0; j < 7; ++j) {
      const float expect = F8E4M3ToFloat(q.weight.data<uint8_t>()[i * 7 + j]) *
                           q.scale_inv.data<float>()[(i / 2) * 4 + j / 2];
      ASSERT_EQ(deq->data<float>()[i * 7 + j], expect);
    }
  }
}

// ---- Scale and validation ----------------------------------------------------------------------

TEST(MlaTest, SoftmaxScaleUsesYarnMscaleAllDim) {
  Dims d;
  d.nope = 128;
  d.rope = 64;
  MlaConfig c = MakeConfig(d, /*yarn=*/true);
  const double mscale = 0.1 * 1.0 * std::log(40.0) + 1.0;
  EXPECT_NEAR(MlaSoftmaxScale(c), mscale * mscale / std::sqrt(192.0), 1e-7);
  c.rope.mscale_all_dim = 0.0;
  EXPECT_NEAR(MlaSoftmaxScale(c), 1.0 / std::sqrt(192.0), 1e-7);
  EXPECT_NEAR(MlaSoftmaxScale(MakeConfig(d)), 1.0 / std::sqrt(192.0), 1e-7);
}

TEST(MlaTest, MisShapedKvBProjNamesTheTensor) {
  Dims d;
  MlaWeights w = RandomWeights(d, 81);
  w.kv_b_proj = RandomLinear(d.heads * (d.nope + d.v) - 1, d.kv_lora, 1);
  absl::StatusOr<MlaAttention> mla =
      MlaAttention::Create(MakeConfig(d), w, "model.layers.2.self_attn");
  ASSERT_FALSE(mla.ok());
  EXPECT_EQ(mla.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mla.status().message().find("model.layers.2.self_attn.kv_b_proj.weight"),
            absl::string_view::npos)
      << mla.status();
}

TEST(MlaTest, MissingKvALayernormNamesTheTensor) {
  Dims d;
  MlaWeights w = RandomWeights(d, 91);
  w.kv_a_layernorm = Tensor();
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), w, "model.layers.0.attn");
  ASSERT_FALSE(mla.ok());
  EXPECT_NE(mla.status().message().find("model.layers.0.attn.kv_a_layernorm.weight"),
            absl::string_view::npos)
      << mla.status();
}

TEST(MlaTest, Fp8WeightWithoutScaleIsRejected) {
  Dims d;
  MlaWeights w = RandomWeights(d, 93);
  w.kv_b_proj = QuantizeFp8(w.kv_b_proj.weight, 8);
  w.kv_b_proj.scale_inv = Tensor();
  absl::StatusOr<MlaAttention> mla = MlaAttention::Create(MakeConfig(d), w, "l");
  ASSERT_FALSE(mla.ok());
  EXPECT_NE(mla.status().message().find("l.kv_b_proj.weight_scale_inv"), absl::string_view::npos)
      << mla.status();
}

}  // namespace
}  // namespace tessera
