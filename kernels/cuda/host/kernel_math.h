// Index and ordering arithmetic shared by the CUDA kernels and their CPU unit tests.
//
// Every function here is __host__ __device__ under nvcc and plain inline C++ elsewhere, so the
// exact code the kernels run is tested on the CPU (tests/kernels/cuda_kernel_math_test.cc) in
// builds without a GPU. Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define TESSERA_HD __host__ __device__ __forceinline__
#else
#define TESSERA_HD inline
#endif

namespace tessera::cuda {

// The sequence holding query row t of a varlen batch and the row's absolute position:
// qsl[0..num_seqs] (stride qsl_stride) are the sequences' first rows (non-decreasing),
// seq_lens[s] (stride sl_stride) their context lengths including the new rows. Returns false
// when t lies outside [qsl[0], qsl[num_seqs]). Empty sequences are skipped: the answer is the
// last s with qsl[s] <= t, whose range then contains t.
TESSERA_HD bool FindQueryRow(const int32_t* qsl, int64_t qsl_stride, const int32_t* seq_lens,
                             int64_t sl_stride, int64_t num_seqs, int64_t t, int64_t* seq,
                             int64_t* pos) {
  if (num_seqs <= 0) return false;
  if (t < qsl[0] || t >= qsl[num_seqs * qsl_stride]) return false;
  int64_t lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (qsl[mid * qsl_stride] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int64_t begin = qsl[lo * qsl_stride], end = qsl[(lo + 1) * qsl_stride];
  *seq = lo;
  *pos = static_cast<int64_t>(seq_lens[lo * sl_stride]) - (end - begin) + (t - begin);
  return true;
}

// The keys [*k0, *k1) that split `split` of `num_splits` covers for a query at position pos:
// the visible keys are [max(0, pos - window + 1) (window > 0) or 0, min(pos + 1, capacity)),
// cut into num_splits equal contiguous shares (the last ones may be empty).
TESSERA_HD void SplitKeyRange(int64_t pos, int64_t capacity, int64_t window, int num_splits,
                              int split, int64_t* k0, int64_t* k1) {
  const int64_t end = pos + 1 < capacity ? pos + 1 : capacity;
  int64_t start = 0;
  if (window > 0 && pos - window + 1 > 0) start = pos - window + 1;
  const int64_t n = end - start > 0 ? end - start : 0;
  const int64_t per = (n + num_splits - 1) / num_splits;
  const int64_t b = start + split * per;
  const int64_t e = b + per < end ? b + per : end;
  *k0 = b;
  *k1 = e > b ? e : b;
}

// A 64-bit key whose descending order is the sampler's rank order: larger logit first, lower
// index on ties (kernels/cpu/sampling.cc RankLess). -0.0 and +0.0 compare equal there, so both
// map to the key of +0.0. Logits must not be NaN (the sampler rejects them first).
TESSERA_HD uint64_t RankKey(float logit, int32_t index) {
  uint32_t u;
#ifdef __CUDA_ARCH__
  u = __float_as_uint(logit == 0.0f ? 0.0f : logit);
#else
  const float f = logit == 0.0f ? 0.0f : logit;
  std::memcpy(&u, &f, sizeof(u));
#endif
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(index));
}

// The largest key K such that at_least(K) holds, for a predicate that holds at K = 0 and is
// monotone (true up to some key, false above): the bitwise search the sampler runs with
// block-wide counts (top-k: "at least k keys >= K") and sums (top-p: "mass of keys >= K reaches
// the target"). 64 evaluations.
template <typename Pred>
TESSERA_HD uint64_t LargestKeyWhere(Pred at_least) {
  uint64_t key = 0;
  for (int b = 63; b >= 0; --b) {
    const uint64_t candidate = key | (uint64_t{1} << b);
    if (at_least(candidate)) key = candidate;
  }
  return key;
}

}  // namespace tessera::cuda
