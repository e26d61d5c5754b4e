// Linear kernel benchmark: decode GEMV (weight bandwidth) and prefill GEMM (FLOP/s), each printed
// as a ratio to the machine limit measured in the same run (bench/machine_limits.h).
//
//   linear_bench [--threads 2] [--rows 1] [--n 4096] [--k 4096] [--prefill_rows 512]
//                [--dtype bf16] [--passes 5] [--only decode|prefill|resident]
//
// (a) Decode: `rows` rows of x against many distinct weight matrices totalling > 512 MiB (so no
//     cache helps): a dense n x k layer, and MoE-expert-like 768 x 2048 matrices. Prints weight
//     bytes read per second and the ratio to MeasureReadBandwidth(threads).
// (b) Prefill: prefill_rows x k times an n x k weight; prints GFLOP/s and the ratio to
//     MeasureFmaPeak(threads) (f32 FMA; the kernels accumulate in f32). With bf16 weights on a
//     CPU with AVX512_BF16 it also runs the opt-in vdpbf16ps GEMM and prints its ratio to the
//     bf16 dot-product peak measured here (MeasureBf16DotPeak).
// (c) Resident (--only resident): one 256 x 2048 weight read over and over, so it stays in L2: the
//     GEMV's arithmetic limit at `rows` rows, as rows x GB/s and ratios to the f32 FMA and bf16
//     dot-product peaks (TESSERA_LINEAR_BF16_DOT=1 selects the dot-product kernels).
// The best of `passes` timed passes is reported (after one warm-up pass).
// GCC 12 warns about _mm512_undefined_* inside its own intrinsic headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/machine_limits.h"
#include "kernels/base/dtype.h"
#include "kernels/base/flags.h"
#include "kernels/base/host_arena.h"
#include "kernels/base/logging.h"
#include "kernels/base/tensor.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear.h"
#include "kernels/ops.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// vdpbf16ps chains on every thread, like MeasureFmaPeak (bench/machine_limits.h does not declare
// a bf16 peak, so it lives here). One zmm vdpbf16ps = 16 lanes x 2 products = 64 FLOP.
volatile float g_sink = 0;

__attribute__((target("avx512f,avx512bf16"))) float DotChains(int64_t iters) {
  constexpr int kAccs = 16;
  __m512 acc[kAccs];
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1, 1)
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x33d633d6);  // (1e-7, 1e-7)
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAccs; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float t[16];
  _mm512_store_ps(t, s);
  return t[0];
}

double MeasureBf16DotPeak(int threads) {
  double best = 0;
  int64_t iters = 1 << 20;
  for (int pass = 0; pass < 6; ++pass) {
    std::vector<std::thread> pool;
    const auto start = Clock::now();
    for (int t = 1; t < threads; ++t) pool.emplace_back([&] { g_sink = g_sink + DotChains(iters); });
    g_sink = g_sink + DotChains(iters);
    for (auto& th : pool) th.join();
    const double secs = Seconds(start, Clock::now());
    best = std::max(best, 64.0 * 16 * static_cast<double>(iters) * threads / secs);
    if (secs < 0.05) iters *= 2;
  }
  return best;
}

// A weight filled with small pseudo-random values (fast LCG; values do not matter for timing
// but must be finite and varied).
// Weights live in huge-page memory like a loaded model's (worker/checkpoint, --weights copy);
// --hugepages=0 uses plain 4 KiB-page allocations instead, for comparison.
bool g_hugepages = true;
HostArena& WeightArena() {
  static HostArena* arena = new HostArena();
  return *arena;
}

Tensor NewWeightTensor(Shape shape, DType dtype) {
  if (!g_hugepages) return Tensor::Empty(shape, dtype).value();
  size_t bytes = DTypeSize(dtype);
  for (int64_t d : shape) bytes *= static_cast<size_t>(d);
  return Tensor::FromBuffer(WeightArena().Allocate(bytes).value(), 0, shape, dtype).value();
}

// In this benchmark DType::kU8 stands for MXFP4 weights (--dtype mxfp4).
constexpr DType kMxfp4 = DType::kU8;

std::string WeightName(DType dtype) {
  return dtype == kMxfp4 ? "mxfp4" : std::string(DTypeName(dtype));
}

// Bytes of an [n, k] weight (MXFP4: 16 code bytes and one scale per 32 weights).
int64_t WeightBytes(DType dtype, int64_t n, int64_t k) {
  if (dtype == kMxfp4) return n * (k / 2 + k / kMxfp4BlockSize);
  return n * k * static_cast<int64_t>(DTypeSize(dtype));
}

LinearWeight MakeWeight(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  if (dtype == kMxfp4) {
    CHECK(k % kMxfp4BlockSize == 0) << "--dtype mxfp4 needs k a multiple of 32";
    LinearWeight w;
    w.weight = NewWeightTensor({n, k / 2}, DType::kU8);
    w.mx_scales = NewWeightTensor({n, k / kMxfp4BlockSize}, DType::kU8);
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    uint8_t* codes = w.weight.data<uint8_t>();
    for (int64_t i = 0; i < n * k / 2; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      codes[i] = static_cast<uint8_t>(s >> 56);
    }
    uint8_t* scales = w.mx_scales.data<uint8_t>();
    for (int64_t i = 0; i < n * k / kMxfp4BlockSize; ++i) scales[i] = static_cast<uint8_t>(120 + i % 4);
    return w;
  }
  const int64_t count = n * k;
  std::vector<float> values(static_cast<size_t>(std::min<int64_t>(count, 1 << 20)));
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (float& v : values) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v = (static_cast<float>(s >> 40) / static_cast<float>(1 << 24) - 0.5f) * 0.1f;
  }
  LinearWeight w;
  w.weight = NewWeightTensor({n, k}, dtype);
  char* dst = static_cast<char*>(w.weight.raw_data());
  const size_t esize = DTypeSize(dtype);
  for (int64_t off = 0; off < count; off += static_cast<int64_t>(values.size())) {
    const size_t len = static_cast<size_t>(std::min<int64_t>(values.size(), count - off));
    ConvertBuffer(values.data(), DType::kF32, dst + off * esize, dtype, len);
  }
  if (dtype == DType::kF8E4M3) {
    w.scale_inv = Tensor::Empty({(n + 127) / 128, (k + 127) / 128}, DType::kF32).value();
    float* sc = w.scale_inv.data<float>();
    for (int64_t i = 0; i < w.scale_inv.numel(); ++i) sc[i] = 1e-3f;
  }
  return w;
}

Tensor MakeInput(int64_t m, int64_t k) {
  Tensor x = Tensor::Empty({m, k}, DType::kF32).value();
  float* p = x.data<float>();
  for (int64_t i = 0; i < m * k; ++i) p[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
  return x;
}

// Runs Linear over every weight once per pass; returns the best pass time in seconds.
double TimePasses(const Tensor& x, const std::vector<LinearWeight>& weights, Tensor& out,
                  int passes) {
  double best = 1e30;
  for (int p = 0; p <= passes; ++p) {
    const auto start = Clock::now();
    for (const LinearWeight& w : weights) CHECK_OK(Linear(x, w, Tensor(), out));
    const double t = Seconds(start, Clock::now());
    if (p > 0) best = std::min(best, t);  // pass 0 warms up
  }
  return best;
}

// Returns the result line (without the ratio) and the achieved weight bytes/s.
// `resident`: one weight read over and over (it stays in cache: the kernel's arithmetic limit)
// instead of distinct copies totalling > 640 MiB (the memory-bound case).
std::pair<std::string, double> BenchDecode(const char* label, DType dtype, int64_t rows,
                                           int64_t n, int64_t k, int passes,
                                           bool resident = false) {
  const int64_t bytes_per = WeightBytes(dtype, n, k);
  const int64_t count = std::max<int64_t>(1, ((int64_t{640} << 20) + bytes_per - 1) / bytes_per);
  std::vector<LinearWeight> weights;
  for (int64_t i = 0; i < count; ++i) {
    weights.push_back(resident && i > 0 ? weights[0] : MakeWeight(dtype, n, k, i + 1));
  }
  const Tensor x = MakeInput(rows, k);
  Tensor out = Tensor::Empty({rows, n}, DType::kF32).value();
  const double t = TimePasses(x, weights, out, passes);
  const double bytes = static_cast<double>(bytes_per) * count;
  const double bw = bytes / t;
  char line[256];
  std::snprintf(line, sizeof(line),
                "decode %-10s %-7s rows=%-2lld %3lld x [%lld x %lld] %6.1f MiB  %6.2f GB/s", label,
                WeightName(dtype).c_str(), static_cast<long long>(rows),
                static_cast<long long>(count), static_cast<long long>(n),
                static_cast<long long>(k), bytes / (1 << 20), bw / 1e9);
  return {line, bw};
}

// Returns the achieved FLOP/s of the prefill GEMM.
double BenchPrefill(DType dtype, int64_t m, int64_t n, int64_t k, int passes) {
  std::vector<LinearWeight> weights = {MakeWeight(dtype, n, k, 99)};
  const Tensor x = MakeInput(m, k);
  Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
  const double t = TimePasses(x, weights, out, passes);
  return 2.0 * m * n * k / t;
}

int Main(int argc, char** argv) {
  int threads = 2, passes = 5;
  int64_t rows = 1, n = 4096, k = 4096, prefill_rows = 512;
  std::string dtype_name = "bf16", only;
  FlagParser flags("linear_bench", "Linear GEMV/GEMM benchmark (ratios to machine limits)");
  flags.AddInt("threads", &threads, "kernel threads (ThreadPool::Default)");
  flags.AddInt("rows", &rows, "rows of x for the decode GEMV (1..32)");
  flags.AddInt("n", &n, "out_features of the dense layer");
  flags.AddInt("k", &k, "in_features of the dense layer");
  flags.AddInt("prefill_rows", &prefill_rows, "rows of x for the prefill GEMM");
  flags.AddInt("passes", &passes, "timed passes (best reported)");
  flags.AddString("dtype", &dtype_name, "weight dtype: f32, bf16, f16, f8_e4m3, mxfp4");
  flags.AddString("only", &only,
                  "run only 'decode', 'prefill' or 'resident' (one 256 x 2048 weight that stays "
                  "in L2: the GEMV's arithmetic limit at --rows; default: decode and prefill)");
  flags.AddBool("hugepages", &g_hugepages, "weights in huge-page memory (as models load them)");
  const absl::Status st = flags.Parse(argc, argv);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return st.code() == absl::StatusCode::kCancelled ? 0 : 2;
  }
  const absl::StatusOr<DType> dtype =
      dtype_name == "mxfp4" ? absl::StatusOr<DType>(kMxfp4) : ParseDType(dtype_name);
  if (!dtype.ok() || (*dtype == DType::kU8 && dtype_name != "mxfp4")) {
    std::fprintf(stderr, "--dtype %s: expected f32, bf16, f16, f8_e4m3 or mxfp4\n",
                 dtype_name.c_str());
    return 2;
  }
  ThreadPool::SetDefaultThreads(threads);
  std::printf("linear_bench: threads=%d isa=%s bf16dot=%d hugepages=%d\n", threads,
              std::string(cpu::ActiveIsaName()).c_str(), cpu::ActiveIsaHasBf16() ? 1 : 0,
              g_hugepages ? 1 : 0);
  // Each limit is measured before and after the kernels it normalises and the larger value is
  // used: on a shared machine a limit measured during a busy moment would flatter the kernel.
  if (only == "resident") {
    // rows x GB/s of weights is the multiply-add rate (2 bytes per bf16 weight): compare it with
    // the f32 FMA and bf16 dot-product peaks.
    const auto [line, bw] = BenchDecode("resident", *dtype, rows, 256, 2048, passes, true);
    const double macs = bw * (256.0 * 2048.0 / static_cast<double>(WeightBytes(*dtype, 256, 2048))) *
                        static_cast<double>(rows);
    const double fma_peak = bench::MeasureFmaPeak(threads) / 2;  // MACs/s
    std::printf("%s  rows x GB/s %.1f  ratio to f32 FMA peak %.3f", line.c_str(),
                bw * static_cast<double>(rows) / 1e9, macs / fma_peak);
    if (cpu::ActiveIsaHasBf16()) {
      std::printf("  ratio to bf16 dot peak %.3f", macs / (MeasureBf16DotPeak(threads) / 2));
    }
    std::printf("\n");
    return 0;
  }
  if (only != "prefill") {
    double read_bw = bench::MeasureReadBandwidth(threads);
    std::vector<std::pair<std::string, double>> results;
    results.push_back(BenchDecode("dense", *dtype, rows, n, k, passes));
    results.push_back(BenchDecode("moe-expert", *dtype, rows, 768, 2048, passes));
    read_bw = std::max(read_bw, bench::MeasureReadBandwidth(threads));
    std::printf("limits: read bandwidth %.2f GB/s (best of before/after)\n", read_bw / 1e9);
    for (const auto& [line, bw] : results) {
      std::printf("%s  ratio to read bandwidth %.3f\n", line.c_str(), bw / read_bw);
    }
  }
  if (only == "decode") return 0;
  double fma_peak = bench::MeasureFmaPeak(threads);
  const double f32_flops = BenchPrefill(*dtype, prefill_rows, n, k, std::max(1, passes / 2));
  fma_peak = std::max(fma_peak, bench::MeasureFmaPeak(threads));
  std::printf("limits: f32 FMA peak %.1f GFLOP/s (best of before/after)\n", fma_peak / 1e9);
  std::printf("prefill %-7s m=%lld n=%lld k=%lld  %8.1f GFLOP/s  ratio to f32 FMA peak %.3f\n",
              WeightName(*dtype).c_str(), static_cast<long long>(prefill_rows),
              static_cast<long long>(n), static_cast<long long>(k), f32_flops / 1e9,
              f32_flops / fma_peak);
  if (*dtype == DType::kBF16 && cpu::ActiveIsaHasBf16()) {
    double dot_peak = MeasureBf16DotPeak(threads);
    cpu::SetBf16DotGemm(true);
    const double dot_flops = BenchPrefill(*dtype, prefill_rows, n, k, std::max(1, passes / 2));
    cpu::SetBf16DotGemm(false);
    dot_peak = std::max(dot_peak, MeasureBf16DotPeak(threads));
    std::printf("limits: bf16 dot-product (vdpbf16ps) peak %.1f GFLOP/s (best of before/after)\n",
                dot_peak / 1e9);
    std::printf("prefill %-7s (bf16 dot) m=%lld n=%lld k=%lld  %8.1f GFLOP/s  ratio to f32 FMA "
                "peak %.3f  ratio to bf16 dot peak %.3f\n",
                std::string(DTypeName(*dtype)).c_str(), static_cast<long long>(prefill_rows),
                static_cast<long long>(n), static_cast<long long>(k), dot_flops / 1e9,
                dot_flops / fma_peak, dot_flops / dot_peak);
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
