#include "worker/models/mla.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"

namespace tessera {
namespace {

absl::Status CheckLinear(const LinearWeight& w, int64_t n, int64_t k, const std::string& name) {
  if (!w.weight.defined()) {
    return absl::NotFoundError(absl::StrCat("MLA: missing tensor ", name, ".weight"));
  }
  if (w.weight.ndim() != 2 || w.weight.dim(0) != n || w.weight.dim(1) != k) {
    return absl::InvalidArgumentError(absl::StrCat("MLA: tensor ", name, ".weight has shape ",
                                                   ShapeToString(w.weight.shape()), ", expected [",
                                                   n, ", ", k, "]"));
  }
  if (w.weight.dtype() == DType::kF8E4M3 || w.weight.dtype() == DType::kF8E5M2) {
    if (!w.scale_inv.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("MLA: fp8 tensor ", name, ".weight has no ", name, ".weight_scale_inv"));
    }
    const int64_t bn = (n + w.block_n - 1) / w.block_n, bk = (k + w.block_k - 1) / w.block_k;
    if (w.scale_inv.ndim() != 2 || w.scale_inv.dim(0) != bn || w.scale_inv.dim(1) != bk) {
      return absl::InvalidArgumentError(
          absl::StrCat("MLA: tensor ", name, ".weight_scale_inv has shape ",
                       ShapeToString(w.scale_inv.shape()), ", expected [", bn, ", ", bk, "]"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckVector(const Tensor& t, int64_t n, const std::string& name, bool optional) {
  if (!t.defined()) {
    if (optional) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("MLA: missing tensor ", name));
  }
  if (t.ndim() != 1 || t.dim(0) != n || t.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("MLA: tensor ", name, " is ", t.DebugString(), ", expected f32[", n, "]"));
  }
  return absl::OkStatus();
}

// Copies rows of a [rows, cols] (row-strided) f32 view into another [rows, cols] view.
void CopyRows(const Tensor& src, Tensor& dst) {
  CHECK_EQ(src.dim(0), dst.dim(0));
  CHECK_EQ(src.dim(1), dst.dim(1));
  CHECK_EQ(src.stride(1), 1);
  CHECK_EQ(dst.stride(1), 1);
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  const int64_t cols = src.dim(1);
  for (int64_t r = 0; r < src.dim(0); ++r) {
    std::memcpy(d + r * dst.stride(0), s + r * src.stride(0), cols * sizeof(float));
  }
}

// out[tok, hh, :n] = x[tok, hh, :k] · w[hh] for every token and head, with w: [heads, k, n]
// contiguous f32. Rows of w are streamed as AXPYs (vectorisable without reassociation); heads run
// in parallel. One call replaces 2 * heads small Linear calls and their thread-pool wake-ups.
void PerHeadMatmul(const float* x, int64_t x_tok_stride, int64_t x_head_stride, const float* w,
                   int64_t tokens, int64_t heads, int64_t k, int64_t n, float* out,
                   int64_t out_tok_stride, int64_t out_head_stride) {
  ParallelFor(heads, 1, [&](int64_t h_begin, int64_t h_end) {
    for (int64_t hh = h_begin; hh < h_end; ++hh) {
      const float* wh = w + hh * k * n;
      for (int64_t tok = 0; tok < tokens; ++tok) {
        const float* xr = x + tok * x_tok_stride + hh * x_head_stride;
        float* o = out + tok * out_tok_stride + hh * out_head_stride;
        std::fill(o, o + n, 0.0f);
        for (int64_t i = 0; i < k; ++i) {
          const float xi = xr[i];
          const float* wr = wh + i * n;
          for (int64_t j = 0; j < n; ++j) o[j] += xi * wr[j];
        }
      }
    }
  });
}

}  // namespace

float MlaSoftmaxScale(const MlaConfig& config) {
  double scale = 1.0 / std::sqrt(static_cast<double>(config.qk_head_dim()));
  const RopeConfig& r = config.rope;
  if (r.scaling == RopeConfig::Scaling::kYarn && r.mscale_all_dim != 0.0 && r.factor > 1.0) {
    const double mscale = 0.1 * r.mscale_all_dim * std::log(r.factor) + 1.0;
    scale *= mscale * mscale;
  }
  return static_cast<float>(scale);
}

absl::StatusOr<Tensor> DequantizeLinearWeight(const LinearWeight& w, const std::string& name) {
  if (!w.weight.defined() || w.weight.ndim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is not a 2-D weight"));
  }
  ASSIGN_OR_RETURN(Tensor out, w.weight.To(DType::kF32));
  const bool fp8 = w.weight.dtype() == DType::kF8E4M3 || w.weight.dtype() == DType::kF8E5M2;
  if (!fp8) return out;
  if (!w.scale_inv.defined()) {
    return absl::InvalidArgumentError(absl::StrCat("fp8 tensor ", name, " has no scale_inv"));
  }
  ASSIGN_OR_RETURN(Tensor scales, w.scale_inv.To(DType::kF32));
  const int64_t n = out.dim(0), k = out.dim(1);
  const int64_t bn = (n + w.block_n - 1) / w.block_n, bk = (k + w.block_k - 1) / w.block_k;
  if (scales.ndim() != 2 || scales.dim(0) != bn || scales.dim(1) != bk) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, "_scale_inv has shape ",
                                                   ShapeToString(scales.shape()), ", expected [",
                                                   bn, ", ", bk, "]"));
  }
  float* o = out.data<float>();
  const float* s = scales.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) o[i * k + j] *= s[(i / w.block_n) * bk + j / w.block_k];
  }
  return out;
}

RopeConfig MlaAttention::RopeConfigFor(const MlaConfig& config) {
  // DeepSeek's rope_interleave path first de-interleaves the rope dims (x[0::2] then x[1::2])
  // and then applies NeoX rotate_half, i.e. it rotates the pairs (x[2i], x[2i+1]) by frequency i
  // and emits them in de-interleaved order. GPT-J style rotation (neox_style = false) rotates the
  // same pairs by the same angles but leaves them in place. The two results differ only by one
  // fixed permutation, applied to both q_pe and k_pe, and q_pe·k_pe is invariant under a common
  // permutation, so attention is identical while the cache keeps k_pe in checkpoint order.
  RopeConfig rope = config.rope;
  rope.head_dim = static_cast<int>(config.qk_rope_head_dim);
  rope.rotary_dim = static_cast<int>(config.qk_rope_head_dim);
  rope.neox_style = !config.rope_interleave;
  return rope;
}

absl::StatusOr<MlaAttention> MlaAttention::Create(const MlaConfig& config, MlaWeights weights,
                                                  const std::string& prefix, MlaOptions options,
                                                  std::shared_ptr<const RopeCache> rope) {
  const MlaConfig& c = config;
  if (c.hidden_size <= 0 || c.num_heads <= 0 || c.kv_lora_rank <= 0 || c.qk_nope_head_dim <= 0 ||
      c.qk_rope_head_dim <= 0 || c.v_head_dim <= 0 || c.q_lora_rank < 0 ||
      c.qk_rope_head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MLA config for ", prefix,
                     ": hidden_size, num_heads, kv_lora_rank, qk_nope_head_dim, "
                     "qk_rope_head_dim (even) and v_head_dim must be positive; got hidden_size=",
                     c.hidden_size, " num_heads=", c.num_heads, " kv_lora_rank=", c.kv_lora_rank,
                     " qk_nope_head_dim=", c.qk_nope_head_dim,
                     " qk_rope_head_dim=", c.qk_rope_head_dim, " v_head_dim=", c.v_head_dim));
  }
  const std::string p = prefix.empty() ? "" : absl::StrCat(prefix, ".");
  const int64_t h = c.num_heads, qk = c.qk_head_dim();
  if (c.q_lora_rank == 0) {
    RETURN_IF_ERROR(CheckLinear(weights.q_proj, h * qk, c.hidden_size, p + "q_proj"));
  } else {
    RETURN_IF_ERROR(CheckLinear(weights.q_a_proj, c.q_lora_rank, c.hidden_size, p + "q_a_proj"));
    RETURN_IF_ERROR(CheckVector(weights.q_a_proj_bias, c.q_lora_rank, p + "q_a_proj.bias", true));
    RETURN_IF_ERROR(
        CheckVector(weights.q_a_layernorm, c.q_lora_rank, p + "q_a_layernorm.weight", false));
    RETURN_IF_ERROR(CheckLinear(weights.q_b_proj, h * qk, c.q_lora_rank, p + "q_b_proj"));
  }
  RETURN_IF_ERROR(CheckLinear(weights.kv_a_proj_with_mqa, c.latent_dim(), c.hidden_size,
                              p + "kv_a_proj_with_mqa"));
  RETURN_IF_ERROR(
      CheckVector(weights.kv_a_proj_bias, c.latent_dim(), p + "kv_a_proj_with_mqa.bias", true));
  RETURN_IF_ERROR(
      CheckVector(weights.kv_a_layernorm, c.kv_lora_rank, p + "kv_a_layernorm.weight", false));
  RETURN_IF_ERROR(CheckLinear(weights.kv_b_proj, h * (c.qk_nope_head_dim + c.v_head_dim),
                              c.kv_lora_rank, p + "kv_b_proj"));
  RETURN_IF_ERROR(CheckLinear(weights.o_proj, c.hidden_size, h * c.v_head_dim, p + "o_proj"));
  RETURN_IF_ERROR(CheckVector(weights.o_proj_bias, c.hidden_size, p + "o_proj.bias", true));

  MlaAttention mla;
  mla.config_ = config;
  mla.config_.rope = RopeConfigFor(c);
  mla.options_ = options;
  if (rope) {
    const RopeConfig& rc = rope->config();
    if (rc.head_dim != mla.config_.rope.head_dim || rc.neox_style != mla.config_.rope.neox_style ||
        (rc.rotary_dim != 0 && rc.rotary_dim != mla.config_.rope.rotary_dim)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MLA ", prefix, ": the shared RoPE cache (head_dim ", rc.head_dim,
          ") does not match qk_rope_head_dim ", c.qk_rope_head_dim, " / rope_interleave"));
    }
    mla.rope_ = std::move(rope);
  } else {
    ASSIGN_OR_RETURN(RopeCache own, RopeCache::Create(mla.config_.rope));
    mla.rope_ = std::make_shared<const RopeCache>(std::move(own));
  }
  mla.softmax_scale_ = MlaSoftmaxScale(mla.config_);

  // Absorbed matrices. kv_b_proj rows for head hh: [hh * (nope + v), hh * (nope + v) + nope) are
  // W_UK[hh] ([nope, kv_lora]), the next v_head_dim rows are W_UV[hh] ([v, kv_lora]).
  ASSIGN_OR_RETURN(Tensor kv_b, DequantizeLinearWeight(weights.kv_b_proj, p + "kv_b_proj.weight"));
  const int64_t nope = c.qk_nope_head_dim, vd = c.v_head_dim, r = c.kv_lora_rank;
  ASSIGN_OR_RETURN(mla.w_uk_, Tensor::Empty({h, nope, r}, DType::kF32));
  ASSIGN_OR_RETURN(mla.w_uv_t_, Tensor::Empty({h, r, vd}, DType::kF32));
  const float* kvb = kv_b.data<float>();
  float* uk = mla.w_uk_.data<float>();
  float* uv_t = mla.w_uv_t_.data<float>();
  for (int64_t hh = 0; hh < h; ++hh) {
    const float* head = kvb + hh * (nope + vd) * r;
    std::memcpy(uk + hh * nope * r, head, nope * r * sizeof(float));
    for (int64_t d = 0; d < vd; ++d) {
      for (int64_t j = 0; j < r; ++j) uv_t[(hh * r + j) * vd + d] = head[(nope + d) * r + j];
    }
  }
  mla.w_ = std::move(weights);
  return mla;
}

absl::Status MlaAttention::ProjectAndCache(const Tensor& hidden, const AttentionBatch& batch,
                                           const Tensor& k_cache, const Tensor& v_cache,
                                           Tensor& q) const {
  const MlaConfig& c = config_;
  const int64_t t = hidden.dim(0), h = c.num_heads, qk = c.qk_head_dim();
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, r = c.kv_lora_rank;

  // Queries.
  ASSIGN_OR_RETURN(q, Tensor::Empty({t, h * qk}, DType::kF32));
  if (c.q_lora_rank == 0) {
    RETURN_IF_ERROR(Linear(hidden, w_.q_proj, Tensor(), q));
  } else {
    ASSIGN_OR_RETURN(Tensor qa, Tensor::Empty({t, c.q_lora_rank}, DType::kF32));
    RETURN_IF_ERROR(Linear(hidden, w_.q_a_proj, w_.q_a_proj_bias, qa));
    RETURN_IF_ERROR(RmsNorm(qa, w_.q_a_layernorm, c.rms_norm_eps, qa));
    RETURN_IF_ERROR(Linear(qa, w_.q_b_proj, Tensor(), q));
  }
  q = q.View({t, h, qk});
  // RoPE on q_pe, through a packed [t, h, rope] copy.
  ASSIGN_OR_RETURN(Tensor q_pe, Tensor::Empty({t, h, rope}, DType::kF32));
  {
    Tensor src = q.View({t * h, qk}).Slice(1, nope, qk);
    Tensor dst = q_pe.View({t * h, rope});
    CopyRows(src, dst);
    RETURN_IF_ERROR(ApplyRope(*rope_, batch.positions, q_pe));
    CopyRows(dst, src);
  }

  // Latents: kv_a = [c_raw | k_pe] -> [rms_norm(c_raw) | rope(k_pe)].
  ASSIGN_OR_RETURN(Tensor kv_a, Tensor::Empty({t, c.latent_dim()}, DType::kF32));
  RETURN_IF_ERROR(Linear(hidden, w_.kv_a_proj_with_mqa, w_.kv_a_proj_bias, kv_a));
  {
    ASSIGN_OR_RETURN(Tensor c_norm, Tensor::Empty({t, r}, DType::kF32));
    RETURN_IF_ERROR(RmsNorm(kv_a.Slice(1, 0, r), w_.kv_a_layernorm, c.rms_norm_eps, c_norm));
    Tensor c_dst = kv_a.Slice(1, 0, r);
    CopyRows(c_norm, c_dst);
    ASSIGN_OR_RETURN(Tensor k_pe, Tensor::Empty({t, 1, rope}, DType::kF32));
    Tensor k_pe_src = kv_a.Slice(1, r, r + rope);
    Tensor k_pe_2d = k_pe.View({t, rope});
    CopyRows(k_pe_src, k_pe_2d);
    RETURN_IF_ERROR(ApplyRope(*rope_, batch.positions, k_pe));
    CopyRows(k_pe_2d, k_pe_src);
  }
  const Tensor k_new = kv_a.View({t, 1, c.latent_dim()});
  const Tensor v_new = k_new.Slice(2, 0, r);
  Tensor kc = k_cache, vc = v_cache;
  return WriteKvCache(k_new, v_new, batch.slot_mapping, kc, vc);
}

absl::Status MlaAttention::AttendAbsorbed(const Tensor& q, const AttentionBatch& batch,
                                          const Tensor& k_cache, const Tensor& v_cache,
                                          Tensor& attn) const {
  const MlaConfig& c = config_;
  const int64_t t = q.dim(0), h = c.num_heads, r = c.kv_lora_rank, nope = c.qk_nope_head_dim;
  const int64_t rope = c.qk_rope_head_dim, vd = c.v_head_dim, qk = c.qk_head_dim();
  // q_full[t, hh] = [q_nope[t, hh] · W_UK[hh] | q_pe[t, hh]]: [t, h, kv_lora + rope].
  ASSIGN_OR_RETURN(Tensor q_full, Tensor::Empty({t, h, c.latent_dim()}, DType::kF32));
  PerHeadMatmul(q.data<float>(), h * qk, qk, w_uk_.data<float>(), t, h, nope, r,
                q_full.data<float>(), h * c.latent_dim(), c.latent_dim());
  {
    const Tensor src = q.View({t * h, qk}).Slice(1, nope, qk);
    Tensor dst = q_full.View({t * h, c.latent_dim()}).Slice(1, r, r + rope);
    CopyRows(src, dst);
  }
  // MQA over the latent cache: one KV head, k = [c | k_pe], v = c.
  ASSIGN_OR_RETURN(Tensor latent_out, Tensor::Empty({t, h, r}, DType::kF32));
  AttentionParams params;
  params.scale = softmax_scale_;
  RETURN_IF_ERROR(PagedAttention(q_full, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                 batch.query_start_loc, params, latent_out));
  // attn[t, hh] = latent_out[t, hh] · W_UV[hh]ᵀ: [t, h * v_head_dim].
  PerHeadMatmul(latent_out.data<float>(), h * r, r, w_uv_t_.data<float>(), t, h, r, vd,
                attn.data<float>(), h * vd, vd);
  return absl::OkStatus();
}

absl::Status MlaAttention::AttendUnabsorbed(const Tensor& q, const AttentionBatch& batch,
                                            const Tensor& k_cache, Tensor& attn) const {
  const MlaConfig& c = config_;
  const int64_t h = c.num_heads, r = c.kv_lora_rank, nope = c.qk_nope_head_dim;
  const int64_t rope = c.qk_rope_head_dim, vd = c.v_head_dim, qk = c.qk_head_dim();
  const int64_t kv_row = nope + vd;
  const int64_t block_size = k_cache.dim(1);
  const int32_t* seq_lens = batch.seq_lens.data<int32_t>();
  const int32_t* qsl = batch.query_start_loc.data<int32_t>();
  const int32_t* tables = batch.block_tables.data<int32_t>();
  const int64_t table_stride = batch.block_tables.stride(0);
  const int64_t max_blocks = batch.block_tables.dim(1);
  const float* cache = k_cache.data<float>();
  const int64_t sb = k_cache.stride(0), ss = k_cache.stride(1);
  const float* qd = q.data<float>();
  float* out = attn.data<float>();

  for (int s = 0; s < batch.num_seqs; ++s) {
    const int64_t len = seq_lens[s], q_begin = qsl[s], q_len = qsl[s + 1] - qsl[s];
    if (q_len == 0) continue;
    if (len < q_len || (len + block_size - 1) / block_size > max_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MLA: sequence ", s, " has seq_len ", len, " with ", q_len, " query tokens and ",
          max_blocks, " block table entries of ", block_size, " slots"));
    }
    // Gather the latent context [len, kv_lora + rope].
    ASSIGN_OR_RETURN(Tensor ctx, Tensor::Empty({len, c.latent_dim()}, DType::kF32));
    float* ctx_d = ctx.data<float>();
    for (int64_t pos = 0; pos < len; ++pos) {
      const int64_t block = tables[s * table_stride + pos / block_size];
      if (block < 0 || block >= k_cache.dim(0)) {
        return absl::OutOfRangeError(
            absl::StrCat("MLA: sequence ", s, " block table entry ", pos / block_size, " = ", block,
                         " is outside the cache of ", k_cache.dim(0), " blocks"));
      }
      std::memcpy(ctx_d + pos * c.latent_dim(), cache + block * sb + (pos % block_size) * ss,
                  c.latent_dim() * sizeof(float));
    }
    // Expand: kv[pos, hh] = [k_nope (nope) | v (vd)].
    ASSIGN_OR_RETURN(Tensor kv, Tensor::Empty({len, h * kv_row}, DType::kF32));
    RETURN_IF_ERROR(Linear(ctx.Slice(1, 0, r), w_.kv_b_proj, Tensor(), kv));
    const float* kvd = kv.data<float>();
    std::vector<double> scores(len);
    std::vector<double> acc(vd);
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t row = q_begin + i;
      const int64_t visible = len - q_len + i + 1;  // causal: keys 0 .. position
      for (int64_t hh = 0; hh < h; ++hh) {
        const float* qh = qd + (row * h + hh) * qk;
        double max_score = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const float* kn = kvd + (j * h + hh) * kv_row;
          const float* kp = ctx_d + j * c.latent_dim() + r;
          double dot = 0.0;
          for (int64_t d = 0; d < nope; ++d) dot += static_cast<double>(qh[d]) * kn[d];
          for (int64_t d = 0; d < rope; ++d) dot += static_cast<double>(qh[nope + d]) * kp[d];
          scores[j] = dot * softmax_scale_;
          max_score = std::max(max_score, scores[j]);
        }
        double denom = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < visible; ++j) {
          const double p = std::exp(scores[j] - max_score);
          denom += p;
          const float* vj = kvd + (j * h + hh) * kv_row + nope;
          for (int64_t d = 0; d < vd; ++d) acc[d] += p * vj[d];
        }
        float* o = out + (row * h + hh) * vd;
        for (int64_t d = 0; d < vd; ++d) o[d] = static_cast<float>(acc[d] / denom);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status MlaAttention::Forward(const Tensor& hidden, const AttentionBatch& batch,
                                   Tensor& latent_cache, Tensor& out) const {
  return Forward(hidden, batch, latent_cache, out, options_.path);
}

absl::Status MlaAttention::Forward(const Tensor& hidden, const AttentionBatch& batch,
                                   Tensor& latent_cache, Tensor& out, MlaOptions::Path path) const {
  const MlaConfig& c = config_;
  const int64_t t = batch.num_tokens;
  if (hidden.ndim() != 2 || hidden.dim(0) != t || hidden.dim(1) != c.hidden_size ||
      hidden.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("MLA: hidden is ", hidden.DebugString(),
                                                   ", expected f32[", t, ", ", c.hidden_size, "]"));
  }
  if (!out.defined() || out.ndim() != 2 || out.dim(0) != t || out.dim(1) != c.hidden_size ||
      out.dtype() != DType::kF32 || !out.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat("MLA: out is ", out.defined() ? out.DebugString() : std::string("undefined"),
                     ", expected contiguous f32[", t, ", ", c.hidden_size, "]"));
  }
  // Normalise the cache to [num_blocks, block_size, 1, latent_dim] and the value view.
  Tensor k_cache;
  if (latent_cache.ndim() == 3 && latent_cache.dim(2) == c.latent_dim()) {
    k_cache = latent_cache.AsStrided(
        {latent_cache.dim(0), latent_cache.dim(1), 1, c.latent_dim()},
        {latent_cache.stride(0), latent_cache.stride(1), c.latent_dim(), latent_cache.stride(2)});
  } else if (latent_cache.ndim() == 4 && latent_cache.dim(2) == 1 &&
             latent_cache.dim(3) == c.latent_dim()) {
    k_cache = latent_cache;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "MLA: latent cache is ", latent_cache.DebugString(), ", expected [num_blocks, ",
        "block_size, (1,) ", c.latent_dim(), "] (kv_lora_rank + qk_rope_head_dim)"));
  }
  if (k_cache.dtype() != DType::kF32 || k_cache.stride(3) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("MLA: latent cache ", latent_cache.DebugString(),
                                                   " must be f32 with contiguous rows"));
  }
  if (k_cache.dim(1) != batch.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("MLA: latent cache block size ", k_cache.dim(1),
                                                   " != batch block_size ", batch.block_size));
  }
  const Tensor v_cache = k_cache.Slice(3, 0, c.kv_lora_rank);
  if (t == 0) return absl::OkStatus();

  Tensor q;  // [t, h, qk_head_dim]
  RETURN_IF_ERROR(ProjectAndCache(hidden, batch, k_cache, v_cache, q));
  ASSIGN_OR_RETURN(Tensor attn, Tensor::Empty({t, c.num_heads * c.v_head_dim}, DType::kF32));
  if (path == MlaOptions::Path::kAbsorbed) {
    RETURN_IF_ERROR(AttendAbsorbed(q, batch, k_cache, v_cache, attn));
  } else {
    RETURN_IF_ERROR(AttendUnabsorbed(q, batch, k_cache, attn));
  }
  return Linear(attn, w_.o_proj, w_.o_proj_bias, out);
}

}  // namespace tessera
