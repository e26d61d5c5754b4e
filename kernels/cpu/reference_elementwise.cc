#include "kernels/cpu/reference_elementwise.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/moe_routing.h"
#include "kernels/cpu/rope.h"

namespace tessera::ref {

using cpu::RowView;

absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateRmsNorm(x, weight, out));
  ASSIGN_OR_RETURN(RowView xv, RowView::Of(x, "x"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t h = xv.row_size();
  const float* w = weight.data<float>();
  for (int64_t r = 0; r < xv.num_rows(); ++r) {
    const float* xr = xv.Ptr<float>(r);
    double ss = 0;
    for (int64_t i = 0; i < h; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / double(h) + double(eps));
    float* o = ov.Ptr<float>(r);
    for (int64_t i = 0; i < h; ++i) o[i] = static_cast<float>(xr[i] * inv * w[i]);
  }
  return absl::OkStatus();
}

absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateAddRmsNorm(residual, delta, weight, out));
  ASSIGN_OR_RETURN(RowView rv, RowView::Of(residual, "residual"));
  ASSIGN_OR_RETURN(RowView dv, RowView::Of(delta, "delta"));
  const int64_t h = rv.row_size();
  for (int64_t r = 0; r < rv.num_rows(); ++r) {
    float* rr = rv.Ptr<float>(r);
    const float* d = dv.Ptr<float>(r);
    for (int64_t i = 0; i < h; ++i) rr[i] = rr[i] + d[i];
  }
  return ref::RmsNorm(residual, weight, eps, out);
}

absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateGatedActivation("SiluAndMul", gate_up, out));
  ASSIGN_OR_RETURN(RowView gv, RowView::Of(gate_up, "gate_up"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t inter = ov.row_size();
  for (int64_t r = 0; r < gv.num_rows(); ++r) {
    const float* g = gv.Ptr<float>(r);
    float* o = ov.Ptr<float>(r);
    for (int64_t i = 0; i < inter; ++i) {
      const double gate = g[i];
      o[i] = static_cast<float>(gate / (1.0 + std::exp(-gate)) * g[inter + i]);
    }
  }
  return absl::OkStatus();
}

absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateGatedActivation("ClampedSwiGlu", gate_up, out));
  ASSIGN_OR_RETURN(RowView gv, RowView::Of(gate_up, "gate_up"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t inter = ov.row_size();
  for (int64_t r = 0; r < gv.num_rows(); ++r) {
    const float* in = gv.Ptr<float>(r);
    float* o = ov.Ptr<float>(r);
    for (int64_t i = 0; i < inter; ++i) {
      double gate = in[2 * i];
      double up = in[2 * i + 1];
      if (gate > limit) gate = limit;
      if (up > limit) up = limit;
      if (up < -limit) up = -limit;
      const double glu = gate / (1.0 + std::exp(-gate * alpha));
      o[i] = static_cast<float>((up + 1.0) * glu);
    }
  }
  return absl::OkStatus();
}

absl::Status Softmax(Tensor& x) {
  RETURN_IF_ERROR(cpu::ValidateSoftmax(x));
  ASSIGN_OR_RETURN(RowView xv, RowView::Of(x, "x"));
  const int64_t n = xv.row_size();
  for (int64_t r = 0; r < xv.num_rows(); ++r) {
    float* row = xv.Ptr<float>(r);
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max<double>(mx, row[i]);
    double sum = 0;
    std::vector<double> e(n);
    for (int64_t i = 0; i < n; ++i) sum += (e[i] = std::exp(row[i] - mx));
    for (int64_t i = 0; i < n; ++i) row[i] = static_cast<float>(e[i] / sum);
  }
  return absl::OkStatus();
}

absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateEmbedding(table, ids, vocab_start, vocab_size, out));
  ASSIGN_OR_RETURN(Tensor table_f32, table.To(DType::kF32));
  const int64_t hidden = table.dim(1);
  for (int64_t t = 0; t < ids.dim(0); ++t) {
    const int64_t id = ids.data<int32_t>()[t * ids.stride(0)];
    Tensor row = out.Select(0, t);
    if (id < vocab_start || id >= vocab_start + table.dim(0)) {
      for (int64_t i = 0; i < hidden; ++i) row.data<float>()[i * row.stride(0)] = 0.0f;
    } else {
      RETURN_IF_ERROR(row.CopyFrom(table_f32.Select(0, id - vocab_start)));
    }
  }
  return absl::OkStatus();
}

absl::Status Axpy(float scale, const Tensor& x, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateAxpy(x, out));
  if (x.ndim() == 0) {
    *out.data<float>() += scale * *x.data<float>();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(RowView xv, RowView::Of(x, "x"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  for (int64_t r = 0; r < xv.num_rows(); ++r) {
    for (int64_t i = 0; i < xv.row_size(); ++i) {
      ov.Ptr<float>(r)[i] =
          static_cast<float>(double(ov.Ptr<float>(r)[i]) + double(scale) * xv.Ptr<float>(r)[i]);
    }
  }
  return absl::OkStatus();
}

// ---- RoPE --------------------------------------------------------------------------------------

std::vector<double> RopeInvFreq(const RopeConfig& c) {
  const int dim = c.rotary_dim == 0 ? c.head_dim : c.rotary_dim;
  std::vector<double> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) inv[i] = 1.0 / std::pow(c.theta, 2.0 * i / dim);
  if (c.scaling == RopeConfig::Scaling::kLinear) {
    for (double& v : inv) v /= c.factor;
  } else if (c.scaling == RopeConfig::Scaling::kLlama3) {
    const double old_context = double(c.original_max_position);
    for (double& v : inv) {
      const double wavelen = 2 * M_PI / v;
      if (wavelen < old_context / c.high_freq_factor) continue;  // high frequency: unchanged
      if (wavelen > old_context / c.low_freq_factor) {
        v /= c.factor;  // low frequency: interpolated
        continue;
      }
      const double smooth =
          (old_context / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
      v = (1 - smooth) * v / c.factor + smooth * v;
    }
  } else if (c.scaling == RopeConfig::Scaling::kYarn) {
    auto correction_dim = [&](double rotations) {
      return dim * std::log(double(c.original_max_position) / (rotations * 2 * M_PI)) /
             (2 * std::log(c.theta));
    };
    double low = correction_dim(c.beta_fast), high = correction_dim(c.beta_slow);
    if (c.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1.0);
    if (low == high) high += 0.001;
    for (int i = 0; i < dim / 2; ++i) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      // ramp 0: extrapolation (original frequency); ramp 1: interpolation (frequency / factor).
      inv[i] = inv[i] * (1 - ramp) + inv[i] / c.factor * ramp;
    }
  }
  return inv;
}

double RopeAttentionScaling(const RopeConfig& c) {
  if (c.scaling != RopeConfig::Scaling::kYarn) return 1.0;
  auto mscale = [&](double m) { return c.factor <= 1 ? 1.0 : 0.1 * m * std::log(c.factor) + 1; };
  if (c.mscale != 0 && c.mscale_all_dim != 0) return mscale(c.mscale) / mscale(c.mscale_all_dim);
  return mscale(1.0);
}

absl::Status ApplyRope(const RopeCache& cache, const Tensor& positions, Tensor& x) {
  const RopeConfig& c = cache.config();
  RETURN_IF_ERROR(cpu::ValidateApplyRope(c, positions, x));
  const std::vector<double> inv = RopeInvFreq(c);
  const double scaling = RopeAttentionScaling(c);
  const int64_t half = static_cast<int64_t>(inv.size());
  for (int64_t t = 0; t < x.dim(0); ++t) {
    const int64_t p = positions.dtype() == DType::kI32
                          ? positions.data<int32_t>()[t * positions.stride(0)]
                          : positions.data<int64_t>()[t * positions.stride(0)];
    for (int64_t h = 0; h < x.dim(1); ++h) {
      float* v = x.data<float>() + t * x.stride(0) + h * x.stride(1);
      for (int64_t i = 0; i < half; ++i) {
        const double cs = std::cos(p * inv[i]) * scaling, sn = std::sin(p * inv[i]) * scaling;
        const int64_t a = c.neox_style ? i : 2 * i;
        const int64_t b = c.neox_style ? i + half : 2 * i + 1;
        const double xa = v[a], xb = v[b];
        v[a] = static_cast<float>(xa * cs - xb * sn);
        v[b] = static_cast<float>(xb * cs + xa * sn);
      }
    }
  }
  return absl::OkStatus();
}

// ---- MoE routing -------------------------------------------------------------------------------

namespace {

// All indices of `values` sorted best first (larger first, NaN first, ties by lower index).
std::vector<int> RankAll(const std::vector<float>& values) {
  std::vector<int> idx(values.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
    const bool na = std::isnan(values[a]), nb = std::isnan(values[b]);
    if (na || nb) return na && !nb;
    return values[a] > values[b];
  });
  return idx;
}

}  // namespace

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids) {
  RETURN_IF_ERROR(cpu::ValidateMoeRoute(logits, correction_bias, config, topk_weights, topk_ids));
  const int64_t n = logits.dim(1);
  const int k = config.top_k;
  for (int64_t t = 0; t < logits.dim(0); ++t) {
    std::vector<float> row(n);
    for (int64_t e = 0; e < n; ++e) row[e] = logits.data<float>()[t * logits.stride(0) + e];
    std::vector<float> select(n), weight_source(n);
    std::vector<double> w(k);
    std::vector<int> chosen;
    if (config.scoring == RouterConfig::Scoring::kSoftmax) {
      double mx = -INFINITY, sum = 0;
      for (float v : row) mx = std::max<double>(mx, v);
      for (float v : row) sum += std::exp(v - mx);
      for (int64_t e = 0; e < n; ++e) select[e] = static_cast<float>(std::exp(row[e] - mx) / sum);
      chosen = RankAll(select);
      double total = 0;
      for (int j = 0; j < k; ++j) total += (w[j] = select[chosen[j]]);
      if (config.renormalize) {
        for (double& v : w) v /= total;
      }
    } else if (config.scoring == RouterConfig::Scoring::kSoftmaxTopK) {
      chosen = RankAll(row);
      double sum = 0;
      for (int j = 0; j < k; ++j) sum += (w[j] = std::exp(double(row[chosen[j]]) - row[chosen[0]]));
      for (double& v : w) v /= sum;
    } else {
      std::vector<float> scores(n);
      for (int64_t e = 0; e < n; ++e) {
        scores[e] = 1.0f / (1.0f + std::exp(-row[e]));
        select[e] = scores[e] + (correction_bias.defined() ? correction_bias.data<float>()[e] : 0);
      }
      if (config.n_group > 1) {
        const int64_t per = n / config.n_group;
        std::vector<float> group_score(config.n_group);
        for (int g = 0; g < config.n_group; ++g) {
          std::vector<float> members(select.begin() + g * per, select.begin() + (g + 1) * per);
          std::vector<int> order = RankAll(members);
          group_score[g] = per >= 2 ? members[order[0]] + members[order[1]] : members[order[0]];
        }
        std::vector<int> group_order = RankAll(group_score);
        std::vector<bool> kept(config.n_group, false);
        for (int j = 0; j < config.topk_group; ++j) kept[group_order[j]] = true;
        for (int64_t e = 0; e < n; ++e) {
          if (!kept[e / per]) select[e] = 0.0f;
        }
      }
      chosen = RankAll(select);
      double total = 0;
      for (int j = 0; j < k; ++j) total += (w[j] = scores[chosen[j]]);
      if (config.renormalize) {
        for (double& v : w) v /= (total + 1e-20);
      }
    }
    for (int j = 0; j < k; ++j) {
      topk_weights.data<float>()[t * topk_weights.stride(0) + j] =
          static_cast<float>(w[j] * config.routed_scaling_factor);
      topk_ids.data<int32_t>()[t * topk_ids.stride(0) + j] = chosen[j];
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera::ref
