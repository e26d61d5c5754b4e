// CPU paged attention and KV-cache writes; see attention.h.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/cpu_features.h"

namespace tessera::cpu {

namespace attention_internal {

void ScoresRowScalar(const float* q, const float* const* keys, int64_t n, int64_t dk, float* s) {
  for (int64_t j = 0; j < n; ++j) {
    const float* k = keys[j];
    float sum = 0.0f;
    for (int64_t d = 0; d < dk; ++d) sum += q[d] * k[d];
    s[j] = sum;
  }
}

void AccumulateRowScalar(float* acc, float alpha, const float* p, const float* const* values,
                         int64_t n, int64_t dv) {
  for (int64_t d = 0; d < dv; ++d) acc[d] *= alpha;
  for (int64_t j = 0; j < n; ++j) {
    const float pj = p[j];
    const float* v = values[j];
    for (int64_t d = 0; d < dv; ++d) acc[d] += pj * v[d];
  }
}

}  // namespace attention_internal

namespace {

using attention_internal::ScoresRowFn;
using AccumulateRowsFn = void (*)(float* acc, int64_t acc_stride, const float* alpha,
                                  const float* p, int64_t p_stride, int64_t rows,
                                  const float* const* values, int64_t n, int64_t dv);

// Row-by-row AccumulateRows for the ISAs without a multi-row kernel.
void AccumulateRowsScalar(float* acc, int64_t acc_stride, const float* alpha, const float* p,
                          int64_t p_stride, int64_t rows, const float* const* values, int64_t n,
                          int64_t dv) {
  for (int64_t r = 0; r < rows; ++r) {
    attention_internal::AccumulateRowScalar(acc + r * acc_stride, alpha[r], p + r * p_stride,
                                            values, n, dv);
  }
}

void AccumulateRowsAvx2(float* acc, int64_t acc_stride, const float* alpha, const float* p,
                        int64_t p_stride, int64_t rows, const float* const* values, int64_t n,
                        int64_t dv) {
  for (int64_t r = 0; r < rows; ++r) {
    attention_internal::AccumulateRowAvx2(acc + r * acc_stride, alpha[r], p + r * p_stride, values,
                                          n, dv);
  }
}

// Element `i` of a 1-D integer tensor (i32 or i64), read through its stride.
int64_t IntAt(const Tensor& t, int64_t i) {
  const int64_t off = i * t.stride(0);
  if (t.dtype() == DType::kI64) return t.data<int64_t>()[off];
  return t.data<int32_t>()[off];
}

// Element [r, c] of a 2-D i32 tensor, read through its strides.
int32_t Int2At(const Tensor& t, int64_t r, int64_t c) {
  return t.data<int32_t>()[r * t.stride(0) + c * t.stride(1)];
}

absl::Status CheckF32(const Tensor& t, absl::string_view name, int ndim) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (t.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be f32, got ", DTypeName(t.dtype())));
  }
  if (t.ndim() != ndim) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be ", ndim, "-D, got ", ShapeToString(t.shape())));
  }
  return absl::OkStatus();
}

absl::Status CheckInt(const Tensor& t, absl::string_view name, int ndim, DType dtype) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be ", DTypeName(dtype), ", got ", DTypeName(t.dtype())));
  }
  if (t.ndim() != ndim) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be ", ndim, "-D, got ", ShapeToString(t.shape())));
  }
  return absl::OkStatus();
}

// A contiguous copy of `n` elements starting at `src` with element stride `stride`, or `src`
// itself when the stride is 1.
const float* RowPtr(const float* src, int64_t stride, int64_t n, float* scratch) {
  if (stride == 1 || n <= 1) return src;
  for (int64_t i = 0; i < n; ++i) scratch[i] = src[i * stride];
  return scratch;
}

struct WorkItem {
  int32_t seq;
  int32_t kv_begin, kv_end;        // kv heads
  int32_t token_begin, token_end;  // query tokens of the sequence, relative to its first
  int32_t head_begin, head_end;    // query heads within each kv head's group
};

constexpr int64_t kKeyTile = 32;

}  // namespace

absl::Status ValidateWriteKvCacheArgs(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                                      const Tensor& k_cache, const Tensor& v_cache) {
  RETURN_IF_ERROR(CheckF32(k, "WriteKvCache: k", 3));
  RETURN_IF_ERROR(CheckF32(v, "WriteKvCache: v", 3));
  RETURN_IF_ERROR(CheckF32(k_cache, "WriteKvCache: k_cache", 4));
  RETURN_IF_ERROR(CheckF32(v_cache, "WriteKvCache: v_cache", 4));
  RETURN_IF_ERROR(CheckInt(slot_mapping, "WriteKvCache: slot_mapping", 1, DType::kI64));
  const int64_t num_tokens = k.dim(0);
  if (v.dim(0) != num_tokens || slot_mapping.dim(0) != num_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvCache: k ", ShapeToString(k.shape()), ", v ", ShapeToString(v.shape()),
                     " and slot_mapping ", ShapeToString(slot_mapping.shape()),
                     " must have the same number of tokens"));
  }
  for (int d = 0; d < 3; ++d) {
    if (k_cache.dim(d) != v_cache.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WriteKvCache: k_cache ", ShapeToString(k_cache.shape()), " and v_cache ",
          ShapeToString(v_cache.shape()), " differ in [num_blocks, block_size, num_kv_heads]"));
    }
  }
  if (k.dim(1) != k_cache.dim(2) || k.dim(2) != k_cache.dim(3)) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvCache: k ", ShapeToString(k.shape()), " does not match k_cache ",
                     ShapeToString(k_cache.shape()), " in [num_kv_heads, head_dim_k]"));
  }
  if (v.dim(1) != v_cache.dim(2) || v.dim(2) != v_cache.dim(3)) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvCache: v ", ShapeToString(v.shape()), " does not match v_cache ",
                     ShapeToString(v_cache.shape()), " in [num_kv_heads, head_dim_v]"));
  }
  const int64_t num_slots = k_cache.dim(0) * k_cache.dim(1);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = IntAt(slot_mapping, t);
    if (slot >= num_slots) {
      return absl::OutOfRangeError(absl::StrCat("WriteKvCache: slot_mapping[", t, "] = ", slot,
                                                " is outside the cache's ", num_slots,
                                                " slots (num_blocks * block_size)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePagedAttentionArgs(const Tensor& q, const Tensor& k_cache,
                                        const Tensor& v_cache, const Tensor& block_tables,
                                        const Tensor& seq_lens, const Tensor& query_start_loc,
                                        const AttentionParams& params, const Tensor& out) {
  RETURN_IF_ERROR(CheckF32(q, "PagedAttention: q", 3));
  RETURN_IF_ERROR(CheckF32(k_cache, "PagedAttention: k_cache", 4));
  RETURN_IF_ERROR(CheckF32(v_cache, "PagedAttention: v_cache", 4));
  RETURN_IF_ERROR(CheckF32(out, "PagedAttention: out", 3));
  RETURN_IF_ERROR(CheckInt(block_tables, "PagedAttention: block_tables", 2, DType::kI32));
  RETURN_IF_ERROR(CheckInt(seq_lens, "PagedAttention: seq_lens", 1, DType::kI32));
  RETURN_IF_ERROR(CheckInt(query_start_loc, "PagedAttention: query_start_loc", 1, DType::kI32));
  for (int d = 0; d < 3; ++d) {
    if (k_cache.dim(d) != v_cache.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PagedAttention: k_cache ", ShapeToString(k_cache.shape()), " and v_cache ",
          ShapeToString(v_cache.shape()), " differ in [num_blocks, block_size, num_kv_heads]"));
    }
  }
  const int64_t num_tokens = q.dim(0), num_heads = q.dim(1), head_dim_k = q.dim(2);
  const int64_t num_blocks = k_cache.dim(0), block_size = k_cache.dim(1);
  const int64_t num_kv_heads = k_cache.dim(2), head_dim_v = v_cache.dim(3);
  if (block_size <= 0 || num_kv_heads <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: k_cache ", ShapeToString(k_cache.shape()),
                     " must have block_size > 0 and num_kv_heads > 0"));
  }
  if (k_cache.dim(3) != head_dim_k) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: q ", ShapeToString(q.shape()),
                                                   " head_dim does not match k_cache ",
                                                   ShapeToString(k_cache.shape())));
  }
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: num_heads ", num_heads,
                                                   " (q) is not a multiple of num_kv_heads ",
                                                   num_kv_heads, " (k_cache)"));
  }
  if (out.dim(0) != num_tokens || out.dim(1) != num_heads || out.dim(2) != head_dim_v) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: out ", ShapeToString(out.shape()), " must be [", num_tokens,
                     ", ", num_heads, ", ", head_dim_v, "]"));
  }
  if (params.sinks.defined()) {
    if (params.sinks.dtype() != DType::kF32 || params.sinks.ndim() != 1 ||
        params.sinks.dim(0) != num_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PagedAttention: sinks ", params.sinks.DebugString(), " must be f32 [", num_heads, "]"));
    }
  }
  if (params.sliding_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: sliding_window must be >= 0, got ", params.sliding_window));
  }
  if (!std::isfinite(params.scale)) {
    return absl::InvalidArgumentError("PagedAttention: scale must be finite");
  }
  const int64_t num_seqs = seq_lens.dim(0);
  const int64_t max_blocks = block_tables.dim(1);
  if (block_tables.dim(0) != num_seqs) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: block_tables ", ShapeToString(block_tables.shape()),
                     " must have ", num_seqs, " rows (one per seq_lens entry)"));
  }
  if (query_start_loc.dim(0) != num_seqs + 1) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: query_start_loc ",
                                                   ShapeToString(query_start_loc.shape()),
                                                   " must be [", num_seqs + 1, "] (num_seqs + 1)"));
  }
  if (num_seqs > 0 && IntAt(query_start_loc, 0) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PagedAttention: query_start_loc[0] = ", IntAt(query_start_loc, 0), " is negative"));
  }
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t begin = IntAt(query_start_loc, s), end = IntAt(query_start_loc, s + 1);
    if (end < begin || end > num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PagedAttention: query_start_loc[", s + 1, "] = ", end, " must be in [", begin, ", ",
          num_tokens, "] (non-decreasing, within q's ", num_tokens, " tokens)"));
    }
    const int64_t seq_len = IntAt(seq_lens, s);
    const int64_t q_len = end - begin;
    if (seq_len < q_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("PagedAttention: seq_lens[", s, "] = ", seq_len,
                       " is smaller than the sequence's ", q_len, " query tokens"));
    }
    if (seq_len > max_blocks * block_size) {
      return absl::OutOfRangeError(absl::StrCat("PagedAttention: seq_lens[", s, "] = ", seq_len,
                                                " exceeds the block table capacity ", max_blocks,
                                                " blocks * ", block_size, " slots"));
    }
    const int64_t used_blocks = (seq_len + block_size - 1) / block_size;
    for (int64_t b = 0; b < used_blocks; ++b) {
      const int32_t block = Int2At(block_tables, s, b);
      if (block < 0 || block >= num_blocks) {
        return absl::OutOfRangeError(absl::StrCat("PagedAttention: block_tables[", s, ", ", b,
                                                  "] = ", block, " is outside [0, ", num_blocks,
                                                  ") (num_blocks of k_cache)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache) {
  RETURN_IF_ERROR(ValidateWriteKvCacheArgs(k, v, slot_mapping, k_cache, v_cache));
  const int64_t num_tokens = k.dim(0), block_size = k_cache.dim(1);
  // Copies x[t] ([num_kv_heads, head_dim], strided) into cache[block, slot].
  auto write = [&](const Tensor& x, Tensor& cache, int64_t t, int64_t block, int64_t slot) {
    const float* src = x.data<float>() + t * x.stride(0);
    float* dst = cache.data<float>() + block * cache.stride(0) + slot * cache.stride(1);
    const int64_t heads = x.dim(1), dim = x.dim(2);
    for (int64_t h = 0; h < heads; ++h) {
      const float* s = src + h * x.stride(1);
      float* d = dst + h * cache.stride(2);
      if (x.stride(2) == 1 && cache.stride(3) == 1) {
        std::memmove(d, s, static_cast<size_t>(dim) * sizeof(float));
      } else {
        for (int64_t i = 0; i < dim; ++i) d[i * cache.stride(3)] = s[i * x.stride(2)];
      }
    }
  };
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = IntAt(slot_mapping, t);
    if (slot < 0) continue;
    write(k, k_cache, t, slot / block_size, slot % block_size);
  }
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = IntAt(slot_mapping, t);
    if (slot < 0) continue;
    write(v, v_cache, t, slot / block_size, slot % block_size);
  }
  return absl::OkStatus();
}

absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out) {
  RETURN_IF_ERROR(ValidatePagedAttentionArgs(q, k_cache, v_cache, block_tables, seq_lens,
                                             query_start_loc, params, out));
  const int64_t num_heads = q.dim(1), dk = q.dim(2), dv = v_cache.dim(3);
  const int64_t block_size = k_cache.dim(1), num_kv_heads = k_cache.dim(2);
  const int64_t group = num_heads / num_kv_heads;
  const int64_t num_seqs = seq_lens.dim(0);
  if (num_seqs == 0 || dv == 0) return absl::OkStatus();

  ScoresRowFn scores_row = attention_internal::ScoresRowScalar;
  AccumulateRowsFn accumulate_rows = AccumulateRowsScalar;
  const Isa isa = ActiveIsa();
  if (isa == Isa::kAvx512) {
    scores_row = attention_internal::ScoresRowAvx512;
    accumulate_rows = attention_internal::AccumulateRowsAvx512;
  } else if (isa == Isa::kAvx2) {
    scores_row = attention_internal::ScoresRowAvx2;
    accumulate_rows = AccumulateRowsAvx2;
  }

  // Work items: (sequence, kv-head chunk, token chunk, head chunk). By default an item takes
  // every kv head, so that it reads each cache block's [block_size, num_kv_heads, head_dim] rows
  // together, and ~32 / group query tokens; chunks shrink (kv heads first) while there are too
  // few items to keep every thread busy.
  ThreadPool& pool = ThreadPool::Default();
  const int64_t want_items = 4 * static_cast<int64_t>(pool.num_threads());
  int64_t kv_chunk = num_kv_heads;
  int64_t head_chunk = std::min<int64_t>(group, 32);
  int64_t token_chunk = std::max<int64_t>(1, 32 / head_chunk);
  auto count_items = [&](int64_t kc, int64_t tc, int64_t hc) {
    int64_t items = 0;
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int64_t q_len = IntAt(query_start_loc, s + 1) - IntAt(query_start_loc, s);
      items += (q_len + tc - 1) / tc;
    }
    return items * ((num_kv_heads + kc - 1) / kc) * ((group + hc - 1) / hc);
  };
  while (count_items(kv_chunk, token_chunk, head_chunk) < want_items &&
         (kv_chunk > 1 || token_chunk > 1 || head_chunk > 1)) {
    if (kv_chunk > 1) {
      kv_chunk = (kv_chunk + 1) / 2;
    } else if (token_chunk > 1) {
      token_chunk = (token_chunk + 1) / 2;
    } else {
      head_chunk = (head_chunk + 1) / 2;
    }
  }
  std::vector<WorkItem> items;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t q_len = IntAt(query_start_loc, s + 1) - IntAt(query_start_loc, s);
    for (int64_t g0 = 0; g0 < num_kv_heads; g0 += kv_chunk) {
      for (int64_t t0 = 0; t0 < q_len; t0 += token_chunk) {
        for (int64_t h0 = 0; h0 < group; h0 += head_chunk) {
          WorkItem item;
          item.seq = static_cast<int32_t>(s);
          item.kv_begin = static_cast<int32_t>(g0);
          item.kv_end = static_cast<int32_t>(std::min(num_kv_heads, g0 + kv_chunk));
          item.token_begin = static_cast<int32_t>(t0);
          item.token_end = static_cast<int32_t>(std::min(q_len, t0 + token_chunk));
          item.head_begin = static_cast<int32_t>(h0);
          item.head_end = static_cast<int32_t>(std::min(group, h0 + head_chunk));
          items.push_back(item);
        }
      }
    }
  }

  const float* q_data = q.data<float>();
  const float* k_data = k_cache.data<float>();
  const float* v_data = v_cache.data<float>();
  float* out_data = out.data<float>();
  const float* sinks = params.sinks.defined() ? params.sinks.data<float>() : nullptr;
  const int64_t sinks_stride = params.sinks.defined() ? params.sinks.stride(0) : 0;
  const int64_t window = params.sliding_window;
  const float scale = params.scale;
  const int64_t ks0 = k_cache.stride(0), ks1 = k_cache.stride(1), ks2 = k_cache.stride(2);
  const int64_t ks3 = k_cache.stride(3);
  const int64_t vs0 = v_cache.stride(0), vs1 = v_cache.stride(1), vs2 = v_cache.stride(2);
  const int64_t vs3 = v_cache.stride(3);
  const int32_t* bt_data = block_tables.data<int32_t>();
  const int64_t bt0 = block_tables.stride(0), bt1 = block_tables.stride(1);
  const int64_t qt0 = q.stride(0), qt1 = q.stride(1), qt2 = q.stride(2);
  const int64_t ot0 = out.stride(0), ot1 = out.stride(1), ot2 = out.stride(2);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  auto run_item = [&](const WorkItem& item) {
    const int64_t s = item.seq;
    const int64_t q_begin = IntAt(query_start_loc, s);
    const int64_t q_len = IntAt(query_start_loc, s + 1) - q_begin;
    const int64_t seq_len = IntAt(seq_lens, s);
    const int64_t first_pos = seq_len - q_len;
    const int64_t nt = item.token_end - item.token_begin;
    const int64_t ng = item.kv_end - item.kv_begin;
    const int64_t nh = item.head_end - item.head_begin;
    // Rows are (token, kv head, head in group), token-major; the rows of one (token, kv head)
    // are contiguous and share keys and values.
    const int64_t rows = nt * ng * nh;
    std::vector<float> qs(static_cast<size_t>(rows * dk));
    std::vector<float> acc(static_cast<size_t>(rows * dv), 0.0f);
    std::vector<float> row_max(static_cast<size_t>(rows), kNegInf);
    std::vector<float> row_sum(static_cast<size_t>(rows), 0.0f);
    std::vector<int64_t> row_lo(static_cast<size_t>(rows)), row_hi(static_cast<size_t>(rows));
    for (int64_t ti = 0; ti < nt; ++ti) {
      const int64_t t = item.token_begin + ti;
      const int64_t pos = first_pos + t;
      for (int64_t gi = 0; gi < ng; ++gi) {
        for (int64_t hi = 0; hi < nh; ++hi) {
          const int64_t r = (ti * ng + gi) * nh + hi;
          const int64_t h = (item.kv_begin + gi) * group + item.head_begin + hi;
          const float* src = q_data + (q_begin + t) * qt0 + h * qt1;
          for (int64_t d = 0; d < dk; ++d) qs[r * dk + d] = src[d * qt2] * scale;
          row_lo[r] = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
          row_hi[r] = pos + 1;  // exclusive
        }
      }
    }
    const int64_t key_begin = row_lo[0];
    const int64_t key_end = row_hi[rows - 1];
    // Row pointers of two tiles ([kv head][key]): the current one and the next, whose rows are
    // prefetched while the current one is computed.
    std::vector<const float*> key_ptrs(static_cast<size_t>(2 * ng * kKeyTile));
    std::vector<const float*> value_ptrs(static_cast<size_t>(2 * ng * kKeyTile));
    std::vector<float> key_scratch(ks3 == 1 ? 0 : static_cast<size_t>(2 * ng * kKeyTile * dk));
    std::vector<float> value_scratch(vs3 == 1 ? 0 : static_cast<size_t>(2 * ng * kKeyTile * dv));
    auto fill_tile = [&](int buf, int64_t k0) {
      const int64_t k1 = std::min(key_end, k0 + kKeyTile);
      for (int64_t p = k0; p < k1; ++p) {
        const int64_t block = bt_data[s * bt0 + (p / block_size) * bt1];
        const int64_t slot = p % block_size;
        for (int64_t gi = 0; gi < ng; ++gi) {
          const int64_t g = item.kv_begin + gi;
          const int64_t idx = (buf * ng + gi) * kKeyTile + (p - k0);
          const float* kp = RowPtr(k_data + block * ks0 + slot * ks1 + g * ks2, ks3, dk,
                                   key_scratch.data() + idx * dk);
          const float* vp = RowPtr(v_data + block * vs0 + slot * vs1 + g * vs2, vs3, dv,
                                   value_scratch.data() + idx * dv);
          key_ptrs[idx] = kp;
          value_ptrs[idx] = vp;
          for (int64_t d = 0; d < dk; d += 16) __builtin_prefetch(kp + d);
          for (int64_t d = 0; d < dv; d += 16) __builtin_prefetch(vp + d);
        }
      }
    };
    std::vector<float> probs(static_cast<size_t>(rows * kKeyTile));
    std::vector<float> alpha(static_cast<size_t>(rows));
    int buf = 0;
    fill_tile(buf, key_begin);
    for (int64_t k0 = key_begin; k0 < key_end; k0 += kKeyTile, buf ^= 1) {
      const int64_t k1 = std::min(key_end, k0 + kKeyTile);
      if (k1 < key_end) fill_tile(buf ^ 1, k1);
      // Scores and online-softmax update of every row; keys outside a row's range weigh 0.
      const int64_t tile_n = k1 - k0;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t gi = (r / nh) % ng;
        const float* const* tile_keys = key_ptrs.data() + (buf * ng + gi) * kKeyTile;
        float* pr = probs.data() + r * kKeyTile;
        const int64_t lo = std::max(k0, row_lo[r]), hi = std::min(k1, row_hi[r]);
        if (lo >= hi) {
          alpha[r] = 1.0f;
          std::fill(pr, pr + tile_n, 0.0f);
          continue;
        }
        const int64_t n = hi - lo, off = lo - k0;
        std::fill(pr, pr + off, 0.0f);
        std::fill(pr + off + n, pr + tile_n, 0.0f);
        float* sc = pr + off;
        scores_row(qs.data() + r * dk, tile_keys + off, n, dk, sc);
        float tile_max = sc[0];
        for (int64_t j = 1; j < n; ++j) tile_max = std::max(tile_max, sc[j]);
        const float new_max = std::max(row_max[r], tile_max);
        alpha[r] = std::exp(row_max[r] - new_max);  // 0 on the row's first tile
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          sc[j] = std::exp(sc[j] - new_max);
          sum += sc[j];
        }
        row_sum[r] = row_sum[r] * alpha[r] + sum;
        row_max[r] = new_max;
      }
      for (int64_t ti = 0; ti < nt; ++ti) {
        for (int64_t gi = 0; gi < ng; ++gi) {
          const int64_t r0 = (ti * ng + gi) * nh;
          accumulate_rows(acc.data() + r0 * dv, dv, alpha.data() + r0, probs.data() + r0 * kKeyTile,
                          kKeyTile, nh, value_ptrs.data() + (buf * ng + gi) * kKeyTile, tile_n, dv);
        }
      }
    }
    for (int64_t ti = 0; ti < nt; ++ti) {
      const int64_t t = item.token_begin + ti;
      for (int64_t gi = 0; gi < ng; ++gi) {
        for (int64_t hi = 0; hi < nh; ++hi) {
          const int64_t r = (ti * ng + gi) * nh + hi;
          const int64_t h = (item.kv_begin + gi) * group + item.head_begin + hi;
          const float m = row_max[r];
          float l = row_sum[r];
          float rescale = 1.0f;
          if (sinks != nullptr) {
            const float sink = sinks[h * sinks_stride];
            const float m2 = std::max(m, sink);
            rescale = std::exp(m - m2);
            l = l * rescale + std::exp(sink - m2);
          }
          const float inv = rescale / l;
          float* dst = out_data + (q_begin + t) * ot0 + h * ot1;
          const float* a = acc.data() + r * dv;
          for (int64_t d = 0; d < dv; ++d) dst[d * ot2] = a[d] * inv;
        }
      }
    }
  };

  pool.ParallelFor(static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) run_item(items[i]);
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
