// Plain reference paged attention; see reference_attention.h.
#include "kernels/cpu/reference_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/attention.h"

namespace tessera::ref {
namespace {

absl::Status RequireHost(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t->defined() && !t->device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat("reference attention: tensor on ",
                                                     t->device().ToString(),
                                                     "; the references run on the host only"));
    }
  }
  return absl::OkStatus();
}

int64_t I32(const Tensor& t, int64_t i) { return t.data<int32_t>()[i * t.stride(0)]; }

// Element [a, b, c, d] of a 4-D f32 tensor through its strides.
float At4(const Tensor& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t.data<float>()[a * t.stride(0) + b * t.stride(1) + c * t.stride(2) + d * t.stride(3)];
}

}  // namespace

absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache) {
  RETURN_IF_ERROR(RequireHost({&k, &v, &slot_mapping, &k_cache, &v_cache}));
  RETURN_IF_ERROR(cpu::ValidateWriteKvCacheArgs(k, v, slot_mapping, k_cache, v_cache));
  const int64_t block_size = k_cache.dim(1);
  for (const auto& [src, dst] : {std::pair<const Tensor*, Tensor*>{&k, &k_cache},
                                 std::pair<const Tensor*, Tensor*>{&v, &v_cache}}) {
    for (int64_t t = 0; t < src->dim(0); ++t) {
      const int64_t slot = slot_mapping.data<int64_t>()[t * slot_mapping.stride(0)];
      if (slot < 0) continue;
      const int64_t block = slot / block_size, offset = slot % block_size;
      for (int64_t h = 0; h < src->dim(1); ++h) {
        for (int64_t d = 0; d < src->dim(2); ++d) {
          dst->data<float>()[block * dst->stride(0) + offset * dst->stride(1) + h * dst->stride(2) +
                             d * dst->stride(3)] =
              src->data<float>()[t * src->stride(0) + h * src->stride(1) + d * src->stride(2)];
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out) {
  RETURN_IF_ERROR(RequireHost(
      {&q, &k_cache, &v_cache, &block_tables, &seq_lens, &query_start_loc, &params.sinks, &out}));
  RETURN_IF_ERROR(cpu::ValidatePagedAttentionArgs(q, k_cache, v_cache, block_tables, seq_lens,
                                                  query_start_loc, params, out));
  const int64_t num_heads = q.dim(1), dk = q.dim(2), dv = v_cache.dim(3);
  const int64_t block_size = k_cache.dim(1), num_kv_heads = k_cache.dim(2);
  const int64_t group = num_heads / num_kv_heads;
  for (int64_t s = 0; s < seq_lens.dim(0); ++s) {
    const int64_t seq_len = I32(seq_lens, s);
    const int64_t q_begin = I32(query_start_loc, s);
    const int64_t q_len = I32(query_start_loc, s + 1) - q_begin;
    // Materialise K and V of the sequence: [seq_len, num_kv_heads, d].
    std::vector<double> keys(seq_len * num_kv_heads * dk), values(seq_len * num_kv_heads * dv);
    for (int64_t p = 0; p < seq_len; ++p) {
      const int64_t block = block_tables.data<int32_t>()[s * block_tables.stride(0) +
                                                         (p / block_size) * block_tables.stride(1)];
      for (int64_t g = 0; g < num_kv_heads; ++g) {
        for (int64_t d = 0; d < dk; ++d) {
          keys[(p * num_kv_heads + g) * dk + d] = At4(k_cache, block, p % block_size, g, d);
        }
        for (int64_t d = 0; d < dv; ++d) {
          values[(p * num_kv_heads + g) * dv + d] = At4(v_cache, block, p % block_size, g, d);
        }
      }
    }
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t pos = seq_len - q_len + i;
      const int64_t row = q_begin + i;
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t g = h / group;
        std::vector<double> logits;
        std::vector<int64_t> key_pos;
        for (int64_t p = 0; p <= pos; ++p) {
          if (params.sliding_window > 0 && pos - p >= params.sliding_window) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < dk; ++d) {
            dot += static_cast<double>(
                       q.data<float>()[row * q.stride(0) + h * q.stride(1) + d * q.stride(2)]) *
                   keys[(p * num_kv_heads + g) * dk + d];
          }
          logits.push_back(dot * params.scale);
          key_pos.push_back(p);
        }
        double max_logit = -INFINITY;
        for (double l : logits) max_logit = std::max(max_logit, l);
        double sink = 0.0;
        const bool has_sink = params.sinks.defined();
        if (has_sink) {
          sink = params.sinks.data<float>()[h * params.sinks.stride(0)];
          max_logit = std::max(max_logit, sink);
        }
        double denom = has_sink ? std::exp(sink - max_logit) : 0.0;
        for (double l : logits) denom += std::exp(l - max_logit);
        for (int64_t d = 0; d < dv; ++d) {
          double acc = 0.0;
          for (size_t j = 0; j < logits.size(); ++j) {
            acc +=
                std::exp(logits[j] - max_logit) * values[(key_pos[j] * num_kv_heads + g) * dv + d];
          }
          out.data<float>()[row * out.stride(0) + h * out.stride(1) + d * out.stride(2)] =
              static_cast<float>(acc / denom);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera::ref
