// The index and ordering arithmetic the CUDA kernels run (kernels/cuda/host/kernel_math.h),
// checked on the CPU against brute force: which sequence a query row belongs to, the key ranges of
// split-K attention, the sampler's rank keys against the CPU sampler's order, and the bitwise key
// searches behind top-k and top-p. Label cpu: runs on every machine.
#include "kernels/cuda/host/kernel_math.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tessera::cuda {
namespace {

TEST(FindQueryRow, MatchesBruteForceWithEmptySequencesAndOffsetStart) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    const int num_seqs = 1 + static_cast<int>(rng() % 6);
    std::vector<int32_t> qsl = {static_cast<int32_t>(rng() % 3)}, lens;
    for (int s = 0; s < num_seqs; ++s) {
      const int q = static_cast<int>(rng() % 4);  // zero-length sequences included
      qsl.push_back(qsl.back() + q);
      lens.push_back(q + static_cast<int>(rng() % 50));
    }
    for (int64_t t = 0; t < qsl.back() + 3; ++t) {
      int64_t want_seq = -1, want_pos = 0;
      for (int s = 0; s < num_seqs; ++s) {
        if (qsl[s] <= t && t < qsl[s + 1]) {
          want_seq = s;
          want_pos = lens[s] - (qsl[s + 1] - qsl[s]) + (t - qsl[s]);
        }
      }
      int64_t seq = -1, pos = 0;
      const bool found = FindQueryRow(qsl.data(), 1, lens.data(), 1, num_seqs, t, &seq, &pos);
      ASSERT_EQ(found, want_seq >= 0) << "trial " << trial << " t " << t;
      if (found) {
        EXPECT_EQ(seq, want_seq);
        EXPECT_EQ(pos, want_pos);
      }
    }
  }
}

TEST(SplitKeyRange, SplitsPartitionTheVisibleKeys) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t capacity = 1 + rng() % 500;
    const int64_t pos = static_cast<int64_t>(rng() % (capacity + 5)) - 2;  // may exceed capacity
    const int64_t window = rng() % 3 == 0 ? 0 : 1 + rng() % 100;
    const int splits = 1 + static_cast<int>(rng() % 8);
    int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
    const int64_t hi = std::min(pos + 1, capacity);
    std::vector<int> hits(capacity + 1, 0);
    int64_t prev_end = -1;
    for (int s = 0; s < splits; ++s) {
      int64_t k0, k1;
      SplitKeyRange(pos, capacity, window, splits, s, &k0, &k1);
      ASSERT_LE(k0, k1);
      if (k0 < k1) {
        ASSERT_GE(k0, prev_end) << "splits overlap or go backwards";
        prev_end = k1;
      }
      for (int64_t k = k0; k < k1; ++k) {
        ASSERT_GE(k, 0);
        ASSERT_LT(k, capacity);
        ++hits[k];
      }
    }
    for (int64_t k = 0; k < capacity; ++k) {
      EXPECT_EQ(hits[k], (k >= lo && k < hi) ? 1 : 0) << "key " << k << " trial " << trial;
    }
  }
}

// The CPU sampler's rank order (kernels/cpu/sampling.cc RankLess).
bool RankLess(const std::vector<float>& l, int a, int b) {
  return l[a] > l[b] || (l[a] == l[b] && a < b);
}

std::vector<float> Logits(std::mt19937& rng, int n) {
  std::vector<float> l(n);
  for (int i = 0; i < n; ++i) {
    switch (rng() % 6) {
      case 0: l[i] = -INFINITY; break;
      case 1: l[i] = (rng() % 2) ? 0.0f : -0.0f; break;
      case 2: l[i] = static_cast<float>(static_cast<int>(rng() % 5)) - 2.0f; break;  // ties
      default: l[i] = std::ldexp(static_cast<float>(rng() % 100000) - 50000.0f, -10);
    }
  }
  return l;
}

TEST(RankKey, DescendingKeysFollowTheCpuRankOrder) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<float> l = Logits(rng, 300);
    std::vector<int> by_rank(l.size()), by_key(l.size());
    std::iota(by_rank.begin(), by_rank.end(), 0);
    std::iota(by_key.begin(), by_key.end(), 0);
    std::sort(by_rank.begin(), by_rank.end(), [&](int a, int b) { return RankLess(l, a, b); });
    std::sort(by_key.begin(), by_key.end(),
              [&](int a, int b) { return RankKey(l[a], a) > RankKey(l[b], b); });
    ASSERT_EQ(by_rank, by_key) << "trial " << trial;
  }
}

TEST(LargestKeyWhere, TopKCutIsTheKthRankedKey) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<float> l = Logits(rng, 257);
    std::vector<uint64_t> keys(l.size());
    for (size_t i = 0; i < l.size(); ++i) keys[i] = RankKey(l[i], static_cast<int32_t>(i));
    std::vector<uint64_t> sorted = keys;
    std::sort(sorted.rbegin(), sorted.rend());
    for (int k : {1, 2, 17, 100, 256}) {
      const uint64_t cut = LargestKeyWhere([&](uint64_t candidate) {
        return std::count_if(keys.begin(), keys.end(),
                             [&](uint64_t key) { return key >= candidate; }) >= k;
      });
      EXPECT_EQ(cut, sorted[k - 1]) << "k " << k;
    }
  }
}

TEST(LargestKeyWhere, TopPCutKeepsTheCpuPrefix) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<float> l = Logits(rng, 200);
    const float mx = *std::max_element(l.begin(), l.end());
    std::vector<double> w(l.size());
    for (size_t i = 0; i < l.size(); ++i) w[i] = std::exp(static_cast<double>(l[i] - mx));
    std::vector<int> order(l.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return RankLess(l, a, b); });
    for (double top_p : {0.1, 0.5, 0.9, 0.999}) {
      double z = 0.0;
      for (int i : order) z += w[i];
      // CPU: the shortest rank-order prefix whose cumulative weight reaches top_p * z.
      double cum = 0.0;
      size_t n = order.size();
      for (size_t r = 0; r < order.size(); ++r) {
        cum += w[order[r]];
        if (cum >= top_p * z) {
          n = r + 1;
          break;
        }
      }
      auto mass = [&](uint64_t candidate) {
        double s = 0.0;
        for (int i : order) {  // rank order, as the CPU sums
          if (RankKey(l[i], i) >= candidate) s += w[i];
        }
        return s;
      };
      const uint64_t cut = LargestKeyWhere([&](uint64_t c) { return mass(c) >= top_p * z; });
      size_t kept = 0;
      for (size_t i = 0; i < l.size(); ++i) kept += RankKey(l[i], static_cast<int32_t>(i)) >= cut;
      EXPECT_EQ(kept, n) << "top_p " << top_p << " trial " << trial;
    }
  }
}

}  // namespace
}  // namespace tessera::cuda
