#include "kernels/base/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(ThreadPool, ParallelForCoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPool, NestedCallsRunInlineWithoutDeadlock) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  pool.ParallelFor(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      pool.ParallelFor(10, 1, [&](int64_t b2, int64_t e2) { sum.fetch_add(e2 - b2); });
    }
  });
  EXPECT_EQ(sum.load(), 80);
}

TEST(ThreadPool, ManySmallLoopsInSequence) {
  ThreadPool pool(2);
  int64_t total = 0;
  std::atomic<int64_t> acc{0};
  for (int iter = 0; iter < 2000; ++iter) {
    pool.ParallelFor(64, 1, [&](int64_t b, int64_t e) { acc.fetch_add(e - b); });
    total += 64;
  }
  EXPECT_EQ(acc.load(), total);
}

}  // namespace
}  // namespace tessera
