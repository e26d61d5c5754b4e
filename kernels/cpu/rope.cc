#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"

namespace tessera::cpu {
namespace {

// HF's get_mscale / yarn_get_mscale.
double GetMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// yarn_find_correction_dim: the dimension whose wavelength makes `num_rotations` turns over
// `max_position` positions.
double CorrectionDim(double num_rotations, int dim, double base, double max_position) {
  return (dim * std::log(max_position / (num_rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

// theta^(2i / dim) as torch computes it in f32: the exponent is an f32 division, the power is
// rounded once to f32.
float PosFreq(float base, int i, int dim) {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
  return static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(exponent)));
}

}  // namespace

int RotaryDim(const RopeConfig& config) {
  return config.rotary_dim == 0 ? config.head_dim : config.rotary_dim;
}

absl::Status ValidateRopeConfig(const RopeConfig& c) {
  auto bad = [](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat("RopeConfig: ", parts...));
  };
  if (c.head_dim <= 0) return bad("head_dim must be > 0, got ", c.head_dim);
  const int rd = RotaryDim(c);
  if (rd < 0 || rd > c.head_dim || rd % 2 != 0) {
    return bad("rotary_dim must be even and in [0, head_dim = ", c.head_dim, "], got ",
               c.rotary_dim);
  }
  if (!(c.theta > 0) || !std::isfinite(c.theta)) return bad("theta must be > 0, got ", c.theta);
  if (c.max_position <= 0) return bad("max_position must be > 0, got ", c.max_position);
  if (c.max_position > (int64_t{1} << 24)) {
    return bad("max_position ", c.max_position, " exceeds 2^24 (f32 positions lose precision)");
  }
  if (c.scaling != RopeConfig::Scaling::kNone && !(c.factor > 0)) {
    return bad("factor must be > 0, got ", c.factor);
  }
  if (c.scaling == RopeConfig::Scaling::kYarn || c.scaling == RopeConfig::Scaling::kLlama3) {
    if (c.original_max_position <= 0) {
      return bad("original_max_position must be > 0 for ",
                 c.scaling == RopeConfig::Scaling::kYarn ? "yarn" : "llama3", " scaling, got ",
                 c.original_max_position);
    }
  }
  if (c.scaling == RopeConfig::Scaling::kYarn && (!(c.beta_fast > 0) || !(c.beta_slow > 0))) {
    return bad("beta_fast and beta_slow must be > 0, got ", c.beta_fast, " and ", c.beta_slow);
  }
  if (c.scaling == RopeConfig::Scaling::kLlama3 &&
      !(c.low_freq_factor > 0 && c.high_freq_factor > c.low_freq_factor)) {
    return bad("llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got ",
               c.low_freq_factor, " and ", c.high_freq_factor);
  }
  return absl::OkStatus();
}

std::vector<float> RopeInvFreqF32(const RopeConfig& c) {
  const int dim = RotaryDim(c);
  const int half = dim / 2;
  const float base = static_cast<float>(c.theta);
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = 1.0f / PosFreq(base, i, dim);
  switch (c.scaling) {
    case RopeConfig::Scaling::kNone:
      break;
    case RopeConfig::Scaling::kLinear: {
      const float factor = static_cast<float>(c.factor);
      for (float& v : inv) v /= factor;
      break;
    }
    case RopeConfig::Scaling::kLlama3: {
      const double old_context = static_cast<double>(c.original_max_position);
      const float factor = static_cast<float>(c.factor);
      const float low_wavelen = static_cast<float>(old_context / c.low_freq_factor);
      const float high_wavelen = static_cast<float>(old_context / c.high_freq_factor);
      const float two_pi = static_cast<float>(2 * std::numbers::pi);
      const float low = static_cast<float>(c.low_freq_factor);
      const float span = static_cast<float>(c.high_freq_factor - c.low_freq_factor);
      for (float& v : inv) {
        // torch evaluates scalar / tensor as tensor.reciprocal() * scalar.
        const float wavelen = (1.0f / v) * two_pi;
        const float llama = wavelen > low_wavelen ? v / factor : v;
        const float smooth = ((1.0f / wavelen) * static_cast<float>(old_context) - low) / span;
        const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
        const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        v = medium ? smoothed : llama;
      }
      break;
    }
    case RopeConfig::Scaling::kYarn: {
      double low = CorrectionDim(c.beta_fast, dim, c.theta, double(c.original_max_position));
      double high = CorrectionDim(c.beta_slow, dim, c.theta, double(c.original_max_position));
      if (c.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, double(dim - 1));
      if (low == high) high += 0.001;  // HF: prevent a singular ramp
      const float factor = static_cast<float>(c.factor);
      const float low_f = static_cast<float>(low);
      const float span = static_cast<float>(high - low);
      for (int i = 0; i < half; ++i) {
        const float pos = PosFreq(base, i, dim);
        const float extra = 1.0f / pos;
        const float inter = 1.0f / (factor * pos);
        const float ramp = std::clamp((static_cast<float>(i) - low_f) / span, 0.0f, 1.0f);
        const float extra_factor = 1.0f - ramp;
        inv[i] = inter * (1.0f - extra_factor) + extra * extra_factor;
      }
      break;
    }
  }
  return inv;
}

double RopeAttentionScaling(const RopeConfig& c) {
  if (c.scaling != RopeConfig::Scaling::kYarn) return 1.0;
  if (c.mscale != 0.0 && c.mscale_all_dim != 0.0) {
    return GetMscale(c.factor, c.mscale) / GetMscale(c.factor, c.mscale_all_dim);
  }
  return GetMscale(c.factor, 1.0);
}

void FillRopeTables(const RopeConfig& config, const std::vector<float>& inv_freq, float* cos,
                    float* sin) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  const float scaling = static_cast<float>(RopeAttentionScaling(config));
  ParallelFor(config.max_position, std::max<int64_t>(1, 4096 / std::max<int64_t>(half, 1)),
              [&](int64_t begin, int64_t end) {
                for (int64_t p = begin; p < end; ++p) {
                  const float pos = static_cast<float>(p);
                  for (int64_t i = 0; i < half; ++i) {
                    const double angle = static_cast<double>(pos * inv_freq[i]);
                    cos[p * half + i] = static_cast<float>(std::cos(angle)) * scaling;
                    sin[p * half + i] = static_cast<float>(std::sin(angle)) * scaling;
                  }
                }
              });
}

absl::Status ValidateApplyRope(const RopeConfig& config, const Tensor& positions, const Tensor& x) {
  if (!x.defined() || x.dtype() != DType::kF32 || x.ndim() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ApplyRope: x must be [num_tokens, num_heads, head_dim] f32, got ", x.DebugString()));
  }
  if (x.dim(2) != config.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("ApplyRope: x ", x.DebugString(), " has head_dim ", x.dim(2),
                     " but the RopeCache has head_dim ", config.head_dim));
  }
  if (x.dim(2) > 1 && x.stride(2) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("ApplyRope: x ", x.DebugString(),
                                                   " must have contiguous head rows (stride ",
                                                   x.stride(2), ")"));
  }
  if (!positions.defined() || positions.ndim() != 1 ||
      (positions.dtype() != DType::kI32 && positions.dtype() != DType::kI64)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ApplyRope: positions must be [num_tokens] i32 or i64, got ", positions.DebugString()));
  }
  if (positions.dim(0) != x.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat("ApplyRope: positions ", positions.DebugString(),
                                                   " must have ", x.dim(0), " entries (x is ",
                                                   x.DebugString(), ")"));
  }
  if (!x.device().is_cpu() || !positions.device().is_cpu()) {
    return absl::InvalidArgumentError("ApplyRope: x and positions must be host tensors");
  }
  for (int64_t t = 0; t < positions.dim(0); ++t) {
    const int64_t p = positions.dtype() == DType::kI32
                          ? positions.data<int32_t>()[t * positions.stride(0)]
                          : positions.data<int64_t>()[t * positions.stride(0)];
    if (p < 0 || p >= config.max_position) {
      return absl::OutOfRangeError(
          absl::StrCat("ApplyRope: positions[", t, "] = ", p,
                       " is outside [0, max_position = ", config.max_position, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyRopeWithTables(const RopeConfig& config, const float* cos, const float* sin,
                                 const Tensor& positions, Tensor& x) {
  RETURN_IF_ERROR(ValidateApplyRope(config, positions, x));
  const int64_t num_tokens = x.dim(0), num_heads = x.dim(1);
  const int64_t half = RotaryDim(config) / 2;
  if (half == 0 || num_tokens == 0 || num_heads == 0) return absl::OkStatus();
  const bool neox = config.neox_style;
  float* base = x.data<float>();
  const int64_t token_stride = x.stride(0), head_stride = x.stride(1);
  const bool i32 = positions.dtype() == DType::kI32;
  const int64_t pos_stride = positions.stride(0);
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, num_heads * half));
  ParallelFor(num_tokens, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = i32 ? positions.data<int32_t>()[t * pos_stride]
                            : positions.data<int64_t>()[t * pos_stride];
      const float* c = cos + p * half;
      const float* s = sin + p * half;
      for (int64_t h = 0; h < num_heads; ++h) {
        float* v = base + t * token_stride + h * head_stride;
        if (neox) {
          float* x1 = v;
          float* x2 = v + half;
          for (int64_t i = 0; i < half; ++i) {
            const float a = x1[i], b = x2[i];
            x1[i] = a * c[i] - b * s[i];
            x2[i] = b * c[i] + a * s[i];
          }
        } else {
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c[i] - b * s[i];
            v[2 * i + 1] = b * c[i] + a * s[i];
          }
        }
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
