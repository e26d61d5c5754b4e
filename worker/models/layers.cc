#include "worker/models/layers.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"

namespace tessera {
namespace {

// The one place that talks to the Checkpoint API.
absl::StatusOr<Tensor> GetTensor(const Checkpoint& ckpt, absl::string_view name) {
  return ckpt.Get(name);
}
bool HasTensor(const Checkpoint& ckpt, absl::string_view name) { return ckpt.Has(name); }

absl::Status CheckShape(absl::string_view name, const Tensor& t,
                        absl::Span<const int64_t> expected) {
  bool ok = t.ndim() == static_cast<int>(expected.size());
  for (int d = 0; ok && d < t.ndim(); ++d) {
    if (expected[d] >= 0 && t.dim(d) != expected[d]) ok = false;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ",
                                                   ShapeToString(t.shape()), ", expected ",
                                                   ShapeToString(expected)));
  }
  return absl::OkStatus();
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Copies rows `rows` of x [num_tokens, hidden] into a new contiguous [rows.size(), hidden].
Tensor GatherRows(const Tensor& x, const std::vector<int32_t>& rows) {
  const int64_t h = x.dim(1);
  Tensor out = Tensor::Empty({static_cast<int64_t>(rows.size()), h}, DType::kF32).value();
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  const int64_t stride = x.stride(0);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(dst + i * h, src + rows[i] * stride, h * sizeof(float));
  }
  return out;
}

// out[t] = silu(gate[t]) * up[t] for two [m, inter] contiguous tensors; result in gate.
void SiluMulInPlace(Tensor& gate, const Tensor& up) {
  float* g = gate.data<float>();
  const float* u = up.data<float>();
  const int64_t n = gate.numel();
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

bool CanConcat(const LinearWeight& a, const LinearWeight& b) {
  if (a.weight.dtype() != b.weight.dtype() || a.in_features() != b.in_features()) return false;
  if (a.scale_inv.defined() != b.scale_inv.defined()) return false;
  if (a.scale_inv.defined()) {
    if (a.block_n != b.block_n || a.block_k != b.block_k) return false;
    if (a.out_features() % a.block_n != 0) return false;
  }
  return true;
}

}  // namespace

absl::Status EnsureF32(Tensor& t, absl::Span<const int64_t> shape) {
  if (t.defined() && t.dtype() == DType::kF32 && t.is_contiguous() &&
      t.ndim() == static_cast<int>(shape.size())) {
    bool same = true;
    for (int d = 0; d < t.ndim(); ++d) same = same && t.dim(d) == shape[d];
    if (same) return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(t, Tensor::Empty(shape, DType::kF32));
  return absl::OkStatus();
}

// ---- Weight loading ----------------------------------------------------------------------------

absl::Status LinearLayer::Forward(const Tensor& x, Tensor& out) const {
  RETURN_IF_ERROR(EnsureF32(out, {x.dim(0), out_features()}));
  return Linear(x, weight, bias, out);
}

absl::StatusOr<LinearLayer> LoadLinear(const Checkpoint& ckpt, absl::string_view prefix,
                                       int64_t out_features, int64_t in_features, bool bias,
                                       const WeightFormat& format) {
  LinearLayer layer;
  const std::string wname = absl::StrCat(prefix, ".weight");
  ASSIGN_OR_RETURN(Tensor w, GetTensor(ckpt, wname));
  RETURN_IF_ERROR(CheckShape(wname, w, {out_features, in_features}));
  switch (w.dtype()) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      break;
    case DType::kF8E4M3: {
      const std::string sname = absl::StrCat(prefix, ".weight_scale_inv");
      if (!HasTensor(ckpt, sname)) {
        return absl::NotFoundError(absl::StrCat("fp8 weight ", wname, " has no scale tensor ",
                                                sname));
      }
      ASSIGN_OR_RETURN(Tensor s, GetTensor(ckpt, sname));
      const int64_t n = w.dim(0), k = w.dim(1);
      RETURN_IF_ERROR(CheckShape(sname, s,
                                 {(n + format.block_n - 1) / format.block_n,
                                  (k + format.block_k - 1) / format.block_k}));
      if (s.dtype() != DType::kF32 || !s.is_contiguous()) {
        ASSIGN_OR_RETURN(s, s.To(DType::kF32));
      }
      layer.weight.scale_inv = s;
      layer.weight.block_n = format.block_n;
      layer.weight.block_k = format.block_k;
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor ", wname, " has unsupported dtype ",
                                                     DTypeName(w.dtype())));
  }
  if (!w.is_contiguous()) {
    ASSIGN_OR_RETURN(w, w.Clone());
  }
  layer.weight.weight = w;
  if (bias) {
    ASSIGN_OR_RETURN(layer.bias,
                     LoadF32(ckpt, absl::StrCat(prefix, ".bias"), {w.dim(0)}));
  }
  return layer;
}

absl::StatusOr<Tensor> LoadF32(const Checkpoint& ckpt, absl::string_view name,
                               absl::Span<const int64_t> shape) {
  ASSIGN_OR_RETURN(Tensor t, GetTensor(ckpt, name));
  RETURN_IF_ERROR(CheckShape(name, t, shape));
  if (!IsFloatingPoint(t.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has non-float dtype ",
                                                   DTypeName(t.dtype())));
  }
  return t.To(DType::kF32);
}

absl::StatusOr<Tensor> LoadNormWeight(const Checkpoint& ckpt, absl::string_view prefix,
                                      int64_t size) {
  return LoadF32(ckpt, absl::StrCat(prefix, ".weight"), {size});
}

absl::StatusOr<LinearWeight> ConcatOutFeatures(const LinearWeight& a, const LinearWeight& b) {
  if (!CanConcat(a, b)) {
    return absl::InvalidArgumentError("ConcatOutFeatures: weights cannot be concatenated");
  }
  const int64_t k = a.in_features();
  const int64_t na = a.out_features(), nb = b.out_features();
  LinearWeight out;
  out.block_n = a.block_n;
  out.block_k = a.block_k;
  ASSIGN_OR_RETURN(out.weight, Tensor::Empty({na + nb, k}, a.weight.dtype()));
  const size_t es = a.weight.element_size();
  std::memcpy(out.weight.raw_data(), a.weight.raw_data(), na * k * es);
  std::memcpy(static_cast<char*>(out.weight.raw_data()) + na * k * es, b.weight.raw_data(),
              nb * k * es);
  if (a.scale_inv.defined()) {
    const int64_t sa = a.scale_inv.dim(0), sb = b.scale_inv.dim(0), sk = a.scale_inv.dim(1);
    ASSIGN_OR_RETURN(out.scale_inv, Tensor::Empty({sa + sb, sk}, DType::kF32));
    std::memcpy(out.scale_inv.data<float>(), a.scale_inv.data<float>(), sa * sk * 4);
    std::memcpy(out.scale_inv.data<float>() + sa * sk, b.scale_inv.data<float>(), sb * sk * 4);
  }
  return out;
}

// ---- Dense gated MLP ---------------------------------------------------------------------------

absl::StatusOr<GatedMlp> GatedMlp::Load(const Checkpoint& ckpt, absl::string_view prefix,
                                        int64_t hidden_size, int64_t intermediate_size,
                                        const WeightFormat& format, const MlpNames& names) {
  GatedMlp mlp;
  ASSIGN_OR_RETURN(LinearLayer gate, LoadLinear(ckpt, absl::StrCat(prefix, ".", names.gate),
                                                intermediate_size, hidden_size, false, format));
  ASSIGN_OR_RETURN(LinearLayer up, LoadLinear(ckpt, absl::StrCat(prefix, ".", names.up),
                                              intermediate_size, hidden_size, false, format));
  ASSIGN_OR_RETURN(mlp.down_, LoadLinear(ckpt, absl::StrCat(prefix, ".", names.down),
                                         hidden_size, intermediate_size, false, format));
  if (format.fuse_gate_up && CanConcat(gate.weight, up.weight)) {
    ASSIGN_OR_RETURN(mlp.gate_up_.weight, ConcatOutFeatures(gate.weight, up.weight));
    mlp.fused_ = true;
  } else {
    mlp.gate_up_ = std::move(gate);
    mlp.up_ = std::move(up);
  }
  return mlp;
}

absl::Status GatedMlp::Forward(const Tensor& x, Tensor& out) const {
  const int64_t m = x.dim(0);
  const int64_t inter = intermediate_size();
  Tensor act;
  if (fused_) {
    Tensor gate_up;
    RETURN_IF_ERROR(gate_up_.Forward(x, gate_up));
    RETURN_IF_ERROR(EnsureF32(act, {m, inter}));
    RETURN_IF_ERROR(SiluAndMul(gate_up, act));
  } else {
    Tensor up;
    RETURN_IF_ERROR(gate_up_.Forward(x, act));
    RETURN_IF_ERROR(up_.Forward(x, up));
    SiluMulInPlace(act, up);
  }
  return down_.Forward(act, out);
}

// ---- Mixture of Experts ------------------------------------------------------------------------

absl::StatusOr<MoeBlock> MoeBlock::Load(const Checkpoint& ckpt, absl::string_view prefix,
                                        const MoeSpec& spec, const WeightFormat& format) {
  MoeBlock moe;
  moe.spec_ = spec;
  const int64_t h = spec.hidden_size, inter = spec.moe_intermediate_size;
  const int ne = spec.num_experts;
  if (ne <= 0 || spec.router.top_k <= 0 || spec.router.top_k > ne) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": invalid MoE config (num_experts=", ne, ", top_k=", spec.router.top_k, ")"));
  }
  ASSIGN_OR_RETURN(moe.router_, LoadLinear(ckpt, absl::StrCat(prefix, ".", spec.gate_name), ne,
                                           h, spec.router_bias, format));
  if (spec.correction_bias) {
    ASSIGN_OR_RETURN(moe.correction_bias_,
                     LoadF32(ckpt, absl::StrCat(prefix, ".", spec.correction_bias_name), {ne}));
  }
  moe.experts_.resize(ne);
  if (spec.experts == MoeSpec::Experts::kGptOss) {
    // Stacked [E, hidden, 2*inter] / [E, inter, hidden] in x @ W layout: transpose per expert.
    const std::string gu_name = absl::StrCat(prefix, ".experts.gate_up_proj");
    const std::string d_name = absl::StrCat(prefix, ".experts.down_proj");
    ASSIGN_OR_RETURN(Tensor gu, GetTensor(ckpt, gu_name));
    RETURN_IF_ERROR(CheckShape(gu_name, gu, {ne, h, 2 * inter}));
    ASSIGN_OR_RETURN(Tensor gub, LoadF32(ckpt, gu_name + "_bias", {ne, 2 * inter}));
    ASSIGN_OR_RETURN(Tensor d, GetTensor(ckpt, d_name));
    RETURN_IF_ERROR(CheckShape(d_name, d, {ne, inter, h}));
    ASSIGN_OR_RETURN(Tensor db, LoadF32(ckpt, d_name + "_bias", {ne, h}));
    if (gu.dtype() == DType::kF8E4M3 || d.dtype() == DType::kF8E4M3) {
      return absl::UnimplementedError(absl::StrCat(gu_name, ": fp8 stacked experts"));
    }
    for (int e = 0; e < ne; ++e) {
      Expert& ex = moe.experts_[e];
      ex.fused = true;
      // Transposed copies keep the checkpoint dtype.
      auto transpose = [](const Tensor& m) -> absl::StatusOr<Tensor> {  // [a, b] -> [b, a]
        Tensor t = m.AsStrided({m.dim(1), m.dim(0)}, {m.stride(1), m.stride(0)}, 0);
        return t.Clone();
      };
      ASSIGN_OR_RETURN(ex.gate_up.weight.weight, transpose(gu.Select(0, e)));
      ASSIGN_OR_RETURN(ex.gate_up.bias, gub.Select(0, e).Clone());
      ASSIGN_OR_RETURN(ex.down.weight.weight, transpose(d.Select(0, e)));
      ASSIGN_OR_RETURN(ex.down.bias, db.Select(0, e).Clone());
    }
  } else {
    MlpNames names;
    if (spec.experts == MoeSpec::Experts::kMixtral) names = {"w1", "w3", "w2"};
    for (int e = 0; e < ne; ++e) {
      Expert& ex = moe.experts_[e];
      const std::string p = absl::StrCat(prefix, ".experts.", e, ".");
      ASSIGN_OR_RETURN(LinearLayer gate, LoadLinear(ckpt, p + names.gate, inter, h, false,
                                                    format));
      ASSIGN_OR_RETURN(LinearLayer up, LoadLinear(ckpt, p + names.up, inter, h, false, format));
      ASSIGN_OR_RETURN(ex.down, LoadLinear(ckpt, p + names.down, h, inter, false, format));
      if (format.fuse_gate_up && CanConcat(gate.weight, up.weight)) {
        ASSIGN_OR_RETURN(ex.gate_up.weight, ConcatOutFeatures(gate.weight, up.weight));
        ex.fused = true;
      } else {
        ex.gate = std::move(gate);
        ex.up = std::move(up);
      }
    }
  }
  if (spec.shared_intermediate_size > 0) {
    ASSIGN_OR_RETURN(GatedMlp shared,
                     GatedMlp::Load(ckpt, absl::StrCat(prefix, ".", spec.shared_name), h,
                                    spec.shared_intermediate_size, format));
    moe.shared_ = std::make_unique<GatedMlp>(std::move(shared));
    if (spec.shared_gate) {
      ASSIGN_OR_RETURN(moe.shared_gate_, LoadLinear(ckpt, absl::StrCat(prefix,
                                                                       ".shared_expert_gate"),
                                                    1, h, false, format));
    }
  }
  return moe;
}

absl::Status MoeBlock::Forward(const Tensor& x, Tensor& out) const {
  const int64_t t = x.dim(0), h = spec_.hidden_size;
  const int k = spec_.router.top_k;
  const int64_t inter = spec_.moe_intermediate_size;
  RETURN_IF_ERROR(EnsureF32(out, {t, h}));
  out.SetZero();
  if (t == 0) return absl::OkStatus();
  Tensor logits;
  RETURN_IF_ERROR(router_.Forward(x, logits));
  ASSIGN_OR_RETURN(Tensor weights, Tensor::Empty({t, k}, DType::kF32));
  ASSIGN_OR_RETURN(Tensor ids, Tensor::Empty({t, k}, DType::kI32));
  RETURN_IF_ERROR(MoeRoute(logits, correction_bias_, spec_.router, weights, ids));

  // Group (token, weight) pairs by expert.
  std::vector<std::vector<int32_t>> rows(spec_.num_experts);
  std::vector<std::vector<float>> wts(spec_.num_experts);
  const int32_t* idp = ids.data<int32_t>();
  const float* wp = weights.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    for (int j = 0; j < k; ++j) {
      const int32_t e = idp[i * k + j];
      if (e < 0 || e >= spec_.num_experts) {
        return absl::InternalError(absl::StrCat("MoeRoute returned expert id ", e));
      }
      rows[e].push_back(static_cast<int32_t>(i));
      wts[e].push_back(wp[i * k + j]);
    }
  }
  // Every active expert's projections run as one parallel job per stage (LinearGroup): at decode
  // that is two fork/joins per layer instead of three per expert.
  struct Active {
    int e = 0;
    Tensor xe, a, b, act, y;  // gathered rows, gate(|up) out, up out, activation, down out
  };
  std::vector<Active> active;
  active.reserve(k * t < spec_.num_experts ? k * t : spec_.num_experts);
  for (int e = 0; e < spec_.num_experts; ++e) {
    if (rows[e].empty()) continue;
    Active& a = active.emplace_back();
    a.e = e;
    a.xe = GatherRows(x, rows[e]);
  }
  auto problem = [](const Tensor& in, const LinearLayer& l, Tensor& o) {
    return LinearProblem{&in, &l.weight, l.bias.defined() ? &l.bias : nullptr, &o};
  };
  std::vector<LinearProblem> problems;
  // gate and up as two matrices, or one fused gate_up (gpt-oss: always fused, interleaved).
  auto two_matrices = [&](const Expert& ex) {
    return spec_.experts != MoeSpec::Experts::kGptOss && !ex.fused;
  };
  for (Active& a : active) {
    const Expert& ex = experts_[a.e];
    const int64_t n = a.xe.dim(0);
    if (!two_matrices(ex)) {
      RETURN_IF_ERROR(EnsureF32(a.a, {n, ex.gate_up.out_features()}));
      problems.push_back(problem(a.xe, ex.gate_up, a.a));
    } else {
      RETURN_IF_ERROR(EnsureF32(a.a, {n, ex.gate.out_features()}));
      RETURN_IF_ERROR(EnsureF32(a.b, {n, ex.up.out_features()}));
      problems.push_back(problem(a.xe, ex.gate, a.a));
      problems.push_back(problem(a.xe, ex.up, a.b));
    }
  }
  RETURN_IF_ERROR(LinearGroup(problems));
  problems.clear();
  for (Active& a : active) {
    const Expert& ex = experts_[a.e];
    const int64_t n = a.xe.dim(0);
    if (spec_.experts == MoeSpec::Experts::kGptOss) {
      RETURN_IF_ERROR(EnsureF32(a.act, {n, inter}));
      RETURN_IF_ERROR(ClampedSwiGlu(a.a, spec_.swiglu_alpha, spec_.swiglu_limit, a.act));
    } else if (!two_matrices(ex)) {
      RETURN_IF_ERROR(EnsureF32(a.act, {n, inter}));
      RETURN_IF_ERROR(SiluAndMul(a.a, a.act));
    } else {
      SiluMulInPlace(a.a, a.b);
      a.act = a.a;
    }
    RETURN_IF_ERROR(EnsureF32(a.y, {n, ex.down.out_features()}));
    problems.push_back(problem(a.act, ex.down, a.y));
  }
  RETURN_IF_ERROR(LinearGroup(problems));
  float* op = out.data<float>();
  for (const Active& a : active) {
    const float* yp = a.y.data<float>();
    const std::vector<int32_t>& r_ids = rows[a.e];
    const std::vector<float>& r_w = wts[a.e];
    for (size_t r = 0; r < r_ids.size(); ++r) {
      float* dst = op + static_cast<int64_t>(r_ids[r]) * h;
      const float* src = yp + static_cast<int64_t>(r) * h;
      const float w = r_w[r];
      for (int64_t c = 0; c < h; ++c) dst[c] += w * src[c];
    }
  }
  if (shared_) {
    Tensor s;
    RETURN_IF_ERROR(shared_->Forward(x, s));
    const float* sp = s.data<float>();
    Tensor g;
    if (spec_.shared_gate) RETURN_IF_ERROR(shared_gate_.Forward(x, g));
    for (int64_t i = 0; i < t; ++i) {
      const float scale = spec_.shared_gate ? Sigmoid(g.data<float>()[i]) : 1.0f;
      for (int64_t c = 0; c < h; ++c) op[i * h + c] += scale * sp[i * h + c];
    }
  }
  return absl::OkStatus();
}

// ---- Grouped-query attention -------------------------------------------------------------------

absl::StatusOr<GqaAttention> GqaAttention::Load(const Checkpoint& ckpt, absl::string_view prefix,
                                                const AttentionSpec& spec,
                                                std::shared_ptr<const RopeCache> rope,
                                                const WeightFormat& format) {
  if (spec.num_heads <= 0 || spec.num_kv_heads <= 0 || spec.head_dim <= 0 ||
      spec.num_heads % spec.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": invalid attention config (num_attention_heads=", spec.num_heads,
        ", num_key_value_heads=", spec.num_kv_heads, ", head_dim=", spec.head_dim, ")"));
  }
  GqaAttention a;
  a.spec_ = spec;
  if (a.spec_.scale == 0.0f) a.spec_.scale = 1.0f / std::sqrt(static_cast<float>(spec.head_dim));
  a.rope_ = std::move(rope);
  const int64_t h = spec.hidden_size;
  const int64_t qd = static_cast<int64_t>(spec.num_heads) * spec.head_dim;
  const int64_t kvd = static_cast<int64_t>(spec.num_kv_heads) * spec.head_dim;
  ASSIGN_OR_RETURN(a.q_, LoadLinear(ckpt, absl::StrCat(prefix, ".q_proj"), qd, h, spec.qkv_bias,
                                    format));
  ASSIGN_OR_RETURN(a.k_, LoadLinear(ckpt, absl::StrCat(prefix, ".k_proj"), kvd, h,
                                    spec.qkv_bias, format));
  ASSIGN_OR_RETURN(a.v_, LoadLinear(ckpt, absl::StrCat(prefix, ".v_proj"), kvd, h,
                                    spec.qkv_bias, format));
  ASSIGN_OR_RETURN(a.o_, LoadLinear(ckpt, absl::StrCat(prefix, ".o_proj"), h, qd, spec.o_bias,
                                    format));
  if (spec.qk_norm == AttentionSpec::QkNorm::kPerHead) {
    ASSIGN_OR_RETURN(a.q_norm_, LoadNormWeight(ckpt, absl::StrCat(prefix, ".q_norm"),
                                               spec.head_dim));
    ASSIGN_OR_RETURN(a.k_norm_, LoadNormWeight(ckpt, absl::StrCat(prefix, ".k_norm"),
                                               spec.head_dim));
  } else if (spec.qk_norm == AttentionSpec::QkNorm::kFullWidth) {
    ASSIGN_OR_RETURN(a.q_norm_, LoadNormWeight(ckpt, absl::StrCat(prefix, ".q_norm"), qd));
    ASSIGN_OR_RETURN(a.k_norm_, LoadNormWeight(ckpt, absl::StrCat(prefix, ".k_norm"), kvd));
  }
  if (spec.sinks) {
    ASSIGN_OR_RETURN(a.sinks_, LoadF32(ckpt, absl::StrCat(prefix, ".sinks"), {spec.num_heads}));
  }
  return a;
}

absl::Status GqaAttention::Forward(const Tensor& x, const AttentionBatch& batch, Tensor& k_cache,
                                   Tensor& v_cache, Tensor& out) const {
  const int64_t t = x.dim(0);
  const int nh = spec_.num_heads, nkv = spec_.num_kv_heads, hd = spec_.head_dim;
  Tensor q, k, v;
  RETURN_IF_ERROR(q_.Forward(x, q));
  RETURN_IF_ERROR(k_.Forward(x, k));
  RETURN_IF_ERROR(v_.Forward(x, v));
  const float eps = spec_.rms_norm_eps;
  if (spec_.qk_norm == AttentionSpec::QkNorm::kPerHead) {
    Tensor q2 = q.View({t * nh, hd}), k2 = k.View({t * nkv, hd});
    RETURN_IF_ERROR(RmsNorm(q2, q_norm_, eps, q2));
    RETURN_IF_ERROR(RmsNorm(k2, k_norm_, eps, k2));
  } else if (spec_.qk_norm == AttentionSpec::QkNorm::kFullWidth) {
    RETURN_IF_ERROR(RmsNorm(q, q_norm_, eps, q));
    RETURN_IF_ERROR(RmsNorm(k, k_norm_, eps, k));
  }
  Tensor q3 = q.View({t, nh, hd});
  Tensor k3 = k.View({t, nkv, hd});
  Tensor v3 = v.View({t, nkv, hd});
  RETURN_IF_ERROR(ApplyRope(*rope_, batch.positions, q3));
  RETURN_IF_ERROR(ApplyRope(*rope_, batch.positions, k3));
  RETURN_IF_ERROR(WriteKvCache(k3, v3, batch.slot_mapping, k_cache, v_cache));
  AttentionParams params;
  params.scale = spec_.scale;
  params.sliding_window = spec_.sliding_window;
  params.sinks = sinks_;
  ASSIGN_OR_RETURN(Tensor attn, Tensor::Empty({t, nh, hd}, DType::kF32));
  RETURN_IF_ERROR(PagedAttention(q3, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                 batch.query_start_loc, params, attn));
  return o_.Forward(attn.View({t, static_cast<int64_t>(nh) * hd}), out);
}

}  // namespace tessera

namespace tessera {

WeightFormat WeightFormatFromConfig(const ModelConfig& config) {
  WeightFormat f;
  f.fp8_block = config.quantization.fp8;
  f.block_n = config.quantization.block_n;
  f.block_k = config.quantization.block_k;
  return f;
}

absl::StatusOr<RopeConfig> MakeRopeConfig(const ModelConfig& config, int head_dim,
                                          int rotary_dim) {
  RopeConfig rope;
  rope.head_dim = head_dim;
  rope.rotary_dim = rotary_dim > 0 ? rotary_dim : head_dim;
  if (rope.rotary_dim > head_dim || rope.rotary_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(config.source, ": rotary_dim ",
                                                   rope.rotary_dim, " invalid for head_dim ",
                                                   head_dim));
  }
  rope.neox_style = !config.rope_interleaved;
  rope.theta = config.rope_theta;
  rope.max_position = config.max_position_embeddings > 0 ? config.max_position_embeddings : 4096;
  const RopeScalingConfig& rs = config.rope_scaling;
  if (rs.type.empty() || rs.type == "default") {
    rope.scaling = RopeConfig::Scaling::kNone;
  } else if (rs.type == "linear") {
    rope.scaling = RopeConfig::Scaling::kLinear;
    rope.factor = rs.factor;
  } else if (rs.type == "yarn") {
    rope.scaling = RopeConfig::Scaling::kYarn;
    rope.factor = rs.factor;
    rope.original_max_position = rs.original_max_position_embeddings > 0
                                     ? rs.original_max_position_embeddings
                                     : config.max_position_embeddings;
    rope.beta_fast = rs.beta_fast;
    rope.beta_slow = rs.beta_slow;
    rope.mscale = rs.mscale;
    rope.mscale_all_dim = rs.mscale_all_dim;
    rope.truncate = rs.truncate;
  } else if (rs.type == "llama3") {
    rope.scaling = RopeConfig::Scaling::kLlama3;
    rope.factor = rs.factor;
    rope.original_max_position = rs.original_max_position_embeddings;
    rope.low_freq_factor = rs.low_freq_factor;
    rope.high_freq_factor = rs.high_freq_factor;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(config.source, ": rope_scaling type '",
                                                   rs.type, "' is not supported"));
  }
  return rope;
}

absl::StatusOr<DecoderEnds> LoadDecoderEnds(const Checkpoint& ckpt, const ModelConfig& config,
                                            const WeightFormat& format) {
  const int64_t h = config.hidden_size, vocab = config.vocab_size;
  DecoderEnds ends;
  ASSIGN_OR_RETURN(ends.embed, ckpt.GetChecked("model.embed_tokens.weight", {vocab, h}));
  if (!ends.embed.is_contiguous()) {
    ASSIGN_OR_RETURN(ends.embed, ends.embed.Clone());
  }
  ASSIGN_OR_RETURN(ends.final_norm, LoadNormWeight(ckpt, "model.norm", h));
  if (ckpt.Has("lm_head.weight") || !config.tie_word_embeddings) {
    ASSIGN_OR_RETURN(ends.lm_head, LoadLinear(ckpt, "lm_head", vocab, h, false, format));
  } else {
    ends.lm_head.weight.weight = ends.embed;
  }
  return ends;
}

}  // namespace tessera
