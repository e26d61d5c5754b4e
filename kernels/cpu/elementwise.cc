#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/elementwise_kernels.h"

namespace tessera::cpu {
namespace {

std::atomic<bool> g_avx512_enabled{true};

// Splits `rows` rows of `row_size` elements over the default pool, with chunks of at least
// ~32K elements so that small calls (decode) run inline on the caller.
void ForRows(int64_t rows, int64_t row_size, const std::function<void(int64_t, int64_t)>& fn) {
  if (rows <= 0) return;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_size));
  if (rows <= grain) {
    fn(0, rows);
    return;
  }
  ParallelFor(rows, grain, fn);
}

absl::Status RequireF32(const Tensor& t, absl::string_view op, absl::string_view name,
                        bool host_only = true) {
  if (!t.defined())
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is undefined"));
  if (t.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " must be f32, got ", t.DebugString()));
  }
  if (host_only && !t.device().is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " is not a host tensor: ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status RequireSameShape(const Tensor& a, const Tensor& b, absl::string_view op,
                              absl::string_view a_name, absl::string_view b_name) {
  if (a.shape() != b.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", b_name, " ", b.DebugString(),
                                                   " must have the shape of ", a_name, " ",
                                                   a.DebugString()));
  }
  return absl::OkStatus();
}

// A [hidden] f32 weight with unit stride.
absl::Status RequireNormWeight(const Tensor& weight, int64_t hidden, absl::string_view op,
                               bool host_only) {
  RETURN_IF_ERROR(RequireF32(weight, op, "weight", host_only));
  if (weight.ndim() != 1 || weight.dim(0) != hidden || (hidden > 1 && weight.stride(0) != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": weight ", weight.DebugString(),
                                                   " must be a contiguous [", hidden, "] f32"));
  }
  return absl::OkStatus();
}

// Leading dimensions (all but the last) of a and b agree.
bool SameLeading(const Tensor& a, const Tensor& b) {
  if (a.ndim() != b.ndim()) return false;
  for (int d = 0; d + 1 < a.ndim(); ++d) {
    if (a.dim(d) != b.dim(d)) return false;
  }
  return true;
}

float SumSquares(const float* x, int64_t n) {
  return Avx512Enabled() ? internal::SumSquaresAvx512(x, n) : internal::SumSquaresPortable(x, n);
}
void ScaleRow(const float* x, float inv_rms, const float* w, float* out, int64_t n) {
  if (Avx512Enabled()) {
    internal::ScaleRowAvx512(x, inv_rms, w, out, n);
  } else {
    internal::ScaleRowPortable(x, inv_rms, w, out, n);
  }
}

}  // namespace

void SetAvx512EnabledForTesting(bool enabled) { g_avx512_enabled.store(enabled); }
bool Avx512Enabled() {
  return g_avx512_enabled.load(std::memory_order_relaxed) && ActiveIsa() == Isa::kAvx512;
}

// ---- Device check ---------------------------------------------------------------------------

absl::Status RequireHost(
    absl::string_view op,
    std::initializer_list<std::pair<absl::string_view, const Tensor*>> tensors) {
  const Tensor* first = nullptr;
  absl::string_view first_name;
  for (const auto& [name, t] : tensors) {
    if (!t->defined()) continue;
    if (first == nullptr) {
      first = t;
      first_name = name;
      continue;
    }
    if (!(t->device() == first->device())) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is on ",
                                                     t->device().ToString(), " but ", first_name,
                                                     " is on ", first->device().ToString()));
    }
  }
  if (first != nullptr && !first->device().is_cpu()) {
    return absl::UnimplementedError(absl::StrCat(op, " on ", first->device().ToString(),
                                                 ": not implemented by the CUDA backend "
                                                 "(kernels/cuda) yet"));
  }
  return absl::OkStatus();
}

// ---- RowView -----------------------------------------------------------------------------------

absl::StatusOr<RowView> RowView::Of(const Tensor& t, absl::string_view name) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is undefined"));
  if (t.ndim() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " ", t.DebugString(), " must have at least one dimension"));
  }
  if (t.ndim() > 9) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " ", t.DebugString(), " has too many dimensions"));
  }
  if (t.dim(-1) > 1 && t.stride(-1) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " ", t.DebugString(), " must have a contiguous last dimension (stride ",
                     t.stride(-1), ")"));
  }
  RowView v;
  v.base_ = t.raw_data();
  v.row_size_ = t.dim(-1);
  v.num_rows_ = 1;
  if (t.ndim() == 1) {
    v.num_lead_ = 1;
    v.lead_sizes_[0] = 1;
    v.lead_strides_[0] = 0;
    return v;
  }
  v.num_lead_ = t.ndim() - 1;
  for (int d = 0; d < v.num_lead_; ++d) {
    v.lead_sizes_[d] = t.dim(d);
    v.lead_strides_[d] = t.stride(d);
    v.num_rows_ *= t.dim(d);
  }
  return v;
}

// ---- Validation --------------------------------------------------------------------------------

absl::Status ValidateRmsNorm(const Tensor& x, const Tensor& weight, const Tensor& out,
                             bool host_only) {
  RETURN_IF_ERROR(RequireF32(x, "RmsNorm", "x", host_only));
  RETURN_IF_ERROR(RequireF32(out, "RmsNorm", "out", host_only));
  RETURN_IF_ERROR(RequireSameShape(x, out, "RmsNorm", "x", "out"));
  RETURN_IF_ERROR(RowView::Of(x, "RmsNorm: x").status());
  RETURN_IF_ERROR(RowView::Of(out, "RmsNorm: out").status());
  return RequireNormWeight(weight, x.dim(-1), "RmsNorm", host_only);
}

absl::Status ValidateAddRmsNorm(const Tensor& residual, const Tensor& delta, const Tensor& weight,
                                const Tensor& out, bool host_only) {
  RETURN_IF_ERROR(RequireF32(residual, "AddRmsNorm", "residual", host_only));
  RETURN_IF_ERROR(RequireF32(delta, "AddRmsNorm", "delta", host_only));
  RETURN_IF_ERROR(RequireF32(out, "AddRmsNorm", "out", host_only));
  RETURN_IF_ERROR(RequireSameShape(residual, delta, "AddRmsNorm", "residual", "delta"));
  RETURN_IF_ERROR(RequireSameShape(residual, out, "AddRmsNorm", "residual", "out"));
  RETURN_IF_ERROR(RowView::Of(residual, "AddRmsNorm: residual").status());
  RETURN_IF_ERROR(RowView::Of(delta, "AddRmsNorm: delta").status());
  RETURN_IF_ERROR(RowView::Of(out, "AddRmsNorm: out").status());
  return RequireNormWeight(weight, residual.dim(-1), "AddRmsNorm", host_only);
}

absl::Status ValidateGatedActivation(absl::string_view op, const Tensor& gate_up,
                                     const Tensor& out, bool host_only) {
  RETURN_IF_ERROR(RequireF32(gate_up, op, "gate_up", host_only));
  RETURN_IF_ERROR(RequireF32(out, op, "out", host_only));
  RETURN_IF_ERROR(RowView::Of(gate_up, absl::StrCat(op, ": gate_up")).status());
  RETURN_IF_ERROR(RowView::Of(out, absl::StrCat(op, ": out")).status());
  if (gate_up.dim(-1) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": gate_up ", gate_up.DebugString(), " must have an even last dimension (2 * inter)"));
  }
  if (!SameLeading(gate_up, out) || out.dim(-1) * 2 != gate_up.dim(-1)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": out ", out.DebugString(),
                                                   " must be gate_up ", gate_up.DebugString(),
                                                   " with the last dimension halved"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSoftmax(const Tensor& x, bool host_only) {
  RETURN_IF_ERROR(RequireF32(x, "Softmax", "x", host_only));
  return RowView::Of(x, "Softmax: x").status();
}

absl::Status ValidateEmbedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                               int64_t vocab_size, const Tensor& out, bool host_only) {
  if (!table.defined()) return absl::InvalidArgumentError("Embedding: table is undefined");
  if (table.dtype() != DType::kF32 && table.dtype() != DType::kBF16 &&
      table.dtype() != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("Embedding: table must be f32, bf16 or f16, got ", table.DebugString()));
  }
  if (table.ndim() != 2 || (table.dim(1) > 1 && table.stride(1) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Embedding: table ", table.DebugString(),
                     " must be [vocab_rows, hidden] with contiguous rows"));
  }
  if (!ids.defined() || ids.dtype() != DType::kI32 || ids.ndim() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Embedding: ids must be [num_tokens] i32, got ", ids.DebugString()));
  }
  RETURN_IF_ERROR(RequireF32(out, "Embedding", "out", host_only));
  if (out.ndim() != 2 || out.dim(0) != ids.dim(0) || out.dim(1) != table.dim(1)) {
    return absl::InvalidArgumentError(absl::StrCat("Embedding: out ", out.DebugString(),
                                                   " must be [", ids.dim(0), ", ", table.dim(1),
                                                   "] f32"));
  }
  RETURN_IF_ERROR(RowView::Of(out, "Embedding: out").status());
  if (vocab_start < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Embedding: vocab_start must be >= 0, got ", vocab_start));
  }
  if (vocab_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Embedding: vocab_size must be >= 0, got ", vocab_size));
  }
  if (!host_only) return absl::OkStatus();  // ids live on a device: the kernel bounds-checks them
  if (!table.device().is_cpu() || !ids.device().is_cpu()) {
    return absl::InvalidArgumentError("Embedding: table and ids must be host tensors");
  }
  if (vocab_size > 0) {
    const int32_t* id = ids.data<int32_t>();
    for (int64_t t = 0; t < ids.dim(0); ++t) {
      const int32_t v = id[t * ids.stride(0)];
      if (v < 0 || v >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Embedding: ids[", t, "] = ", v, " is outside the vocabulary [0, ", vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAxpy(const Tensor& x, const Tensor& out, bool host_only) {
  RETURN_IF_ERROR(RequireF32(x, "Axpy", "x", host_only));
  RETURN_IF_ERROR(RequireF32(out, "Axpy", "out", host_only));
  RETURN_IF_ERROR(RequireSameShape(out, x, "Axpy", "out", "x"));
  if (x.ndim() == 0) return absl::OkStatus();
  RETURN_IF_ERROR(RowView::Of(x, "Axpy: x").status());
  return RowView::Of(out, "Axpy: out").status();
}

// ---- Portable row kernels ----------------------------------------------------------------------

namespace internal {

float SumSquaresPortable(const float* x, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * x[i + j];
  }
  for (; i < n; ++i) acc[0] += x[i] * x[i];
  float s = 0;
  for (float a : acc) s += a;
  return s;
}

void ScaleRowPortable(const float* x, float inv_rms, const float* weight, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * inv_rms) * weight[i];
}

float AddSumSquaresPortable(float* residual, const float* delta, int64_t n) {
  for (int64_t i = 0; i < n; ++i) residual[i] += delta[i];
  return SumSquaresPortable(residual, n);
}

void SiluMulPortable(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void ClampedSwiGluPortable(const float* in, float alpha, float limit, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gate = std::min(in[2 * i], limit);
    const float up = std::clamp(in[2 * i + 1], -limit, limit);
    const float glu = gate * (1.0f / (1.0f + std::exp(-(gate * alpha))));
    out[i] = (up + 1.0f) * glu;
  }
}

void SoftmaxRowPortable(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

void AxpyRowPortable(float scale, const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += scale * x[i];
}

}  // namespace internal

// ---- Operations --------------------------------------------------------------------------------

absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  RETURN_IF_ERROR(ValidateRmsNorm(x, weight, out));
  ASSIGN_OR_RETURN(RowView xv, RowView::Of(x, "x"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t h = xv.row_size();
  if (h == 0) return absl::OkStatus();
  const float* w = weight.data<float>();
  ForRows(xv.num_rows(), h, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = xv.Ptr<float>(r);
      const float variance = SumSquares(xr, h) / static_cast<float>(h);
      const float inv_rms = 1.0f / std::sqrt(variance + eps);
      ScaleRow(xr, inv_rms, w, ov.Ptr<float>(r), h);
    }
  });
  return absl::OkStatus();
}

absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out) {
  RETURN_IF_ERROR(ValidateAddRmsNorm(residual, delta, weight, out));
  ASSIGN_OR_RETURN(RowView rv, RowView::Of(residual, "residual"));
  ASSIGN_OR_RETURN(RowView dv, RowView::Of(delta, "delta"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t h = rv.row_size();
  if (h == 0) return absl::OkStatus();
  const float* w = weight.data<float>();
  const bool avx512 = Avx512Enabled();
  ForRows(rv.num_rows(), h, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* rr = rv.Ptr<float>(r);
      const float sum = avx512 ? internal::AddSumSquaresAvx512(rr, dv.Ptr<float>(r), h)
                               : internal::AddSumSquaresPortable(rr, dv.Ptr<float>(r), h);
      const float inv_rms = 1.0f / std::sqrt(sum / static_cast<float>(h) + eps);
      ScaleRow(rr, inv_rms, w, ov.Ptr<float>(r), h);
    }
  });
  return absl::OkStatus();
}

absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out) {
  RETURN_IF_ERROR(ValidateGatedActivation("SiluAndMul", gate_up, out));
  ASSIGN_OR_RETURN(RowView gv, RowView::Of(gate_up, "gate_up"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t inter = ov.row_size();
  const bool avx512 = Avx512Enabled();
  ForRows(gv.num_rows(), 2 * inter, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* g = gv.Ptr<float>(r);
      if (avx512) {
        internal::SiluMulAvx512(g, g + inter, ov.Ptr<float>(r), inter);
      } else {
        internal::SiluMulPortable(g, g + inter, ov.Ptr<float>(r), inter);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out) {
  RETURN_IF_ERROR(ValidateGatedActivation("ClampedSwiGlu", gate_up, out));
  ASSIGN_OR_RETURN(RowView gv, RowView::Of(gate_up, "gate_up"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t inter = ov.row_size();
  const bool avx512 = Avx512Enabled();
  ForRows(gv.num_rows(), 2 * inter, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (avx512) {
        internal::ClampedSwiGluAvx512(gv.Ptr<float>(r), alpha, limit, ov.Ptr<float>(r), inter);
      } else {
        internal::ClampedSwiGluPortable(gv.Ptr<float>(r), alpha, limit, ov.Ptr<float>(r), inter);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status Softmax(Tensor& x) {
  RETURN_IF_ERROR(ValidateSoftmax(x));
  ASSIGN_OR_RETURN(RowView xv, RowView::Of(x, "x"));
  const int64_t n = xv.row_size();
  const bool avx512 = Avx512Enabled();
  ForRows(xv.num_rows(), n, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (avx512) {
        internal::SoftmaxRowAvx512(xv.Ptr<float>(r), n);
      } else {
        internal::SoftmaxRowPortable(xv.Ptr<float>(r), n);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out) {
  RETURN_IF_ERROR(ValidateEmbedding(table, ids, vocab_start, vocab_size, out));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t hidden = table.dim(1);
  const int64_t rows = table.dim(0);
  const int32_t* id = ids.data<int32_t>();
  const int64_t id_stride = ids.stride(0);
  const char* base = static_cast<const char*>(table.raw_data());
  const size_t elem = table.element_size();
  const int64_t row_stride = table.stride(0);
  ForRows(ids.dim(0), hidden, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* o = ov.Ptr<float>(t);
      const int64_t row = static_cast<int64_t>(id[t * id_stride]) - vocab_start;
      if (row < 0 || row >= rows) {
        std::fill(o, o + hidden, 0.0f);
        continue;
      }
      ConvertBuffer(base + static_cast<size_t>(row * row_stride) * elem, table.dtype(), o,
                    DType::kF32, static_cast<size_t>(hidden));
    }
  });
  return absl::OkStatus();
}

absl::Status Axpy(float scale, const Tensor& x, Tensor& out) {
  RETURN_IF_ERROR(ValidateAxpy(x, out));
  if (x.ndim() == 0) {
    *out.data<float>() += scale * *x.data<float>();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(RowView xv, RowView::Of(x, "x"));
  ASSIGN_OR_RETURN(RowView ov, RowView::Of(out, "out"));
  const int64_t n = xv.row_size();
  const bool avx512 = Avx512Enabled();
  ForRows(xv.num_rows(), n, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (avx512) {
        internal::AxpyRowAvx512(scale, xv.Ptr<float>(r), ov.Ptr<float>(r), n);
      } else {
        internal::AxpyRowPortable(scale, xv.Ptr<float>(r), ov.Ptr<float>(r), n);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
