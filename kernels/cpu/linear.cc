// CPU Linear: ISA dispatch, threading and the scalar fallback (see linear.h).
#include "kernels/cpu/linear.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace tessera::cpu {
namespace {

// Converts weight row j to f32 (dequantised with its block scales) into `row` [k].
void WeightRowToF32(const LinearArgs& a, int64_t j, float* row) {
  if (a.mx_scales != nullptr) {
    Mxfp4RowToF32(static_cast<const uint8_t*>(a.w) + j * (a.k / 2),
                  a.mx_scales + j * (a.k / kMxfp4BlockSize), 0, a.k, row);
    return;
  }
  const size_t esize = DTypeSize(a.w_dtype);
  ConvertBuffer(static_cast<const char*>(a.w) + static_cast<size_t>(j * a.k) * esize, a.w_dtype,
                row, DType::kF32, static_cast<size_t>(a.k));
  if (a.scale_inv != nullptr) {
    const float* srow = a.scale_inv + (j / a.block_n) * a.scale_cols;
    for (int64_t c = 0; c < a.k; ++c) row[c] *= srow[c / a.block_k];
  }
}

float DotScalar(const float* x, const float* w, int64_t k) {
  float s[4] = {0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 4 <= k; c += 4) {
    for (int u = 0; u < 4; ++u) s[u] += x[c + u] * w[c + u];
  }
  for (; c < k; ++c) s[0] += x[c] * w[c];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Work below this many multiply-adds runs on the calling thread only.
constexpr int64_t kMinParallelWork = 1 << 16;

std::atomic<int> g_bf16_dot{-1};  // -1: read TESSERA_LINEAR_BF16_DOT

}  // namespace

void Mxfp4RowToF32(const uint8_t* codes, const uint8_t* scales, int64_t c0, int64_t count,
                   float* out) {
  for (int64_t c = c0; c < c0 + count; ++c) {
    const uint8_t byte = codes[c / 2];
    const int code = c % 2 == 0 ? byte & 0xF : byte >> 4;
    out[c - c0] = std::ldexp(kE2M1Values[code], static_cast<int>(scales[c / kMxfp4BlockSize]) - 127);
  }
}

void PermuteRowsForMxfp4(const float* x, int64_t ldx, int64_t m, int64_t k, int half,
                         float* dst) {
  CHECK(half > 0 && (kMxfp4BlockSize / 2) % half == 0) << "PermuteRowsForMxfp4 half " << half;
  for (int64_t i = 0; i < m; ++i) {
    const float* src = x + i * ldx;
    float* d = dst + i * k;
    for (int64_t g = 0; g < k; g += 2 * half) {
      for (int64_t t = 0; t < half; ++t) {
        d[g + t] = src[g + 2 * t];
        d[g + half + t] = src[g + 2 * t + 1];
      }
    }
  }
}

bool Bf16DotGemmEnabled() {
  int v = g_bf16_dot.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("TESSERA_LINEAR_BF16_DOT");
    v = (env != nullptr && env[0] == '1') ? 1 : 0;
    g_bf16_dot.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

bool Bf16DotGemmSupported() { return ActiveIsa() == Isa::kAvx512 && HasAvx512Bf16(); }

void SetBf16DotGemm(bool enabled) { g_bf16_dot.store(enabled ? 1 : 0, std::memory_order_relaxed); }

void GemvScalar(const LinearArgs& a, int64_t j0, int64_t j1) {
  GemmScalar(a, 0, a.m, j0, j1);
}

void GemmScalar(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  std::vector<float> row(static_cast<size_t>(a.k));
  for (int64_t j = j0; j < j1; ++j) {
    WeightRowToF32(a, j, row.data());
    const float b = a.bias != nullptr ? a.bias[j] : 0.0f;
    for (int64_t i = i0; i < i1; ++i) {
      a.out[i * a.ldo + j] = DotScalar(a.x + i * a.ldx, row.data(), a.k) + b;
    }
  }
}

namespace {

LinearArgs MakeLinearArgs(const Tensor& x, const LinearWeight& w, const Tensor* bias,
                          Tensor& out) {
  LinearArgs a;
  a.m = x.dim(0);
  a.k = x.dim(1);
  a.n = w.weight.dim(0);
  a.x = static_cast<const float*>(x.raw_data());
  a.ldx = a.m > 1 ? x.stride(0) : a.k;
  a.w = w.weight.raw_data();
  a.w_dtype = w.weight.dtype();
  if (w.scale_inv.defined()) {
    a.scale_inv = w.scale_inv.data<float>();
    a.scale_cols = w.scale_inv.dim(1);
    a.block_n = w.block_n;
    a.block_k = w.block_k;
  }
  a.bias = bias != nullptr && bias->defined() ? bias->data<float>() : nullptr;
  a.out = static_cast<float*>(out.raw_data());
  a.ldo = a.n;
  a.f32_input = w.f32_input;
  if (w.is_mxfp4()) a.mx_scales = w.mx_scales.data<uint8_t>();
  return a;
}

using GemvFn = void (*)(const LinearArgs&, int64_t, int64_t);

// Bytes of one weight row (codes and scales for MXFP4).
int64_t WeightRowBytes(const LinearArgs& a) {
  if (a.mx_scales != nullptr) return a.k / 2 + a.k / kMxfp4BlockSize;
  return a.k * static_cast<int64_t>(DTypeSize(a.w_dtype));
}

// The GEMV kernel of `isa` (callers read ActiveIsa() once per call: AttachMxfp4X's x layout
// must match the kernel).
GemvFn ActiveGemv(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return &avx512::Gemv;
    case Isa::kAvx2:
      return &avx2::Gemv;
    default:
      return &GemvScalar;
  }
}

// Points a.xp at x reordered for the MXFP4 GEMV of `isa` (PermuteRowsForMxfp4: groups of 32
// elements for AVX-512, of 8 for AVX2), kept in `storage`. Other weights and ISAs need nothing.
void AttachMxfp4X(LinearArgs& a, Isa isa, std::vector<float>& storage) {
  if (a.mx_scales == nullptr || isa == Isa::kScalar) return;
  a.xp_half = isa == Isa::kAvx512 ? 16 : 4;
  storage.resize(static_cast<size_t>(a.m * a.k));
  PermuteRowsForMxfp4(a.x, a.ldx, a.m, a.k, a.xp_half, storage.data());
  a.xp = storage.data();
  a.ldxp = a.k;
}

absl::Status RunLinear(const LinearArgs& a);

// out[0, m)[j0, j1) for m <= kSmallGemmMaxRows with the GEMV kernel: rows of x in balanced chunks,
// weight columns in blocks of ~128 KiB so that every chunk after the first reads the block from
// L2 rather than DRAM (the weights still stream from memory once). With several rows the GEMV is
// bound by multiply-adds, not bandwidth, and the kernels are most efficient at about 4 rows
// (single-thread, L2-resident, rows x GB/s of weights: f32 FMA path 109 at m = 4, 91 at m = 8;
// bf16 dot path ~200 for 4..8 rows but 100-120 for 2-3 rows; docs/performance.md). So f32 /
// f16 / fp8 weights take chunks of <= 4 rows; the bf16 dot path keeps up to 8 rows whole and
// splits larger m into chunks of 4-7 rows.
void GemvRowChunks(GemvFn gemv, const LinearArgs& a, int64_t j0, int64_t j1) {
  // The MXFP4 GEMV, like the f32 one, peaks at 3-4 rows (single-thread, L2-resident, rows x GB/s
  // of MXFP4 bytes: 13.6 at m = 1, 22.0 at 3, 23.7 at 4, 15-17 at 5-8), so it takes <= 4-row
  // chunks too.
  // The AVX2 MXFP4 GEMV (x in groups of 8, xp_half 4) peaks at 2-3 rows (16.0 at m = 3, 13.8 at
  // m = 4, 15.1-15.5 for m = 4..8 in 3-row chunks), so it takes <= 3-row chunks.
  const bool dot = a.xb != nullptr;
  const int64_t chunk = a.mx_scales != nullptr && a.xp_half == 4 ? 3 : 4;
  if (a.m <= (dot ? kGemvMaxRows : chunk)) return gemv(a, j0, j1);
  const int64_t parts = dot ? a.m / 4 : (a.m + chunk - 1) / chunk;
  const int64_t row_bytes = WeightRowBytes(a);
  const int64_t block =
      std::max<int64_t>(16, (int64_t{128} << 10) / std::max<int64_t>(1, row_bytes) / 16 * 16);
  for (int64_t jb = j0; jb < j1; jb += block) {
    const int64_t je = std::min(j1, jb + block);
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t i0 = a.m * p / parts, i1 = a.m * (p + 1) / parts;
      LinearArgs c = a;
      c.m = i1 - i0;
      c.x = a.x + i0 * a.ldx;
      c.out = a.out + i0 * a.ldo;
      if (a.xb != nullptr) c.xb = a.xb + i0 * a.ldxb;
      if (a.xp != nullptr) c.xp = a.xp + i0 * a.ldxp;
      gemv(c, jb, je);
    }
  }
}

// The opt-in bf16 dot-product path (SetBf16DotGemm): bf16 weights on an AVX512_BF16 CPU.
bool UseBf16Dot(const LinearArgs& a) {
  return !a.f32_input && a.w_dtype == DType::kBF16 && Bf16DotGemmSupported() &&
         Bf16DotGemmEnabled();
}

// Rounds a's x rows to bf16 into `storage` (rows padded with zeros to a multiple of 32) and
// points a.xb at them.
void AttachBf16X(LinearArgs& a, std::vector<uint16_t>& storage) {
  a.ldxb = (a.k + 31) / 32 * 32;
  storage.resize(static_cast<size_t>(a.m * a.ldxb));
  avx512::ConvertRowsToBf16(a.x, a.ldx, a.m, a.k, storage.data(), a.ldxb);
  a.xb = storage.data();
}

}  // namespace

absl::Status LinearCpu(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out) {
  return RunLinear(MakeLinearArgs(x, w, &bias, out));
}

absl::Status LinearGroupCpu(absl::Span<const LinearProblem> problems) {
  // Decode-sized problems are cut into 16-column units and dealt out as chunks of one parallel
  // job (the same column split LinearCpu uses, across problems); the rest run one by one.
  std::vector<LinearArgs> gemvs;
  std::vector<std::vector<uint16_t>> xb(problems.size());
  std::vector<std::vector<float>> xp(problems.size());
  const Isa isa = ActiveIsa();  // read once: the x layout (AttachMxfp4X) depends on it
  const GemvFn gemv = ActiveGemv(isa);
  int64_t total_bytes = 0, total_work = 0;
  for (const LinearProblem& p : problems) {
    LinearArgs a = MakeLinearArgs(*p.x, *p.w, p.bias, *p.out);
    if (a.m == 0 || a.n == 0) continue;
    if (a.m > kSmallGemmMaxRows || a.k == 0) {
      RETURN_IF_ERROR(RunLinear(a));
      continue;
    }
    if (UseBf16Dot(a)) AttachBf16X(a, xb[gemvs.size()]);
    AttachMxfp4X(a, isa, xp[gemvs.size()]);
    total_bytes += a.n * WeightRowBytes(a);
    total_work += a.m * a.n * a.k;
    gemvs.push_back(a);
  }
  if (gemvs.empty()) return absl::OkStatus();
  ThreadPool& pool = ThreadPool::Default();
  const int64_t threads = pool.num_threads();
  // Chunks of >= 64 KiB of weights, about 4 per thread overall.
  const int64_t target = std::max<int64_t>(int64_t{1} << 16, total_bytes / (threads * 4));
  struct Chunk {
    int32_t problem;
    int64_t j0, j1;
  };
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < gemvs.size(); ++i) {
    const LinearArgs& a = gemvs[i];
    const int64_t units = (a.n + 15) / 16;
    const int64_t bytes = a.n * WeightRowBytes(a);
    const int64_t parts = std::clamp<int64_t>(bytes / target, 1, units);
    for (int64_t c = 0; c < parts; ++c) {
      const int64_t j0 = std::min(a.n, units * c / parts * 16);
      const int64_t j1 = std::min(a.n, units * (c + 1) / parts * 16);
      if (j0 < j1) chunks.push_back({static_cast<int32_t>(i), j0, j1});
    }
  }
  if (threads <= 1 || chunks.size() <= 1 || total_work < kMinParallelWork) {
    for (const Chunk& c : chunks) {
      GemvRowChunks(gemv, gemvs[c.problem], c.j0, c.j1);
    }
    return absl::OkStatus();
  }
  pool.ParallelFor(static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const LinearArgs& a = gemvs[chunks[c].problem];
      GemvRowChunks(gemv, a, chunks[c].j0, chunks[c].j1);
    }
  });
  return absl::OkStatus();
}

namespace {

absl::Status RunLinear(const LinearArgs& args) {
  LinearArgs a = args;
  std::vector<uint16_t> xb;  // activations rounded to bf16 for the opt-in vdpbf16ps path
  if (a.m == 0 || a.n == 0) return absl::OkStatus();
  if (a.k == 0) {
    for (int64_t i = 0; i < a.m; ++i) {
      for (int64_t j = 0; j < a.n; ++j) a.out[i * a.ldo + j] = a.bias ? a.bias[j] : 0.0f;
    }
    return absl::OkStatus();
  }

  const Isa isa = ActiveIsa();
  using GemmFn = void (*)(const LinearArgs&, int64_t, int64_t, int64_t, int64_t);
  GemvFn gemv = &GemvScalar;
  GemmFn gemm = &GemmScalar;
  int64_t panel = 16;  // column granularity of the thread split (the GEMM's panel width)
  if (isa == Isa::kAvx512) {
    gemv = &avx512::Gemv;
    gemm = &avx512::Gemm;
    panel = 96;  // a multiple of both AVX-512 GEMM panel widths (48 f32, 32 bf16-dot)
  } else if (isa == Isa::kAvx2) {
    gemv = &avx2::Gemv;
    gemm = &avx2::Gemm;
    panel = 16;
  }

  ThreadPool& pool = ThreadPool::Default();
  const int64_t work = a.m * a.n * a.k;
  const int64_t threads = work < kMinParallelWork ? 1 : pool.num_threads();
  if (UseBf16Dot(a)) AttachBf16X(a, xb);
  std::vector<float> xp;  // x reordered for the MXFP4 GEMV
  if (a.m <= kSmallGemmMaxRows) AttachMxfp4X(a, isa, xp);

  if (a.m <= kSmallGemmMaxRows) {
    // Contiguous column ranges, a multiple of 16 columns (64-byte output lines) each, so every
    // thread streams its own slices of the weight and no output line is shared. A few chunks per
    // thread (each still >= ~64 KiB of weights) let a thread that got descheduled on a busy
    // machine be covered by the others.
    const int64_t units = (a.n + 15) / 16;
    const int64_t unit_bytes = 16 * WeightRowBytes(a);
    const int64_t chunks = std::min<int64_t>(
        {units, threads * 4, std::max<int64_t>(threads, (units * unit_bytes) >> 16)});
    if (threads <= 1 || chunks <= 1) {
      GemvRowChunks(gemv, a, 0, a.n);
      return absl::OkStatus();
    }
    pool.ParallelFor(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t j0 = std::min(a.n, units * c / chunks * 16);
        const int64_t j1 = std::min(a.n, units * (c + 1) / chunks * 16);
        if (j0 < j1) GemvRowChunks(gemv, a, j0, j1);
      }
    });
    return absl::OkStatus();
  }

  // GEMM: split the column panels into a few chunks per thread (dynamic balance on a busy
  // machine); when there are fewer panels than threads, split the rows too.
  const int64_t panels = (a.n + panel - 1) / panel;
  const int64_t col_chunks = std::min<int64_t>(panels, threads > 1 ? threads * 4 : 1);
  const int64_t row_chunks =
      std::min<int64_t>((a.m + 7) / 8, std::max<int64_t>(1, threads / col_chunks));
  const int64_t items = col_chunks * row_chunks;
  auto run = [&](int64_t item) {
    const int64_t cc = item % col_chunks, rc = item / col_chunks;
    const int64_t j0 = std::min(a.n, panels * cc / col_chunks * panel);
    const int64_t j1 = std::min(a.n, panels * (cc + 1) / col_chunks * panel);
    const int64_t i0 = a.m * rc / row_chunks, i1 = a.m * (rc + 1) / row_chunks;
    if (j0 >= j1 || i0 >= i1) return;
    if (a.xb != nullptr) {
      avx512::GemmBf16Dot(a, a.xb, a.ldxb, i0, i1, j0, j1);
    } else {
      gemm(a, i0, i1, j0, j1);
    }
  };
  if (items <= 1) {
    run(0);
  } else {
    pool.ParallelFor(items, 1, [&](int64_t b, int64_t e) {
      for (int64_t it = b; it < e; ++it) run(it);
    });
  }
  return absl::OkStatus();
}

}  // namespace

}  // namespace tessera::cpu
