// Machine limits measured in the same run as a benchmark (see machine_limits.h).
//
// MeasureReadBandwidth streams a 1 GiB buffer (first touched by the thread that reads it) with
// the widest vector loads available, all threads at once, best of several passes.
// MeasureFmaPeak runs independent FMA chains held in registers on every thread. Both pick
// AVX-512 / AVX2 at run time with __builtin_cpu_supports and fall back to scalar code.
// Thread safety: each call owns its threads and memory; calls should not overlap (they would
// measure each other).
#include "bench/machine_limits.h"

// GCC 12 warns about _mm512_undefined_* inside its own headers (_mm512_reduce_add_ps).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/base/host_arena.h"

namespace tessera::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}
bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Sums a byte range with vector loads (4 independent accumulators, 256 bytes per iteration);
// the result keeps the loads alive.
__attribute__((target("avx512f"))) float ReadAvx512(const char* p, size_t bytes) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 256 <= bytes; i += 256) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(reinterpret_cast<const float*>(p + i)));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(reinterpret_cast<const float*>(p + i + 64)));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(reinterpret_cast<const float*>(p + i + 128)));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(reinterpret_cast<const float*>(p + i + 192)));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) float ReadAvx2(const char* p, size_t bytes) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(reinterpret_cast<const float*>(p + i)));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 32)));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 64)));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 96)));
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

float ReadScalar(const char* p, size_t bytes) {
  const uint64_t* q = reinterpret_cast<const uint64_t*>(p);
  uint64_t s0 = 0, s1 = 0;
  for (size_t i = 0; i + 1 < bytes / 8; i += 2) {
    s0 += q[i];
    s1 += q[i + 1];
  }
  return static_cast<float>(s0 + s1);
}

// Runs fn(thread_index) on `num_threads` threads (the caller is thread 0) and returns the wall
// time from a common start until the last one finishes.
template <typename Fn>
double RunThreads(int num_threads, Fn fn) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 1; t < num_threads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      fn(t);
    });
  }
  while (ready.load() < num_threads - 1) {
  }
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  fn(0);
  for (auto& th : threads) th.join();
  return Seconds(start, Clock::now());
}

volatile float g_sink = 0;

template <int kAccs>
__attribute__((target("avx512f"))) float FmaAvx512(int64_t iters) {
  __m512 acc[kAccs];
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAccs; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

template <int kAccs>
__attribute__((target("avx2,fma"))) float FmaAvx2(int64_t iters) {
  __m256 acc[kAccs];
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kAccs; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float t[8];
  _mm256_store_ps(t, s);
  return t[0] + t[7];
}

float FmaScalar(int64_t iters) {
  float acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = static_cast<float>(i) * 1e-3f;
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 8; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  }
  return acc[0] + acc[7];
}

}  // namespace

double MeasureReadBandwidth(int num_threads, double seconds) {
  num_threads = std::max(1, num_threads);
  constexpr size_t kBytes = size_t{1} << 30;
  // Huge-page backed like the model's weights (kernels/base/host_arena.h), so the limit is the
  // machine's streaming bandwidth, not one handicapped by a TLB miss every 4 KiB.
  HostArena arena(kBytes);
  absl::StatusOr<std::shared_ptr<Buffer>> buffer = arena.Allocate(kBytes);
  if (!buffer.ok()) return 0.0;
  char* buf = static_cast<char*>((*buffer)->data());
  const size_t slice = kBytes / num_threads / 4096 * 4096;
  // First touch by the reading thread (NUMA placement), with non-zero data.
  RunThreads(num_threads, [&](int t) {
    std::memset(buf + t * slice, 1 + t, slice);
  });
  const bool avx512 = CpuHasAvx512(), avx2 = CpuHasAvx2Fma();
  double best = 0.0;
  const auto start = Clock::now();
  for (int pass = 0; pass < 3 || (pass < 50 && Seconds(start, Clock::now()) < seconds); ++pass) {
    std::vector<float> sums(num_threads * 16, 0.0f);  // one cache line per thread
    const double t = RunThreads(num_threads, [&](int i) {
      const char* p = buf + i * slice;
      sums[i * 16] = avx512 ? ReadAvx512(p, slice) : avx2 ? ReadAvx2(p, slice) : ReadScalar(p, slice);
    });
    g_sink = g_sink + sums[0];
    best = std::max(best, static_cast<double>(slice) * num_threads / t);
  }
  return best;
}

double MeasureFmaPeak(int num_threads, double seconds) {
  num_threads = std::max(1, num_threads);
  const bool avx512 = CpuHasAvx512(), avx2 = CpuHasAvx2Fma();
  // 16 independent chains hide the FMA latency (4 cycles) on two pipes with room to spare.
  constexpr int kAccs = 16;
  const int lanes = avx512 ? 16 : avx2 ? 8 : 1;
  const int chains = avx512 || avx2 ? kAccs : 8;
  int64_t iters = 1 << 20;
  double best = 0.0;
  const auto start = Clock::now();
  for (int pass = 0; pass < 3 || (pass < 100 && Seconds(start, Clock::now()) < seconds); ++pass) {
    std::vector<float> sums(num_threads * 16, 0.0f);
    const double t = RunThreads(num_threads, [&](int i) {
      sums[i * 16] = avx512 ? FmaAvx512<kAccs>(iters) : avx2 ? FmaAvx2<kAccs>(iters)
                                                             : FmaScalar(iters);
    });
    g_sink = g_sink + sums[0];
    best = std::max(best, 2.0 * lanes * chains * static_cast<double>(iters) * num_threads / t);
    if (t < 0.02) iters *= 2;
  }
  return best;
}

}  // namespace tessera::bench
