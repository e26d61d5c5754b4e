#include "worker/models/layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "parallel/communicator.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/mla.h"

namespace tessera {
namespace {

// The one place that talks to the Checkpoint API. Every weight byte a rank keeps is asked for
// through ReadPart, and only those bytes: Checkpoint::bytes_loaded() then equals the rank's
// resident weight bytes (no load-then-drop), which tests compare with the planner.
bool HasTensor(const Checkpoint& ckpt, absl::string_view name) { return ckpt.Has(name); }

// The tensor's metadata after checking its shape (negative expected sizes are not checked);
// touches no data.
absl::StatusOr<const TensorInfo*> InfoChecked(const Checkpoint& ckpt, absl::string_view name,
                                              absl::Span<const int64_t> expected) {
  ASSIGN_OR_RETURN(const TensorInfo* info, ckpt.Info(name));
  bool ok = info->shape.size() == expected.size();
  for (size_t d = 0; ok && d < expected.size(); ++d) {
    if (expected[d] >= 0 && info->shape[d] != expected[d]) ok = false;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ",
                                                   ShapeToString(info->shape), ", expected ",
                                                   ShapeToString(expected)));
  }
  return info;
}

// Rows [r.begin, r.end) along `dim` of tensor `name` (the whole tensor when dim < 0): a zero-copy
// view where the bytes are contiguous, else a pread copy of exactly those bytes.
absl::StatusOr<Tensor> ReadPart(const Checkpoint& ckpt, absl::string_view name, int dim,
                                Range r) {
  if (dim < 0) return ckpt.Get(name);
  return ckpt.GetSlice(name, dim, r.begin, r.end);
}

// An fp8 weight slice w ([rows, cols], cut along dim 0 when `rows`, else dim 1) dequantised to
// f32 with the scale blocks s that cover it; `offset` is where the slice starts inside the first
// covering block along the cut dim.
absl::StatusOr<Tensor> DequantizeFp8Slice(const Tensor& w, const Tensor& s, bool rows,
                                          int64_t offset, int bn, int bk) {
  ASSIGN_OR_RETURN(Tensor out, w.To(DType::kF32));
  const int64_t n = out.dim(0), k = out.dim(1), sk = s.dim(1);
  const int64_t ro = rows ? offset : 0, co = rows ? 0 : offset;
  float* o = out.data<float>();
  const float* sp = s.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) o[i * k + j] *= sp[((i + ro) / bn) * sk + (j + co) / bk];
  }
  return out;
}

// t = mᵀ for a 2-D m with contiguous rows (m.stride(1) == 1) and a contiguous t of the same
// dtype, in 64 x 64 tiles over the thread pool: an element-wise strided copy of gpt-oss-20b's
// bf16 experts ran at ~64 M elements/s (a minute per four layers).
absl::Status TransposeInto(const Tensor& m, Tensor& t) {
  const int64_t rows = m.dim(0), cols = m.dim(1);
  if (m.ndim() != 2 || t.ndim() != 2 || t.dim(0) != cols || t.dim(1) != rows ||
      t.dtype() != m.dtype() || !t.is_contiguous() || (cols > 1 && m.stride(1) != 1)) {
    return absl::InternalError(absl::StrCat("TransposeInto: ", m.DebugString(), " -> ",
                                            t.DebugString()));
  }
  const int64_t ld = rows > 1 ? m.stride(0) : cols;
  const char* src = static_cast<const char*>(m.raw_data());
  char* dst = static_cast<char*>(t.raw_data());
  constexpr int64_t kTile = 64;
  const int64_t col_tiles = (cols + kTile - 1) / kTile;
  // The element size as a constant, so each copy is one load and store.
  auto copy_tiles = [&](auto size_tag) {
    constexpr size_t kEs = decltype(size_tag)::value;
    ParallelFor(col_tiles, 1, [&](int64_t b, int64_t e) {
      for (int64_t ct = b; ct < e; ++ct) {
        const int64_t c0 = ct * kTile, c1 = std::min(cols, c0 + kTile);
        for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
          const int64_t r1 = std::min(rows, r0 + kTile);
          for (int64_t c = c0; c < c1; ++c) {
            char* out = dst + static_cast<size_t>(c * rows) * kEs;
            for (int64_t r = r0; r < r1; ++r) {
              std::memcpy(out + r * kEs, src + static_cast<size_t>(r * ld + c) * kEs, kEs);
            }
          }
        }
      }
    });
  };
  switch (m.element_size()) {
    case 2: copy_tiles(std::integral_constant<size_t, 2>()); break;
    case 4: copy_tiles(std::integral_constant<size_t, 4>()); break;
    default:
      return absl::InternalError(absl::StrCat("TransposeInto: unsupported dtype ",
                                              DTypeName(m.dtype())));
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
  // MXFP4 weights are never concatenated (ConcatOutFeatures copies weight and scale_inv only).
  if (a.is_mxfp4() || b.is_mxfp4()) return false;
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

// ---- Sharding ----------------------------------------------------------------------------------

Range Shard::StageLayers(int num_layers) const {
  return SplitRange(num_layers, pp_size, pp_rank);
}

Communicator* Shard::tp_comm() const { return groups ? groups->tp : nullptr; }
Communicator* Shard::stage_comm() const { return groups ? groups->stage : nullptr; }
Communicator* Shard::pp_comm() const { return groups ? groups->pp : nullptr; }

ShardGroups::~ShardGroups() = default;

ShardCoords ShardCoordsOf(int tp_size, int ep_size, int dp_size, int pp_size, int world_rank) {
  const int stage = std::max(tp_size * dp_size, ep_size);
  ShardCoords c;
  c.pp_rank = std::min(pp_size - 1, world_rank / stage);
  const int s = world_rank % stage;
  c.tp_rank = s % tp_size;
  c.dp_rank = (s / tp_size) % dp_size;
  c.ep_rank = ep_size > 1 ? s : 0;
  return c;
}

absl::Status Shard::CheckLayout(int tp, int ep, int dp, int pp) {
  if (tp < 1 || ep < 1 || dp < 1 || pp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("layout tp=", tp, " ep=", ep, " dp=", dp,
                                                   " pp=", pp, ": every size must be >= 1"));
  }
  if (dp > 1 && ep != tp * dp) {
    return absl::UnimplementedError(absl::StrCat(
        "layout tp=", tp, " dp=", dp, " ep=", ep, " is not supported: data-parallel attention "
        "needs ep = tp * dp = ", tp * dp, " (experts partitioned over every rank of the stage)"));
  }
  if (dp == 1 && ep > 1 && tp > 1 && ep != tp) {
    return absl::UnimplementedError(absl::StrCat(
        "layout tp=", tp, " ep=", ep, " is not supported: with tensor parallelism ep must be 1 "
        "or equal tp (or use ep alone, or dp with ep = tp * dp)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Shard> Shard::Create(int tp_rank, int tp_size, int ep_rank, int ep_size,
                                    int dp_rank, int dp_size, int pp_rank, int pp_size,
                                    Communicator* world) {
  RETURN_IF_ERROR(CheckLayout(tp_size, ep_size, dp_size, pp_size));
  Shard s;
  s.tp_rank = tp_rank;
  s.tp_size = tp_size;
  s.ep_rank = ep_rank;
  s.ep_size = ep_size;
  s.dp_rank = dp_rank;
  s.dp_size = dp_size;
  s.pp_rank = pp_rank;
  s.pp_size = pp_size;
  if (tp_rank < 0 || tp_rank >= tp_size || ep_rank < 0 || ep_rank >= ep_size || dp_rank < 0 ||
      dp_rank >= dp_size || pp_rank < 0 || pp_rank >= pp_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid shard: tp rank ", tp_rank, " of ", tp_size, ", ep rank ", ep_rank, " of ",
        ep_size, ", dp rank ", dp_rank, " of ", dp_size, ", pp rank ", pp_rank, " of ", pp_size));
  }
  const int world_size = s.world_size();
  const ShardCoords c = ShardCoordsOf(tp_size, ep_size, dp_size, pp_size, s.world_rank());
  if (c.tp_rank != tp_rank || c.ep_rank != ep_rank || c.dp_rank != dp_rank ||
      c.pp_rank != pp_rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tp rank ", tp_rank, ", ep rank ", ep_rank, ", dp rank ", dp_rank, " and pp rank ",
        pp_rank, " are not the coordinates of one rank (world rank = pp_rank * stage + "
        "dp_rank * tp + tp_rank; ep rank = rank in the stage)"));
  }
  if (world_size == 1) return s;
  if (world == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("a sharded model (tp=", tp_size, ", ep=", ep_size, ", dp=", dp_size,
                     ", pp=", pp_size, ") needs the instance's communicator"));
  }
  if (world->size() != world_size || world->rank() != s.world_rank()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "communicator ", world->name(), " is rank ", world->rank(), " of ", world->size(),
        " but the shard is rank ", s.world_rank(), " of ", world_size, " (tp=", tp_size,
        " ep=", ep_size, " dp=", dp_size, " pp=", pp_size, ")"));
  }
  // Every rank builds its groups in the same order: tp, stage, pp.
  auto groups = std::make_shared<ShardGroups>();
  const int S = s.stage_size(), me = s.world_rank(), base = s.pp_rank * S;
  auto make = [&](const std::vector<int>& ranks,
                  const std::string& name) -> absl::StatusOr<Communicator*> {
    if (ranks.size() <= 1) return nullptr;
    if (static_cast<int>(ranks.size()) == world_size) return world;
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> g, world->NewGroup(ranks, name));
    groups->owned.push_back(std::move(g));
    return groups->owned.back().get();
  };
  std::vector<int> ranks;
  for (int t = 0; t < tp_size; ++t) ranks.push_back(me - tp_rank + t);
  ASSIGN_OR_RETURN(groups->tp, make(ranks, absl::StrCat(world->name(), "/tp", me - tp_rank)));
  ranks.clear();
  for (int i = 0; i < S; ++i) ranks.push_back(base + i);
  ASSIGN_OR_RETURN(groups->stage, make(ranks, absl::StrCat(world->name(), "/stage", pp_rank)));
  ranks.clear();
  for (int p = 0; p < pp_size; ++p) ranks.push_back(p * S + s.stage_rank());
  ASSIGN_OR_RETURN(groups->pp, make(ranks, absl::StrCat(world->name(), "/pp", s.stage_rank())));
  s.groups = std::move(groups);
  return s;
}

Range SplitRange(int64_t total, int parts, int index) {
  const int64_t per = (total + parts - 1) / parts;
  const int64_t begin = std::min<int64_t>(total, per * index);
  return Range{begin, std::min<int64_t>(total, begin + per)};
}

absl::Status CheckDivisible(int64_t total, int parts, absl::string_view what,
                            absl::string_view name) {
  if (parts > 0 && total % parts == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " (", total, ") is not divisible by ", name,
                                                 " ", parts));
}

absl::Status AllReduceSum(const Shard& shard, bool partial, Tensor& t) {
  Communicator* comm = shard.tp_comm();
  if (!partial || comm == nullptr) return absl::OkStatus();
  return comm->AllReduce(t, ReduceOp::kSum);
}

absl::Status AllReduceStage(const Shard& shard, bool partial, Tensor& t) {
  Communicator* comm = shard.stage_comm();
  if (!partial || comm == nullptr) return absl::OkStatus();
  return comm->AllReduce(t, ReduceOp::kSum);
}

absl::Status FeedForward(const Shard& shard, const MoeBlock* moe, const GatedMlp* mlp,
                         const Tensor& x, Tensor& delta) {
  if (moe != nullptr) {
    RETURN_IF_ERROR(moe->Forward(x, delta));
    return AllReduceStage(shard, moe->partial(), delta);
  }
  RETURN_IF_ERROR(mlp->Forward(x, delta));
  return AllReduceSum(shard, shard.tp_size > 1, delta);
}

// ---- Weight loading ----------------------------------------------------------------------------

absl::Status LinearLayer::Forward(const Tensor& x, Tensor& out) const {
  RETURN_IF_ERROR(EnsureF32(out, {x.dim(0), out_features()}));
  return Linear(x, weight, bias, out);
}

absl::StatusOr<LinearLayer> LoadLinear(const Checkpoint& ckpt, absl::string_view prefix,
                                       int64_t out_features, int64_t in_features, bool bias,
                                       const WeightFormat& format, const LinearSlice& slice) {
  LinearLayer layer;
  const std::string wname = absl::StrCat(prefix, ".weight");
  ASSIGN_OR_RETURN(const TensorInfo* wi, InfoChecked(ckpt, wname, {out_features, in_features}));
  const int64_t n = wi->shape[0], k = wi->shape[1];
  const bool sliced = slice.kind != LinearSlice::Kind::kFull;
  const bool rows = slice.kind == LinearSlice::Kind::kOutRows;
  const int d = !sliced ? -1 : rows ? 0 : 1;
  const Range r = sliced ? slice.range : Range{0, n};
  if (sliced && (r.begin < 0 || r.end > wi->shape[d] || r.begin >= r.end)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", wname, ": slice [", r.begin, ", ",
                                                   r.end, ") of dimension ", d, " (size ",
                                                   wi->shape[d], ") is empty or out of range"));
  }
  LinearWeight& lw = layer.weight;
  switch (wi->dtype) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16: {
      ASSIGN_OR_RETURN(lw.weight, ReadPart(ckpt, wname, d, r));
      break;
    }
    case DType::kF8E4M3: {
      const std::string sname = absl::StrCat(prefix, ".weight_scale_inv");
      if (!HasTensor(ckpt, sname)) {
        return absl::NotFoundError(absl::StrCat("fp8 weight ", wname, " has no scale tensor ",
                                                sname));
      }
      const int bn = format.block_n, bk = format.block_k;
      RETURN_IF_ERROR(
          InfoChecked(ckpt, sname, {(n + bn - 1) / bn, (k + bk - 1) / bk}).status());
      // Only the scale blocks covering the slice are read.
      const int block = rows ? bn : bk;
      const Range sr = sliced ? Range{r.begin / block, (r.end + block - 1) / block} : Range{};
      ASSIGN_OR_RETURN(Tensor w, ReadPart(ckpt, wname, d, r));
      ASSIGN_OR_RETURN(Tensor s, ReadPart(ckpt, sname, d, sr));
      if (s.dtype() != DType::kF32 || !s.is_contiguous()) {
        ASSIGN_OR_RETURN(s, s.To(DType::kF32));
      }
      if (!sliced || r.begin % block == 0) {
        lw.weight = w;
        lw.scale_inv = s;
        lw.block_n = bn;
        lw.block_k = bk;
      } else {
        // The slice cuts through scale blocks: keep exact values in f32 instead.
        ASSIGN_OR_RETURN(lw.weight, DequantizeFp8Slice(w, s, rows, r.begin - sr.begin * block,
                                                       bn, bk));
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor ", wname, " has unsupported dtype ",
                                                     DTypeName(wi->dtype)));
  }
  if (!lw.weight.is_contiguous()) {
    ASSIGN_OR_RETURN(lw.weight, lw.weight.Clone());
  }
  if (bias) {
    // Column-parallel slices keep their rows of the bias; otherwise the whole bias.
    const std::string bname = absl::StrCat(prefix, ".bias");
    ASSIGN_OR_RETURN(layer.bias, LoadF32Part(ckpt, bname, {n}, rows ? 0 : -1, r));
  }
  return layer;
}

absl::StatusOr<Tensor> LoadF32Part(const Checkpoint& ckpt, absl::string_view name,
                                   absl::Span<const int64_t> shape, int dim, Range range) {
  ASSIGN_OR_RETURN(const TensorInfo* info, InfoChecked(ckpt, name, shape));
  if (!IsFloatingPoint(info->dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has non-float dtype ",
                                                   DTypeName(info->dtype)));
  }
  ASSIGN_OR_RETURN(Tensor t, ReadPart(ckpt, name, dim, range));
  return t.To(DType::kF32);
}

absl::StatusOr<Tensor> LoadF32(const Checkpoint& ckpt, absl::string_view name,
                               absl::Span<const int64_t> shape) {
  return LoadF32Part(ckpt, name, shape, -1, Range{});
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
                                        const WeightFormat& format, const MlpNames& names,
                                        int parts, int index) {
  GatedMlp mlp;
  LinearSlice col, row;
  if (parts > 1) {
    RETURN_IF_ERROR(CheckDivisible(intermediate_size, parts,
                                   absl::StrCat(prefix, " intermediate size"), "shards"));
    const Range r = SplitRange(intermediate_size, parts, index);
    col = LinearSlice::OutRows(r);
    row = LinearSlice::InCols(r);
  }
  ASSIGN_OR_RETURN(LinearLayer gate, LoadLinear(ckpt, absl::StrCat(prefix, ".", names.gate),
                                                intermediate_size, hidden_size, names.bias,
                                                format, col));
  ASSIGN_OR_RETURN(LinearLayer up, LoadLinear(ckpt, absl::StrCat(prefix, ".", names.up),
                                              intermediate_size, hidden_size, names.bias, format,
                                              col));
  // Row-parallel down_proj: its bias joins the partial sums once (part 0).
  ASSIGN_OR_RETURN(mlp.down_, LoadLinear(ckpt, absl::StrCat(prefix, ".", names.down),
                                         hidden_size, intermediate_size,
                                         names.bias && index == 0, format, row));
  if (format.fuse_gate_up && !names.bias && CanConcat(gate.weight, up.weight)) {
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

// The "which layout works" half of the MXFP4 split error: tp sizes whose part of every expert is
// whole MX blocks, and expert-parallel sizes (experts stay whole).
std::string Mxfp4SplitAdvice(int64_t blocks, int num_experts) {
  std::vector<std::string> tps, eps;
  for (int p = 2; p <= 64; p *= 2) {
    if (blocks % p == 0) tps.push_back(absl::StrCat(p));
    if (num_experts % p == 0) eps.push_back(absl::StrCat(p));
  }
  std::string advice =
      tps.empty() ? absl::StrCat("no tp > 1 splits its ", blocks, " block(s)")
                  : absl::StrCat("tp ", absl::StrJoin(tps, ", "), " split every expert");
  if (!eps.empty()) {
    absl::StrAppend(&advice, "; expert parallelism keeps experts whole: ep ",
                    absl::StrJoin(eps, ", "), " (alone, with tp = ep, or ep = tp x dp)");
  }
  return advice;
}

absl::Status MoeBlock::LoadGptOssMxfp4Experts(const Checkpoint& ckpt, absl::string_view prefix,
                                              const MoeSpec& spec, const Shard& shard, int parts,
                                              MoeBlock& moe) {
  // Release format (transformers integrations/mxfp4.py): "<x>_blocks" [E, out, in / 32, 16] U8
  // (two e2m1 codes per byte, element 2b in the low nibble) and "<x>_scales" [E, out, in / 32]
  // U8 (E8M0). Rows are output features already, so expert e's rows are an MXFP4 LinearWeight
  // as they stand: weight [out, in / 2], mx_scales [out, in / 32]; nothing is dequantised.
  const int64_t h = spec.hidden_size, inter = spec.moe_intermediate_size;
  const int ne = spec.num_experts;
  constexpr int64_t kMx = kMxfp4BlockSize;
  const std::string gu = absl::StrCat(prefix, ".experts.gate_up_proj");
  const std::string dn = absl::StrCat(prefix, ".experts.down_proj");
  for (const auto& [field, size] : {std::pair<const char*, int64_t>{"hidden_size", h},
                                    std::pair<const char*, int64_t>{"moe_intermediate_size",
                                                                    inter}}) {
    if (size % kMx != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          gu, "_blocks: MXFP4 experts need ", field, " (", size, ") to be a multiple of ", kMx));
    }
  }
  RETURN_IF_ERROR(InfoChecked(ckpt, gu + "_blocks", {ne, 2 * inter, h / kMx, kMx / 2}).status());
  RETURN_IF_ERROR(InfoChecked(ckpt, gu + "_scales", {ne, 2 * inter, h / kMx}).status());
  RETURN_IF_ERROR(InfoChecked(ckpt, dn + "_blocks", {ne, h, inter / kMx, kMx / 2}).status());
  RETURN_IF_ERROR(InfoChecked(ckpt, dn + "_scales", {ne, h, inter / kMx}).status());
  for (const std::string& name : {gu + "_blocks", gu + "_scales", dn + "_blocks", dn + "_scales"}) {
    ASSIGN_OR_RETURN(const TensorInfo* info, ckpt.Info(name));
    if (info->dtype != DType::kU8) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ",
                                                     DTypeName(info->dtype), ", expected u8"));
    }
  }
  // Split experts: gate_up rows [2 * i0, 2 * i1) (interleaved gate / up pairs stay together),
  // down input columns [i0, i1), which must be whole MX blocks.
  const Range part = SplitRange(inter, parts, parts > 1 ? shard.stage_rank() : 0);
  if (parts > 1 && (part.begin % kMx != 0 || part.end % kMx != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": MXFP4 experts cannot be split over tp ", parts, ": moe_intermediate_size ",
        inter, " / ", parts, " = ", inter / parts, " down_proj input columns per rank is not a "
        "whole number of MX blocks of ", kMx, " (one E8M0 scale per ", kMx, " columns). Layouts "
        "that work: ", Mxfp4SplitAdvice(inter / kMx, ne)));
  }
  Range own{0, ne};
  if (shard.ep_size > 1) own = SplitRange(ne, shard.ep_size, shard.ep_rank);
  const bool down_bias = parts == 1 || shard.stage_rank() == 0;
  Tensor gub, gus, gubias, db, ds, dbias;
  if (parts > 1) {
    const Range rows{2 * part.begin, 2 * part.end};
    const Range cols{part.begin / kMx, part.end / kMx};
    ASSIGN_OR_RETURN(gub, ReadPart(ckpt, gu + "_blocks", 1, rows));
    ASSIGN_OR_RETURN(gus, ReadPart(ckpt, gu + "_scales", 1, rows));
    ASSIGN_OR_RETURN(gubias, LoadF32Part(ckpt, gu + "_bias", {ne, 2 * inter}, 1, rows));
    ASSIGN_OR_RETURN(db, ReadPart(ckpt, dn + "_blocks", 2, cols));
    ASSIGN_OR_RETURN(ds, ReadPart(ckpt, dn + "_scales", 2, cols));
  } else {
    ASSIGN_OR_RETURN(gub, ReadPart(ckpt, gu + "_blocks", 0, own));
    ASSIGN_OR_RETURN(gus, ReadPart(ckpt, gu + "_scales", 0, own));
    ASSIGN_OR_RETURN(gubias, LoadF32Part(ckpt, gu + "_bias", {ne, 2 * inter}, 0, own));
    ASSIGN_OR_RETURN(db, ReadPart(ckpt, dn + "_blocks", 0, own));
    ASSIGN_OR_RETURN(ds, ReadPart(ckpt, dn + "_scales", 0, own));
  }
  if (down_bias) {
    ASSIGN_OR_RETURN(dbias, LoadF32Part(ckpt, dn + "_bias", {ne, h}, 0, own));
  }
  // One expert's [out, groups, 16] blocks / [out, groups] scales as [out, in / 2] and
  // [out, in / 32]: views where the read is contiguous (mmap or owned copy), else a copy.
  auto rows_of = [](const Tensor& t, int64_t local, int64_t cols) -> absl::StatusOr<Tensor> {
    Tensor e = t.Select(0, local);
    if (!e.is_contiguous()) {
      ASSIGN_OR_RETURN(e, e.Clone());
    }
    return e.Reshape({e.dim(0), cols});
  };
  const int64_t d_in = db.dim(2) * kMx;  // this rank's down_proj input columns
  for (int e = 0; e < ne; ++e) {
    if (!moe.owned_[e]) continue;
    const int64_t local = e - own.begin;
    Expert& ex = moe.experts_[e];
    ex.fused = true;
    ASSIGN_OR_RETURN(ex.gate_up.weight.weight, rows_of(gub, local, h / 2));
    ASSIGN_OR_RETURN(ex.gate_up.weight.mx_scales, rows_of(gus, local, h / kMx));
    ASSIGN_OR_RETURN(ex.gate_up.bias, gubias.Select(0, local).Clone());
    ASSIGN_OR_RETURN(ex.down.weight.weight, rows_of(db, local, d_in / 2));
    ASSIGN_OR_RETURN(ex.down.weight.mx_scales, rows_of(ds, local, d_in / kMx));
    if (down_bias) {
      ASSIGN_OR_RETURN(ex.down.bias, dbias.Select(0, local).Clone());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<MoeBlock> MoeBlock::Load(const Checkpoint& ckpt, absl::string_view prefix,
                                        const MoeSpec& spec, const WeightFormat& format,
                                        const Shard& shard) {
  MoeBlock moe;
  moe.spec_ = spec;
  const int64_t h = spec.hidden_size, inter = spec.moe_intermediate_size;
  const int ne = spec.num_experts;
  if (ne <= 0 || spec.router.top_k <= 0 || spec.router.top_k > ne) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": invalid MoE config (num_experts=", ne, ", top_k=", spec.router.top_k, ")"));
  }
  // Sharding over the MoE group, the pipeline stage's ranks: whole experts over ep, or every
  // expert's FFN split over the stage (ep == 1: the stage is the tp group).
  const int group = shard.stage_size();
  moe.shard_ = shard;
  moe.dispatch_ = shard.dp_size > 1;
  moe.partial_ = group > 1 && !moe.dispatch_;
  moe.owned_.assign(ne, true);
  int parts = 1;  // intra-expert split
  if (shard.ep_size > 1) {
    RETURN_IF_ERROR(CheckDivisible(ne, shard.ep_size, absl::StrCat(prefix, " num_experts"), "ep"));
    const Range mine = SplitRange(ne, shard.ep_size, shard.ep_rank);
    for (int e = 0; e < ne; ++e) moe.owned_[e] = e >= mine.begin && e < mine.end;
  } else if (group > 1) {
    parts = group;
    RETURN_IF_ERROR(CheckDivisible(inter, parts, absl::StrCat(prefix, " moe_intermediate_size"),
                                   "tp"));
  }
  const Range inter_part = SplitRange(inter, parts, parts > 1 ? shard.stage_rank() : 0);
  const LinearSlice col = parts > 1 ? LinearSlice::OutRows(inter_part) : LinearSlice{};
  const LinearSlice row = parts > 1 ? LinearSlice::InCols(inter_part) : LinearSlice{};
  // An expert's down_proj bias is added by one rank: its owner, or stage rank 0 when split.
  const bool down_bias = parts == 1 || shard.stage_rank() == 0;
  ASSIGN_OR_RETURN(moe.router_, LoadLinear(ckpt, absl::StrCat(prefix, ".", spec.gate_name), ne,
                                           h, spec.router_bias, format));
  moe.router_.weight.f32_input = true;
  if (spec.correction_bias) {
    ASSIGN_OR_RETURN(moe.correction_bias_,
                     LoadF32(ckpt, absl::StrCat(prefix, ".", spec.correction_bias_name), {ne}));
  }
  moe.experts_.resize(ne);
  if (spec.experts == MoeSpec::Experts::kGptOss &&
      HasTensor(ckpt, absl::StrCat(prefix, ".experts.gate_up_proj_blocks"))) {
    RETURN_IF_ERROR(LoadGptOssMxfp4Experts(ckpt, prefix, spec, shard, parts, moe));
  } else if (spec.experts == MoeSpec::Experts::kGptOss) {
    // Stacked [E, hidden, 2*inter] / [E, inter, hidden] in x @ W layout: transpose per expert.
    // Only this rank's part is read: its contiguous expert range (ep), or every expert's
    // gate_up columns / down rows of its intermediate part (split), whose gate_up columns
    // interleave (gate, up) pairs, so an even column range keeps pairs together.
    const std::string gu_name = absl::StrCat(prefix, ".experts.gate_up_proj");
    const std::string d_name = absl::StrCat(prefix, ".experts.down_proj");
    ASSIGN_OR_RETURN(const TensorInfo* gui, InfoChecked(ckpt, gu_name, {ne, h, 2 * inter}));
    ASSIGN_OR_RETURN(const TensorInfo* di, InfoChecked(ckpt, d_name, {ne, inter, h}));
    if (gui->dtype == DType::kF8E4M3 || di->dtype == DType::kF8E4M3) {
      return absl::UnimplementedError(absl::StrCat(gu_name, ": fp8 stacked experts"));
    }
    Range own{0, ne};
    if (shard.ep_size > 1) own = SplitRange(ne, shard.ep_size, shard.ep_rank);
    const Range gu_cols{2 * inter_part.begin, 2 * inter_part.end};
    Tensor gu, gub, d, db;
    if (parts > 1) {
      ASSIGN_OR_RETURN(gu, ReadPart(ckpt, gu_name, 2, gu_cols));
      ASSIGN_OR_RETURN(gub, LoadF32Part(ckpt, gu_name + "_bias", {ne, 2 * inter}, 1, gu_cols));
      ASSIGN_OR_RETURN(d, ReadPart(ckpt, d_name, 1, inter_part));
    } else {
      // Whole experts are read one at a time below (scratch memory: only the transposed copies
      // stay resident).
      ASSIGN_OR_RETURN(gub, LoadF32Part(ckpt, gu_name + "_bias", {ne, 2 * inter}, 0, own));
    }
    // Expert e's [in, out] matrix of a stacked tensor: from the split part read above, or (whole
    // experts) a zero-copy view under --weights mmap, else a scratch read of that expert alone.
    auto expert_source = [&](const std::string& name, const Tensor& part,
                             int e) -> absl::StatusOr<Tensor> {
      if (parts > 1) return part.Select(0, e - own.begin);
      ASSIGN_OR_RETURN(Tensor one, ckpt.residency() == WeightResidency::kMapped
                                       ? ckpt.GetSlice(name, 0, e, e + 1)
                                       : ckpt.ReadSliceScratch(name, 0, e, e + 1));
      return one.Select(0, 0);
    };
    if (down_bias) {
      ASSIGN_OR_RETURN(db, LoadF32Part(ckpt, d_name + "_bias", {ne, h}, 0, own));
    }
    for (int e = 0; e < ne; ++e) {
      if (!moe.owned_[e]) continue;
      const int64_t local = e - own.begin;
      Expert& ex = moe.experts_[e];
      ex.fused = true;
      // Transposed copies keep the checkpoint dtype: [a, b] -> [b, a], in the checkpoint's weight
      // memory (huge pages, like every other weight: a heap copy decodes TLB-bound on 4 KiB
      // pages). The stacked source is freed when this layer is done.
      auto transpose = [&ckpt](const Tensor& m) -> absl::StatusOr<Tensor> {
        ASSIGN_OR_RETURN(Tensor t, ckpt.NewWeightTensor({m.dim(1), m.dim(0)}, m.dtype()));
        RETURN_IF_ERROR(TransposeInto(m, t));
        return t;
      };
      ASSIGN_OR_RETURN(Tensor gu_e, expert_source(gu_name, gu, e));
      ASSIGN_OR_RETURN(ex.gate_up.weight.weight, transpose(gu_e));
      ASSIGN_OR_RETURN(ex.gate_up.bias, gub.Select(0, local).Clone());
      ASSIGN_OR_RETURN(Tensor d_e, expert_source(d_name, d, e));
      ASSIGN_OR_RETURN(ex.down.weight.weight, transpose(d_e));
      if (down_bias) {
        ASSIGN_OR_RETURN(ex.down.bias, db.Select(0, local).Clone());
      }
    }
  } else {
    MlpNames names;
    if (spec.experts == MoeSpec::Experts::kMixtral) names = {"w1", "w3", "w2"};
    for (int e = 0; e < ne; ++e) {
      if (!moe.owned_[e]) continue;  // never read: another rank owns it
      Expert& ex = moe.experts_[e];
      const std::string p = absl::StrCat(prefix, ".experts.", e, ".");
      ASSIGN_OR_RETURN(LinearLayer gate, LoadLinear(ckpt, p + names.gate, inter, h, false,
                                                    format, col));
      ASSIGN_OR_RETURN(LinearLayer up,
                       LoadLinear(ckpt, p + names.up, inter, h, false, format, col));
      ASSIGN_OR_RETURN(ex.down, LoadLinear(ckpt, p + names.down, h, inter, false, format, row));
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
                                    spec.shared_intermediate_size, format, {}, group,
                                    group > 1 ? shard.stage_rank() : 0));
    moe.shared_ = std::make_unique<GatedMlp>(std::move(shared));
    if (spec.shared_gate) {
      ASSIGN_OR_RETURN(moe.shared_gate_, LoadLinear(ckpt, absl::StrCat(prefix,
                                                                       ".shared_expert_gate"),
                                                    1, h, false, format));
    }
  }
  return moe;
}

absl::Status MoeBlock::Route(const Tensor& x, Tensor& weights, Tensor& ids) const {
  const int64_t t = x.dim(0);
  const int k = spec_.router.top_k;
  ASSIGN_OR_RETURN(weights, Tensor::Empty({t, k}, DType::kF32));
  ASSIGN_OR_RETURN(ids, Tensor::Empty({t, k}, DType::kI32));
  if (t == 0) return absl::OkStatus();
  Tensor logits;
  RETURN_IF_ERROR(router_.Forward(x, logits));
  RETURN_IF_ERROR(MoeRoute(logits, correction_bias_, spec_.router, weights, ids));
  const int32_t* idp = ids.data<int32_t>();
  for (int64_t i = 0; i < t * k; ++i) {
    if (idp[i] < 0 || idp[i] >= spec_.num_experts) {
      return absl::InternalError(absl::StrCat("MoeRoute returned expert id ", idp[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status MoeBlock::AddShared(const Tensor& x, const Tensor& s, Tensor& out) const {
  // out += (sigmoid(shared_expert_gate · x) or 1) * s, all [rows, hidden].
  const int64_t t = x.dim(0), h = spec_.hidden_size;
  if (t == 0) return absl::OkStatus();
  float* op = out.data<float>();
  const float* sp = s.data<float>();
  Tensor g;
  if (spec_.shared_gate) RETURN_IF_ERROR(shared_gate_.Forward(x, g));
  for (int64_t i = 0; i < t; ++i) {
    const float scale = spec_.shared_gate ? Sigmoid(g.data<float>()[i]) : 1.0f;
    for (int64_t c = 0; c < h; ++c) op[i * h + c] += scale * sp[i * h + c];
  }
  return absl::OkStatus();
}

absl::Status MoeBlock::Forward(const Tensor& x, Tensor& out) const {
  const int64_t t = x.dim(0), h = spec_.hidden_size;
  const int k = spec_.router.top_k;
  RETURN_IF_ERROR(EnsureF32(out, {t, h}));
  out.SetZero();
  if (dispatch_) return DataParallelForward(x, out);
  if (t == 0) return absl::OkStatus();
  Tensor weights, ids;
  RETURN_IF_ERROR(Route(x, weights, ids));
  const int32_t* idp = ids.data<int32_t>();
  // Group (token, weight) pairs by expert.
  std::vector<std::vector<int32_t>> rows(spec_.num_experts);
  std::vector<std::vector<float>> wts(spec_.num_experts);
  const float* wp = weights.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    for (int j = 0; j < k; ++j) {
      rows[idp[i * k + j]].push_back(static_cast<int32_t>(i));
      wts[idp[i * k + j]].push_back(wp[i * k + j]);
    }
  }
  // With replicated tokens, experts owned by other ranks are their part of the sum.
  for (int e = 0; e < spec_.num_experts; ++e) {
    if (!owned_[e]) {
      rows[e].clear();
      wts[e].clear();
    }
  }
  RETURN_IF_ERROR(RunExperts(x, rows, wts, out));
  if (shared_) {
    Tensor s;
    RETURN_IF_ERROR(shared_->Forward(x, s));
    RETURN_IF_ERROR(AddShared(x, s, out));
  }
  return absl::OkStatus();
}

absl::Status MoeBlock::DataParallelForward(const Tensor& x, Tensor& out) const {
  // The tp ranks of a DP rank hold the same tokens: each takes its slice of them, so every
  // (token, expert) pair is dispatched once; the slices are gathered back at the end.
  const int64_t t = x.dim(0), h = spec_.hidden_size;
  const int tp = shard_.tp_size;
  const Range mine = SplitRange(t, tp, shard_.tp_rank);
  const Tensor xs = x.Slice(0, mine.begin, mine.end);
  Tensor ys = tp > 1 ? Tensor::Zeros({mine.size(), h}, DType::kF32).value() : out;
  Tensor weights, ids;
  RETURN_IF_ERROR(Route(xs, weights, ids));
  std::vector<int64_t> rows_per_rank;
  RETURN_IF_ERROR(DispatchForward(xs, weights, ids, ys, rows_per_rank));
  if (shared_) RETURN_IF_ERROR(SharedGatheredForward(xs, rows_per_rank, ys));
  if (tp == 1) return absl::OkStatus();
  std::vector<int64_t> splits(tp);
  for (int r = 0; r < tp; ++r) splits[r] = SplitRange(t, tp, r).size();
  return shard_.tp_comm()->AllGatherV(ys, out, splits);
}

absl::Status MoeBlock::SharedGatheredForward(const Tensor& xs,
                                             const std::vector<int64_t>& rows_per_rank,
                                             Tensor& out) const {
  // The shared experts are split over the stage, but each rank holds other tokens: gather every
  // rank's tokens, run this rank's part of the shared FFN on all of them, and send each rank the
  // partial sums of its own rows back (a reduce-scatter-v by all-to-all-v), summed in rank order.
  Communicator* comm = shard_.stage_comm();
  const int64_t h = spec_.hidden_size, mine = xs.dim(0);
  Tensor s;
  if (comm == nullptr) {
    RETURN_IF_ERROR(shared_->Forward(xs, s));
    return AddShared(xs, s, out);
  }
  const int group = comm->size();
  int64_t total = 0;
  for (int64_t r : rows_per_rank) total += r;
  ASSIGN_OR_RETURN(Tensor all_x, Tensor::Empty({total, h}, DType::kF32));
  RETURN_IF_ERROR(comm->AllGatherV(xs.is_contiguous() ? xs : xs.Clone().value(), all_x,
                                   rows_per_rank));
  Tensor all_s;
  if (total > 0) {
    RETURN_IF_ERROR(shared_->Forward(all_x, all_s));
  } else {
    ASSIGN_OR_RETURN(all_s, Tensor::Empty({0, h}, DType::kF32));
  }
  ASSIGN_OR_RETURN(Tensor parts, Tensor::Empty({group * mine, h}, DType::kF32));
  const std::vector<int64_t> back(group, mine);
  RETURN_IF_ERROR(comm->AllToAllV(all_s, rows_per_rank, parts, back));
  ASSIGN_OR_RETURN(s, Tensor::Zeros({mine, h}, DType::kF32));
  float* sp = s.data<float>();
  for (int r = 0; r < group; ++r) {
    const float* pp = parts.data<float>() + r * mine * h;
    for (int64_t i = 0; i < mine * h; ++i) sp[i] += pp[i];
  }
  return AddShared(xs, s, out);
}

absl::Status MoeBlock::DispatchForward(const Tensor& x, const Tensor& weights, const Tensor& ids,
                                       Tensor& out, std::vector<int64_t>& rows_per_rank) const {
  // Every (token, expert) pair travels to the rank owning the expert, ordered by destination;
  // the owner runs its experts on what it received and sends the unweighted outputs back in the
  // same order; the token's rank adds them with their routing weights.
  const int64_t t = x.dim(0), h = spec_.hidden_size;
  const int k = spec_.router.top_k;
  Communicator& comm = *shard_.stage_comm();
  const int world = comm.size();
  const int64_t per_rank = spec_.num_experts / world;
  const int32_t* idp = ids.data<int32_t>();
  const float* wp = weights.data<float>();
  std::vector<int64_t> send_splits(world, 0);
  for (int64_t i = 0; i < t * k; ++i) ++send_splits[idp[i] / per_rank];
  std::vector<int64_t> offset(world, 0);
  for (int r = 1; r < world; ++r) offset[r] = offset[r - 1] + send_splits[r - 1];
  const int64_t n_send = t * k;
  ASSIGN_OR_RETURN(Tensor send_x, Tensor::Empty({n_send, h}, DType::kF32));
  ASSIGN_OR_RETURN(Tensor send_e, Tensor::Empty({n_send}, DType::kI32));
  std::vector<int64_t> slot(n_send);  // pair i*k+j -> its row in the send order
  {
    std::vector<int64_t> next = offset;
    for (int64_t i = 0; i < t; ++i) {
      for (int j = 0; j < k; ++j) {
        const int32_t e = idp[i * k + j];
        const int64_t row = next[e / per_rank]++;
        slot[i * k + j] = row;
        std::memcpy(send_x.data<float>() + row * h, x.data<float>() + i * x.stride(0),
                    h * sizeof(float));
        send_e.data<int32_t>()[row] = e;
      }
    }
  }
  // How many rows each rank sends to each rank: row r of the gathered matrix is rank r's splits.
  ASSIGN_OR_RETURN(Tensor my_splits, Tensor::Empty({world}, DType::kI64));
  std::copy(send_splits.begin(), send_splits.end(), my_splits.data<int64_t>());
  ASSIGN_OR_RETURN(Tensor all_splits, Tensor::Empty({world * world}, DType::kI64));
  RETURN_IF_ERROR(comm.AllGather(my_splits, all_splits));
  const int me = comm.rank();
  std::vector<int64_t> recv_splits(world);
  int64_t n_recv = 0;
  rows_per_rank.assign(world, 0);
  for (int r = 0; r < world; ++r) {
    recv_splits[r] = all_splits.data<int64_t>()[r * world + me];
    n_recv += recv_splits[r];
    for (int j = 0; j < world; ++j) rows_per_rank[r] += all_splits.data<int64_t>()[r * world + j];
    rows_per_rank[r] /= k;  // every token sends top_k rows
  }
  ASSIGN_OR_RETURN(Tensor recv_x, Tensor::Empty({n_recv, h}, DType::kF32));
  ASSIGN_OR_RETURN(Tensor recv_e, Tensor::Empty({n_recv}, DType::kI32));
  RETURN_IF_ERROR(comm.AllToAllV(send_x, send_splits, recv_x, recv_splits));
  RETURN_IF_ERROR(comm.AllToAllV(send_e, send_splits, recv_e, recv_splits));
  // Run the owned experts over the received rows (weight 1: the token's rank applies weights).
  std::vector<std::vector<int32_t>> rows(spec_.num_experts);
  std::vector<std::vector<float>> ones(spec_.num_experts);
  for (int64_t r = 0; r < n_recv; ++r) {
    const int32_t e = recv_e.data<int32_t>()[r];
    if (e < 0 || e >= spec_.num_experts || !owned_[e]) {
      return absl::InternalError(absl::StrCat("MoE dispatch: rank ", me, " received a token for ",
                                              "expert ", e, " it does not own"));
    }
    rows[e].push_back(static_cast<int32_t>(r));
    ones[e].push_back(1.0f);
  }
  ASSIGN_OR_RETURN(Tensor y, Tensor::Zeros({n_recv, h}, DType::kF32));
  RETURN_IF_ERROR(RunExperts(recv_x, rows, ones, y));
  // Combine: the outputs come back in the order they were sent.
  ASSIGN_OR_RETURN(Tensor back, Tensor::Empty({n_send, h}, DType::kF32));
  RETURN_IF_ERROR(comm.AllToAllV(y, recv_splits, back, send_splits));
  float* op = out.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    for (int j = 0; j < k; ++j) {
      const float w = wp[i * k + j];
      const float* src = back.data<float>() + slot[i * k + j] * h;
      for (int64_t c = 0; c < h; ++c) op[i * h + c] += w * src[c];
    }
  }
  return absl::OkStatus();
}

absl::Status MoeBlock::RunExperts(const Tensor& x, const std::vector<std::vector<int32_t>>& rows,
                                  const std::vector<std::vector<float>>& wts, Tensor& out) const {
  const int64_t h = spec_.hidden_size;
  // Every active expert's projections run as one parallel job per stage (LinearGroup): at decode
  // that is two fork/joins per layer instead of three per expert.
  struct Active {
    int e = 0;
    Tensor xe, a, b, act, y;  // gathered rows, gate(|up) out, up out, activation, down out
  };
  std::vector<Active> active;
  active.reserve(spec_.num_experts);
  for (int e = 0; e < spec_.num_experts; ++e) {
    if (rows[e].empty()) continue;
    if (!owned_[e]) {
      return absl::InternalError(absl::StrCat("MoE: expert ", e, " is not on this rank"));
    }
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
    // This rank's part of the expert's intermediate dimension (all of it unless split).
    const int64_t inter_local = two_matrices(ex) ? a.a.dim(1) : a.a.dim(1) / 2;
    if (spec_.experts == MoeSpec::Experts::kGptOss) {
      RETURN_IF_ERROR(EnsureF32(a.act, {n, inter_local}));
      RETURN_IF_ERROR(ClampedSwiGlu(a.a, spec_.swiglu_alpha, spec_.swiglu_limit, a.act));
    } else if (!two_matrices(ex)) {
      RETURN_IF_ERROR(EnsureF32(a.act, {n, inter_local}));
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
  return absl::OkStatus();
}

// ---- Grouped-query attention -------------------------------------------------------------------

absl::StatusOr<GqaAttention> GqaAttention::Load(const Checkpoint& ckpt, absl::string_view prefix,
                                                const AttentionSpec& spec,
                                                std::shared_ptr<const RopeCache> rope,
                                                const WeightFormat& format, const Shard& shard) {
  if (spec.num_heads <= 0 || spec.num_kv_heads <= 0 || spec.head_dim <= 0 ||
      spec.num_heads % spec.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": invalid attention config (num_attention_heads=", spec.num_heads,
        ", num_key_value_heads=", spec.num_kv_heads, ", head_dim=", spec.head_dim, ")"));
  }
  GqaAttention a;
  a.spec_ = spec;
  a.full_spec_ = spec;
  a.shard_ = shard;
  if (a.spec_.scale == 0.0f) a.spec_.scale = 1.0f / std::sqrt(static_cast<float>(spec.head_dim));
  a.rope_ = std::move(rope);
  const int64_t h = spec.hidden_size, hd = spec.head_dim;
  const int64_t qd = static_cast<int64_t>(spec.num_heads) * hd;
  const int64_t kvd = static_cast<int64_t>(spec.num_kv_heads) * hd;
  // This rank's query heads and KV heads (all of them when not sharded).
  const int tp = shard.tp_size;
  Range q_heads{0, spec.num_heads}, kv_heads{0, spec.num_kv_heads};
  if (tp > 1) {
    RETURN_IF_ERROR(CheckDivisible(spec.num_heads, tp,
                                   absl::StrCat(prefix, " num_attention_heads"), "tp"));
    q_heads = SplitRange(spec.num_heads, tp, shard.tp_rank);
    if (spec.num_kv_heads >= tp) {
      RETURN_IF_ERROR(CheckDivisible(spec.num_kv_heads, tp,
                                     absl::StrCat(prefix, " num_key_value_heads"), "tp"));
      kv_heads = SplitRange(spec.num_kv_heads, tp, shard.tp_rank);
    } else {
      // Fewer KV heads than ranks: each rank keeps the one KV head its query heads attend with.
      RETURN_IF_ERROR(CheckDivisible(tp, spec.num_kv_heads, "tp",
                                     absl::StrCat(prefix, " num_key_value_heads")));
      const int64_t group = spec.num_heads / spec.num_kv_heads;
      const int64_t kv = q_heads.begin / group;
      kv_heads = Range{kv, kv + 1};
    }
    a.spec_.num_heads = static_cast<int>(q_heads.size());
    a.spec_.num_kv_heads = static_cast<int>(kv_heads.size());
  }
  const auto cols = [&](Range heads) {
    return tp > 1 ? LinearSlice::OutRows({heads.begin * hd, heads.end * hd}) : LinearSlice{};
  };
  ASSIGN_OR_RETURN(a.q_, LoadLinear(ckpt, absl::StrCat(prefix, ".q_proj"), qd, h, spec.qkv_bias,
                                    format, cols(q_heads)));
  ASSIGN_OR_RETURN(a.k_, LoadLinear(ckpt, absl::StrCat(prefix, ".k_proj"), kvd, h,
                                    spec.qkv_bias, format, cols(kv_heads)));
  ASSIGN_OR_RETURN(a.v_, LoadLinear(ckpt, absl::StrCat(prefix, ".v_proj"), kvd, h,
                                    spec.qkv_bias, format, cols(kv_heads)));
  const LinearSlice o_cols =
      tp > 1 ? LinearSlice::InCols({q_heads.begin * hd, q_heads.end * hd}) : LinearSlice{};
  ASSIGN_OR_RETURN(a.o_, LoadLinear(ckpt, absl::StrCat(prefix, ".o_proj"), h, qd,
                                    spec.o_bias && shard.tp_rank == 0, format, o_cols));
  if (spec.qk_norm == AttentionSpec::QkNorm::kPerHead) {
    ASSIGN_OR_RETURN(a.q_norm_, LoadNormWeight(ckpt, absl::StrCat(prefix, ".q_norm"),
                                               spec.head_dim));
    ASSIGN_OR_RETURN(a.k_norm_, LoadNormWeight(ckpt, absl::StrCat(prefix, ".k_norm"),
                                               spec.head_dim));
  } else if (spec.qk_norm == AttentionSpec::QkNorm::kFullWidth) {
    // Split with the heads: only this rank's part is read.
    ASSIGN_OR_RETURN(a.q_norm_, LoadF32Part(ckpt, absl::StrCat(prefix, ".q_norm.weight"), {qd},
                                            0, {q_heads.begin * hd, q_heads.end * hd}));
    ASSIGN_OR_RETURN(a.k_norm_, LoadF32Part(ckpt, absl::StrCat(prefix, ".k_norm.weight"), {kvd},
                                            0, {kv_heads.begin * hd, kv_heads.end * hd}));
  }
  if (spec.sinks) {
    ASSIGN_OR_RETURN(a.sinks_, LoadF32Part(ckpt, absl::StrCat(prefix, ".sinks"),
                                           {spec.num_heads}, 0, q_heads));
  }
  return a;
}

absl::Status GqaAttention::ShardedFullWidthNorm(Tensor& x, const Tensor& weight,
                                                int64_t full_width, int replicas) const {
  // x: [t, w] contiguous; the mean of squares runs over the full width held across the group.
  const int64_t t = x.dim(0), w = x.dim(1);
  ASSIGN_OR_RETURN(Tensor sumsq, Tensor::Empty({t}, DType::kF32));
  float* xp = x.data<float>();
  float* ss = sumsq.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    double acc = 0.0;
    for (int64_t j = 0; j < w; ++j) acc += static_cast<double>(xp[i * w + j]) * xp[i * w + j];
    ss[i] = static_cast<float>(acc / replicas);
  }
  RETURN_IF_ERROR(shard_.tp_comm()->AllReduce(sumsq, ReduceOp::kSum));
  const float* g = weight.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    const float inv = 1.0f / std::sqrt(ss[i] / static_cast<float>(full_width) +
                                       spec_.rms_norm_eps);
    for (int64_t j = 0; j < w; ++j) xp[i * w + j] = xp[i * w + j] * inv * g[j];
  }
  return absl::OkStatus();
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
    if (shard_.tp_size > 1) {
      const int64_t hd64 = hd;
      RETURN_IF_ERROR(ShardedFullWidthNorm(q, q_norm_, full_spec_.num_heads * hd64, 1));
      // Replicated KV heads (fewer than tp) are held by tp / num_kv_heads ranks each.
      const int k_replicas = full_spec_.num_kv_heads >= shard_.tp_size
                                 ? 1
                                 : shard_.tp_size / full_spec_.num_kv_heads;
      RETURN_IF_ERROR(
          ShardedFullWidthNorm(k, k_norm_, full_spec_.num_kv_heads * hd64, k_replicas));
    } else {
      RETURN_IF_ERROR(RmsNorm(q, q_norm_, eps, q));
      RETURN_IF_ERROR(RmsNorm(k, k_norm_, eps, k));
    }
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
                                            const WeightFormat& format, const Shard& shard) {
  const int64_t h = config.hidden_size, vocab = config.vocab_size;
  DecoderEnds ends;
  ends.shard = shard;
  ends.vocab_size = vocab;
  ends.hidden_size = h;
  const Range rows = SplitRange(vocab, shard.tp_size, shard.tp_rank);
  ends.vocab_start = rows.begin;
  const bool tied = !ckpt.Has("lm_head.weight") && config.tie_word_embeddings;
  // Pipeline stages: the embedding lives on the first stage (and the last when tied), the final
  // norm and lm_head on the last.
  if (shard.first_stage() || (tied && shard.last_stage())) {
    const std::string name = "model.embed_tokens.weight";
    RETURN_IF_ERROR(InfoChecked(ckpt, name, {vocab, h}).status());
    ASSIGN_OR_RETURN(ends.embed, ReadPart(ckpt, name, 0, rows));
  }
  if (!shard.last_stage()) return ends;
  ASSIGN_OR_RETURN(ends.final_norm, LoadNormWeight(ckpt, "model.norm", h));
  if (!tied) {
    const LinearSlice slice =
        shard.tp_size > 1 ? LinearSlice::OutRows(rows) : LinearSlice{};
    ASSIGN_OR_RETURN(ends.lm_head, LoadLinear(ckpt, "lm_head", vocab, h, false, format, slice));
  } else {
    ends.lm_head.weight.weight = ends.embed;
  }
  return ends;
}

absl::Status DecoderEnds::Embed(const Tensor& input_ids, Tensor& residual) const {
  RETURN_IF_ERROR(EnsureF32(residual, {input_ids.numel(), hidden_size}));
  RETURN_IF_ERROR(Embedding(embed, input_ids, vocab_start, vocab_size, residual));
  // Each token's row lives on one rank; the others contributed zeros.
  return AllReduceSum(shard, shard.tp_size > 1, residual);
}

absl::Status DecoderEnds::BeginStage(const Tensor& input_ids, Tensor& residual,
                                     Tensor& delta) const {
  delta = Tensor();
  if (shard.first_stage()) return Embed(input_ids, residual);
  const int64_t t = input_ids.numel(), h = hidden_size;
  ASSIGN_OR_RETURN(residual, Tensor::Empty({t, h}, DType::kF32));
  ASSIGN_OR_RETURN(delta, Tensor::Empty({t, h}, DType::kF32));
  Communicator* pp = shard.pp_comm();
  RETURN_IF_ERROR(pp->Recv(residual, shard.pp_rank - 1, /*tag=*/1));
  return pp->Recv(delta, shard.pp_rank - 1, /*tag=*/2);
}

absl::Status DecoderEnds::EndStage(const Tensor& residual, const Tensor& delta, float eps,
                                   Tensor& hidden) const {
  const int64_t t = residual.dim(0), h = hidden_size;
  RETURN_IF_ERROR(EnsureF32(hidden, {t, h}));
  if (!shard.last_stage()) {
    if (!delta.defined()) return absl::InternalError("pipeline stage without layers");
    Communicator* pp = shard.pp_comm();
    RETURN_IF_ERROR(pp->Send(residual, shard.pp_rank + 1, /*tag=*/1));
    RETURN_IF_ERROR(pp->Send(delta, shard.pp_rank + 1, /*tag=*/2));
    hidden.SetZero();
    return absl::OkStatus();
  }
  if (!delta.defined()) return RmsNorm(residual, final_norm, eps, hidden);
  Tensor r = residual;  // AddRmsNorm updates the residual in place
  return AddRmsNorm(r, delta, final_norm, eps, hidden);
}

absl::StatusOr<AttentionBatch> SliceAttentionBatch(const AttentionBatch& batch, int s0, int s1) {
  if (s0 < 0 || s1 > batch.num_seqs || s0 >= s1) {
    return absl::InvalidArgumentError(absl::StrCat("SliceAttentionBatch: sequences [", s0, ", ",
                                                   s1, ") of ", batch.num_seqs));
  }
  const int32_t* qsl = batch.query_start_loc.data<int32_t>();
  const int32_t q0 = qsl[s0], q1 = qsl[s1];
  AttentionBatch b;
  b.num_seqs = s1 - s0;
  b.num_tokens = q1 - q0;
  b.block_size = batch.block_size;
  b.positions = batch.positions.Slice(0, q0, q1);
  b.slot_mapping = batch.slot_mapping.Slice(0, q0, q1);
  b.block_tables = batch.block_tables.Slice(0, s0, s1);
  b.seq_lens = batch.seq_lens.Slice(0, s0, s1);
  ASSIGN_OR_RETURN(b.query_start_loc, Tensor::Empty({b.num_seqs + 1}, DType::kI32));
  for (int s = 0; s <= b.num_seqs; ++s) b.query_start_loc.data<int32_t>()[s] = qsl[s0 + s] - q0;
  if (batch.last_token_rows.defined()) {
    ASSIGN_OR_RETURN(b.last_token_rows, Tensor::Empty({b.num_seqs}, DType::kI32));
    for (int s = 0; s < b.num_seqs; ++s) {
      b.last_token_rows.data<int32_t>()[s] = batch.last_token_rows.data<int32_t>()[s0 + s] - q0;
    }
  }
  return b;
}

absl::Status DecoderEnds::ForwardStage(const Tensor& input_ids, const AttentionBatch& batch,
                                       float eps, const StageLayersFn& layers,
                                       Tensor& hidden) const {
  const int64_t t = input_ids.numel(), h = hidden_size;
  const int n = batch.num_seqs;
  const int m = shard.pp_size > 1 && shard.dp_size == 1 ? std::min(n, shard.pp_size) : 1;
  last_micro_batches_ = std::max(1, m);
  if (m <= 1) {
    Tensor residual, delta;
    RETURN_IF_ERROR(BeginStage(input_ids, residual, delta));
    RETURN_IF_ERROR(layers(batch, residual, delta));
    return EndStage(residual, delta, eps, hidden);
  }
  // Cut after whole sequences so that micro-batch i starts near token i * t / m.
  const int32_t* qsl = batch.query_start_loc.data<int32_t>();
  std::vector<int> cuts = {0};
  for (int i = 1; i < m; ++i) {
    int s = cuts.back() + 1;
    while (s < n - (m - i) && static_cast<int64_t>(qsl[s]) * m < i * t) ++s;
    cuts.push_back(s);
  }
  cuts.push_back(n);
  RETURN_IF_ERROR(EnsureF32(hidden, {t, h}));
  Communicator* pp = shard.pp_comm();
  std::vector<std::unique_ptr<Work>> sends;
  for (int i = 0; i < m; ++i) {
    ASSIGN_OR_RETURN(AttentionBatch mb, SliceAttentionBatch(batch, cuts[i], cuts[i + 1]));
    const int64_t q0 = qsl[cuts[i]], q1 = qsl[cuts[i + 1]];
    Tensor residual, delta;
    RETURN_IF_ERROR(BeginStage(input_ids.Slice(0, q0, q1), residual, delta));
    RETURN_IF_ERROR(layers(mb, residual, delta));
    if (!shard.last_stage()) {
      if (!delta.defined()) return absl::InternalError("pipeline stage without layers");
      // Asynchronous: the next stage receives micro-batch i while this one runs i + 1.
      sends.push_back(pp->SendAsync(residual, shard.pp_rank + 1, /*tag=*/1));
      sends.push_back(pp->SendAsync(delta, shard.pp_rank + 1, /*tag=*/2));
      continue;
    }
    Tensor out = hidden.Slice(0, q0, q1);
    if (!delta.defined()) {
      RETURN_IF_ERROR(RmsNorm(residual, final_norm, eps, out));
    } else {
      RETURN_IF_ERROR(AddRmsNorm(residual, delta, final_norm, eps, out));
    }
  }
  absl::Status status;
  for (std::unique_ptr<Work>& w : sends) status.Update(w->Wait());
  RETURN_IF_ERROR(status);
  if (!shard.last_stage()) hidden.SetZero();
  return absl::OkStatus();
}

absl::Status DecoderEnds::LocalLogits(const Tensor& hidden, Tensor& logits) const {
  Communicator* tp_comm = shard.tp_comm();
  if (tp_comm == nullptr) return lm_head.Forward(hidden, logits);
  // Every rank computes its vocabulary rows, padded to an equal width for the gather.
  const int tp = shard.tp_size;
  const int64_t rows = hidden.dim(0);
  const int64_t per = SplitRange(vocab_size, tp, 0).size();
  Tensor local;
  RETURN_IF_ERROR(lm_head.Forward(hidden, local));
  ASSIGN_OR_RETURN(Tensor send, Tensor::Zeros({rows * per}, DType::kF32));
  const int64_t width = local.dim(1);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(send.data<float>() + r * per, local.data<float>() + r * width,
                width * sizeof(float));
  }
  ASSIGN_OR_RETURN(Tensor gathered, Tensor::Empty({tp * rows * per}, DType::kF32));
  RETURN_IF_ERROR(tp_comm->AllGather(send, gathered));
  RETURN_IF_ERROR(EnsureF32(logits, {rows, vocab_size}));
  for (int p = 0; p < tp; ++p) {
    const Range part = SplitRange(vocab_size, tp, p);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(logits.data<float>() + r * vocab_size + part.begin,
                  gathered.data<float>() + (p * rows + r) * per, part.size() * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status DecoderEnds::Logits(const Tensor& hidden, Tensor& logits) const {
  if (shard.last_stage()) {
    RETURN_IF_ERROR(LocalLogits(hidden, logits));
  } else {
    RETURN_IF_ERROR(EnsureF32(logits, {hidden.dim(0), vocab_size}));
  }
  // The last stage computed them; every stage samples from the same broadcast copy.
  Communicator* pp = shard.pp_comm();
  if (pp == nullptr) return absl::OkStatus();
  return pp->Broadcast(logits, shard.pp_size - 1);
}

}  // namespace tessera
