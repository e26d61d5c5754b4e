// SIMD Linear kernels shared by the AVX2 and AVX-512 builds (internal to kernels/cpu).
//
// Included only by linear_avx2.cc and linear_avx512.cc, each of which first defines `Vec` (the
// vector traits for its ISA: width, load/store, FMA, horizontal sum and the weight-dtype
// conversions) and the GEMM register-block sizes kGemmMr / kGemmNr, inside its own namespace.
// This file then instantiates the GEMV and GEMM kernels for that ISA. See linear.h for the
// algorithms and the contract. Thread safety: pure functions of their arguments.
//
// (No #pragma once: deliberately included once per ISA namespace.)

// ---- Weight loading ------------------------------------------------------------------------------

template <DType D>
struct WeightElem;
template <>
struct WeightElem<DType::kF32> {
  using E = float;
  static Vec::T Load(const E* p) { return Vec::Load(p); }
};
template <>
struct WeightElem<DType::kBF16> {
  using E = uint16_t;
  static Vec::T Load(const E* p) { return Vec::LoadBf16(p); }
};
template <>
struct WeightElem<DType::kF16> {
  using E = uint16_t;
  static Vec::T Load(const E* p) { return Vec::LoadF16(p); }
};
template <>
struct WeightElem<DType::kF8E4M3> {
  using E = uint8_t;
  static Vec::T Load(const E* p) { return Vec::LoadF8E4M3(p); }
};

// Loads `count` < Vec::kWidth elements, zero-filling the rest.
template <typename E, typename LoadFn>
inline Vec::T LoadPartial(const E* p, int64_t count, LoadFn load) {
  alignas(64) E buf[Vec::kWidth] = {};
  for (int64_t i = 0; i < count; ++i) buf[i] = p[i];
  return load(buf);
}

// ---- GEMV: MR rows of x against NR weight rows -----------------------------------------------------

// out[i * ldo + r] = sum_c x[i * ldx + c] * w_real[r][c] (+ bias[r]) for i < MR, r < NR, where
// w_real[r][c] = w[r * ldw + c] (* srow[r][c / block_k] when srow is non-null).
template <int MR, int NR, DType D>
inline void DotTile(const float* x, int64_t ldx, const typename WeightElem<D>::E* w, int64_t ldw,
                    int64_t k, const float* const* srow, int block_k, const float* bias,
                    float* out, int64_t ldo) {
  using T = Vec::T;
  using E = typename WeightElem<D>::E;
  constexpr int W = Vec::kWidth;
  // With few independent (row, column) pairs the FMA latency chains bound the loop (m = 1: two
  // dependent FMAs per 64-byte line); a second set of accumulators for odd vectors of each line
  // halves the chains.
  constexpr bool kSplit = MR * NR <= 2;
  T acc[MR][NR], acc2[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) acc[i][r] = acc2[i][r] = Vec::Zero();
  }
  const bool scaled = D == DType::kF8E4M3 && srow != nullptr;  // block scales: fp8 only
  const int64_t seg = scaled ? block_k : k;
  int64_t block = 0;  // index of the k-block (scale column) of segment [k0, k1)
  for (int64_t k0 = 0; k0 < k; k0 += seg, ++block) {
    const int64_t k1 = std::min(k, k0 + seg);
    T sc[NR];
    if (scaled) {
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) sc[r] = Vec::Set1(srow[r][block]);
    }
    int64_t c = k0;
    // One 64-byte line of every weight row per iteration (U vectors). No software prefetch: on
    // Zen 4 the hardware prefetchers stream the NR rows better than prefetchnta/t0 1 KiB ahead
    // (measured 10-25% faster single-threaded, docs/performance.md).
    constexpr int U = std::max<int>(1, 64 / static_cast<int>(sizeof(E)) / W);
    for (; c + U * W <= k1; c += U * W) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        T wv[NR];
#pragma GCC unroll 16
        for (int r = 0; r < NR; ++r) {
          wv[r] = WeightElem<D>::Load(w + r * ldw + c + u * W);
          if (scaled) wv[r] = Vec::Mul(wv[r], sc[r]);
        }
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const T xv = Vec::Load(x + i * ldx + c + u * W);
#pragma GCC unroll 16
          for (int r = 0; r < NR; ++r) {
            if (kSplit && (u & 1)) {
              acc2[i][r] = Vec::Fma(xv, wv[r], acc2[i][r]);
            } else {
              acc[i][r] = Vec::Fma(xv, wv[r], acc[i][r]);
            }
          }
        }
      }
    }
    for (; c + W <= k1; c += W) {
      T wv[NR];
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) {
        wv[r] = WeightElem<D>::Load(w + r * ldw + c);
        if (scaled) wv[r] = Vec::Mul(wv[r], sc[r]);
      }
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const T xv = Vec::Load(x + i * ldx + c);
#pragma GCC unroll 16
        for (int r = 0; r < NR; ++r) acc[i][r] = Vec::Fma(xv, wv[r], acc[i][r]);
      }
    }
    if (c < k1) {
      const int64_t rem = k1 - c;
      T wv[NR];
      for (int r = 0; r < NR; ++r) {
        wv[r] = LoadPartial(w + r * ldw + c, rem, [](const E* p) { return WeightElem<D>::Load(p); });
        if (scaled) wv[r] = Vec::Mul(wv[r], sc[r]);
      }
      for (int i = 0; i < MR; ++i) {
        const T xv = LoadPartial(x + i * ldx + c, rem, [](const float* p) { return Vec::Load(p); });
        for (int r = 0; r < NR; ++r) acc[i][r] = Vec::Fma(xv, wv[r], acc[i][r]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const T total = kSplit ? Vec::Add(acc[i][r], acc2[i][r]) : acc[i][r];
      out[i * ldo + r] = Vec::Sum(total) + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

// NR weight rows per tile: GemvNr(MR), except for one row of x with bf16/f16 weights, where each
// thread streams one weight row at a time (a single sequential stream, which Zen 4's prefetchers
// follow best: 1.2-1.5x the 4-row tile in A/B runs, docs/performance.md). DotTile gives that
// single row two accumulator chains (even / odd vectors of each line): one chain capped a core at
// ~38 GB/s with the weights in L2, two reach ~57, above a core's share of DRAM bandwidth. f32
// (4 FMAs per line), fp8 (ALU-bound) and AVX2 (4 FMAs per line, unmeasured) keep the tile's
// independent accumulators.
template <int MR, DType D>
constexpr int GemvTileRows() {
  return MR == 1 && Vec::kWidth == 16 && (D == DType::kBF16 || D == DType::kF16) ? 1
                                                                                 : GemvNr(MR);
}

template <int MR, DType D>
void GemvT(const LinearArgs& a, int64_t j0, int64_t j1) {
  using E = typename WeightElem<D>::E;
  constexpr int NR = GemvTileRows<MR, D>();
  const E* w = static_cast<const E*>(a.w);
  const float* srow[NR];
  const bool scaled = a.scale_inv != nullptr;
  auto tile_scales = [&](int64_t j, int nr) -> const float* const* {
    if (!scaled) return nullptr;
    for (int r = 0; r < nr; ++r) srow[r] = a.scale_inv + ((j + r) / a.block_n) * a.scale_cols;
    return srow;
  };
  int64_t j = j0;
  for (; j + NR <= j1; j += NR) {
    DotTile<MR, NR, D>(a.x, a.ldx, w + j * a.k, a.k, a.k, tile_scales(j, NR), a.block_k,
                       a.bias != nullptr ? a.bias + j : nullptr, a.out + j, a.ldo);
  }
  for (; j < j1; ++j) {
    DotTile<MR, 1, D>(a.x, a.ldx, w + j * a.k, a.k, a.k, tile_scales(j, 1), a.block_k,
                      a.bias != nullptr ? a.bias + j : nullptr, a.out + j, a.ldo);
  }
}

template <DType D>
void GemvD(const LinearArgs& a, int64_t j0, int64_t j1) {
  switch (a.m) {
    case 1: return GemvT<1, D>(a, j0, j1);
    case 2: return GemvT<2, D>(a, j0, j1);
    case 3: return GemvT<3, D>(a, j0, j1);
    case 4: return GemvT<4, D>(a, j0, j1);
    case 5: return GemvT<5, D>(a, j0, j1);
    case 6: return GemvT<6, D>(a, j0, j1);
    case 7: return GemvT<7, D>(a, j0, j1);
    case 8: return GemvT<8, D>(a, j0, j1);
    default: CHECK(false) << "Gemv with m = " << a.m;
  }
}

void GemvImpl(const LinearArgs& a, int64_t j0, int64_t j1) {
  switch (a.w_dtype) {
    case DType::kF32: return GemvD<DType::kF32>(a, j0, j1);
    case DType::kBF16: return GemvD<DType::kBF16>(a, j0, j1);
    case DType::kF16: return GemvD<DType::kF16>(a, j0, j1);
    case DType::kF8E4M3: return GemvD<DType::kF8E4M3>(a, j0, j1);
    default: CHECK(false) << "Gemv with weight dtype " << DTypeName(a.w_dtype);
  }
}

// ---- GEMM: packed weight panels and an outer-product micro-kernel -----------------------------------

constexpr int kGemmKc = 256;  // k-block: a packed panel is kGemmKc x kGemmNr f32

// Converts weight rows [j, j + nvalid) x columns [k0, k0 + kc) to f32 and stores them transposed:
// packed[kk * kGemmNr + r]; rows >= nvalid are zero.
template <DType D>
void PackPanel(const LinearArgs& a, int64_t j, int nvalid, int64_t k0, int64_t kc,
               float* packed) {
  using E = typename WeightElem<D>::E;
  constexpr int W = Vec::kWidth;
  const E* w = static_cast<const E*>(a.w);
  alignas(64) float row[kGemmKc + W];
  for (int r = 0; r < kGemmNr; ++r) {
    if (r >= nvalid) {
      for (int64_t kk = 0; kk < kc; ++kk) packed[kk * kGemmNr + r] = 0.0f;
      continue;
    }
    const E* src = w + (j + r) * a.k + k0;
    int64_t kk = 0;
    for (; kk + W <= kc; kk += W) Vec::Store(row + kk, WeightElem<D>::Load(src + kk));
    if (kk < kc) {
      Vec::Store(row + kk, LoadPartial(src + kk, kc - kk,
                                       [](const E* p) { return WeightElem<D>::Load(p); }));
    }
    if (a.scale_inv != nullptr) {
      const float* srow = a.scale_inv + ((j + r) / a.block_n) * a.scale_cols;
      for (int64_t c = k0; c < k0 + kc;) {
        const int64_t end = std::min(k0 + kc, (c / a.block_k + 1) * a.block_k);
        const float s = srow[c / a.block_k];
        for (; c < end; ++c) row[c - k0] *= s;
      }
    }
    for (kk = 0; kk < kc; ++kk) packed[kk * kGemmNr + r] = row[kk];
  }
}

// out[i][c] (+)= sum_kk x[i * ldx + kk] * packed[kk * kGemmNr + c] for i < MR, c < ncols.
template <int MR>
void MicroKernel(const float* x, int64_t ldx, const float* packed, int64_t kc, float* out,
                 int64_t ldo, int ncols, bool accumulate) {
  using T = Vec::T;
  constexpr int W = Vec::kWidth;
  constexpr int NV = kGemmNr / W;
  T acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Vec::Zero();
  }
  for (int64_t kk = 0; kk < kc; ++kk) {
    T b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = Vec::Load(packed + kk * kGemmNr + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T av = Vec::Set1(x[i * ldx + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = Vec::Fma(av, b[v], acc[i][v]);
    }
  }
  if (ncols == kGemmNr) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* p = out + i * ldo + v * W;
        Vec::Store(p, accumulate ? Vec::Add(acc[i][v], Vec::Load(p)) : acc[i][v]);
      }
    }
  } else {
    alignas(64) float tmp[kGemmNr];
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) Vec::Store(tmp + v * W, acc[i][v]);
      float* p = out + i * ldo;
      for (int c = 0; c < ncols; ++c) p[c] = accumulate ? p[c] + tmp[c] : tmp[c];
    }
  }
}

using MicroKernelFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int,
                               bool);

template <int... Is>
constexpr std::array<MicroKernelFn, sizeof...(Is)> MakeMicroKernels(
    std::integer_sequence<int, Is...>) {
  return {&MicroKernel<Is + 1>...};
}

// PackPanel for MXFP4 weights: rows decoded block by block (k0 and kc are multiples of 32:
// kGemmKc is, and MXFP4 k is).
void PackPanelMxfp4(const LinearArgs& a, int64_t j, int nvalid, int64_t k0, int64_t kc,
                    float* packed) {
  const uint8_t* w = static_cast<const uint8_t*>(a.w);
  const int64_t blocks = a.k / kMxfp4BlockSize;
  alignas(64) float row[kGemmKc];
  for (int r = 0; r < kGemmNr; ++r) {
    if (r >= nvalid) {
      for (int64_t kk = 0; kk < kc; ++kk) packed[kk * kGemmNr + r] = 0.0f;
      continue;
    }
    const uint8_t* codes = w + (j + r) * (a.k / 2);
    const uint8_t* scales = a.mx_scales + (j + r) * blocks;
    for (int64_t kk = 0; kk < kc; kk += kMxfp4BlockSize) {
      const int64_t b = (k0 + kk) / kMxfp4BlockSize;
      Vec::DecodeMxfp4Block(codes + b * (kMxfp4BlockSize / 2), scales[b], row + kk);
    }
    for (int64_t kk = 0; kk < kc; ++kk) packed[kk * kGemmNr + r] = row[kk];
  }
}

// kU8 stands for MXFP4 here (GemmImpl sends MXFP4 weights there).
template <DType D>
void PackPanelD(const LinearArgs& a, int64_t j, int nvalid, int64_t k0, int64_t kc,
                float* packed) {
  if constexpr (D == DType::kU8) {
    PackPanelMxfp4(a, j, nvalid, k0, kc, packed);
  } else {
    PackPanel<D>(a, j, nvalid, k0, kc, packed);
  }
}

template <DType D>
void GemmD(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  static constexpr auto kKernels = MakeMicroKernels(std::make_integer_sequence<int, kGemmMr>());
  thread_local std::vector<float> packed_storage;
  packed_storage.resize(static_cast<size_t>(kGemmKc) * kGemmNr + 16);
  // 64-byte aligned start.
  float* packed = reinterpret_cast<float*>(
      (reinterpret_cast<uintptr_t>(packed_storage.data()) + 63) & ~static_cast<uintptr_t>(63));
  for (int64_t k0 = 0; k0 < a.k; k0 += kGemmKc) {
    const int64_t kc = std::min<int64_t>(kGemmKc, a.k - k0);
    for (int64_t j = j0; j < j1; j += kGemmNr) {
      const int nvalid = static_cast<int>(std::min<int64_t>(kGemmNr, j1 - j));
      PackPanelD<D>(a, j, nvalid, k0, kc, packed);
      for (int64_t i = i0; i < i1; i += kGemmMr) {
        const int rows = static_cast<int>(std::min<int64_t>(kGemmMr, i1 - i));
        kKernels[rows - 1](a.x + i * a.ldx + k0, a.ldx, packed, kc, a.out + i * a.ldo + j, a.ldo,
                           nvalid, k0 > 0);
      }
    }
  }
  if (a.bias != nullptr) {
    for (int64_t i = i0; i < i1; ++i) {
      float* o = a.out + i * a.ldo;
      for (int64_t j = j0; j < j1; ++j) o[j] += a.bias[j];
    }
  }
}

void GemmImpl(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (a.mx_scales != nullptr) return GemmD<DType::kU8>(a, i0, i1, j0, j1);  // PackPanelMxfp4
  switch (a.w_dtype) {
    case DType::kF32: return GemmD<DType::kF32>(a, i0, i1, j0, j1);
    case DType::kBF16: return GemmD<DType::kBF16>(a, i0, i1, j0, j1);
    case DType::kF16: return GemmD<DType::kF16>(a, i0, i1, j0, j1);
    case DType::kF8E4M3: return GemmD<DType::kF8E4M3>(a, i0, i1, j0, j1);
    default: CHECK(false) << "Gemm with weight dtype " << DTypeName(a.w_dtype);
  }
}
