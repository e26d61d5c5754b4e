#include "coordinator/cluster/planner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status.h"
#include "worker/kv_cache.h"

namespace tessera {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::vector<int> Divisors(int n) {
  std::vector<int> out;
  for (int d = 1; d <= n; ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

std::string LayoutFlags(const MeshShape& s) {
  return absl::StrCat("--tp ", s.tp, " --dp ", s.dp, " --pp ", s.pp, " --ep ", s.ep);
}

// The checkpoint inventory with the routed experts of each layer folded into one entry per
// tensor kind (all experts of a layer have the same shapes), so that per-rank sums cost
// O(layers) instead of O(layers * experts).
struct Inventory {
  std::vector<CheckpointTensor> folded;
  std::vector<int64_t> counts;  // tensors each folded entry stands for
  int64_t params = 0, mtp_params = 0;  // parameters outside / inside the MTP layers
  int64_t bytes = 0, mtp_bytes = 0;    // stored bytes outside / inside the MTP layers
};

Inventory BuildInventory(const ModelConfig& config) {
  Inventory inv;
  std::map<std::pair<int, std::string>, size_t> expert_index;
  for (const CheckpointTensor& t : CheckpointTensors(config)) {
    const int64_t params = t.num_elements() * t.params_per_element;
    if (t.placement == TensorPlacement::kMtp) {
      inv.mtp_params += params;
      inv.mtp_bytes += t.nbytes();
    } else {
      inv.params += params;
      inv.bytes += t.nbytes();
    }
    if (t.split != TensorSplit::kExpert) {
      inv.folded.push_back(t);
      inv.counts.push_back(1);
      continue;
    }
    // "...experts.17.w1.weight" -> "...experts.*.w1.weight"
    std::string key = t.name;
    const size_t at = key.find("experts.");
    if (at != std::string::npos) {
      const size_t digits = at + 8;
      size_t end = digits;
      while (end < key.size() && std::isdigit(static_cast<unsigned char>(key[end]))) ++end;
      key.replace(digits, end - digits, "*");
    }
    auto [it, inserted] = expert_index.try_emplace({t.layer, key}, inv.folded.size());
    if (inserted) {
      inv.folded.push_back(t);
      inv.folded.back().expert = 0;
      inv.counts.push_back(0);
    }
    ++inv.counts[it->second];
  }
  return inv;
}

LayerKvSpec KvSpecForRank(const ModelConfig& c, int tp) {
  LayerKvSpec spec;
  if (c.is_mla()) {  // latent [kv_lora_rank | k_pe], the same on every TP rank
    spec.num_kv_heads = 1;
    spec.k_dim = static_cast<int>(c.kv_lora_rank + c.qk_rope_head_dim);
    spec.v_dim = static_cast<int>(c.kv_lora_rank);
    spec.v_aliases_k = true;
    return spec;
  }
  spec.num_kv_heads = c.num_key_value_heads >= tp ? c.num_key_value_heads / tp : 1;
  spec.k_dim = static_cast<int>(c.head_dim);
  spec.v_dim = static_cast<int>(c.head_dim);
  return spec;
}

// Weight bytes and tensor count of the rank at (pp_rank, tp_rank); every EP rank holds the same
// number of equally shaped experts, so ep_rank does not change them.
void RankWeights(const ModelConfig& c, const Inventory& inv, const MeshShape& shape,
                 const MeshCoord& coord, bool load_mtp, RankPlan* rank) {
  RankTensorOptions options;
  options.load_mtp = load_mtp;
  MeshCoord expert_owner = coord;
  expert_owner.ep_rank = 0;  // folded experts are represented by expert 0
  TensorSlice slice;
  for (size_t i = 0; i < inv.folded.size(); ++i) {
    const CheckpointTensor& t = inv.folded[i];
    if (t.split == TensorSplit::kExpert) {
      if (!RankSlice(c, t, shape, expert_owner, options, &slice)) continue;
      const int64_t held = inv.counts[i] / shape.ep;
      rank->weight_bytes += held * slice.nbytes;
      rank->num_tensors += held;
    } else if (RankSlice(c, t, shape, coord, options, &slice)) {
      rank->weight_bytes += slice.nbytes;
      ++rank->num_tensors;
    }
  }
}

// The longest single sequence whose KV fits in `rank` (0 when none).
int64_t MaxSequenceTokens(const ModelConfig& c, const RankPlan& rank, int block_size) {
  if (rank.kv_bytes <= 0 || rank.kv_bytes_per_token <= 0) return 0;
  int64_t lo = 0, hi = int64_t{1} << 40;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (SequenceKvBytes(c, rank, mid, block_size) <= rank.kv_bytes) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

std::vector<std::string> CheckLayout(const ModelConfig& c, const MeshShape& s, int devices,
                                     const std::vector<CheckpointTensor>& tensors);

struct Evaluation {
  ShardingPlan plan;
  std::vector<std::string> violations;
  bool weights_fit = false;
  bool holds_sequence = false;  // one sequence of the requested (or maximum) length fits
  int64_t worst_weight_bytes = 0;
};

Evaluation Evaluate(const ModelConfig& c, const Inventory& inv, const PlanOptions& o,
                    const MeshShape& shape) {
  Evaluation ev;
  ShardingPlan& plan = ev.plan;
  plan.model = c.source;
  plan.architecture = c.architecture;
  plan.shape = shape;
  plan.kv_dtype = o.kv_dtype.value_or(c.torch_dtype);
  plan.block_size = o.block_size;
  plan.device_memory_bytes = o.device_memory_bytes;
  plan.overhead_fraction = o.overhead_fraction;
  plan.max_position_embeddings = c.max_position_embeddings;
  plan.load_mtp = o.load_mtp;
  if (c.quantization.fp8) {
    plan.weight_format = absl::StrCat("fp8 e4m3 (", c.quantization.block_n, "x",
                                      c.quantization.block_k, " blocks, f32 scales) + ",
                                      DTypeName(c.torch_dtype));
  } else if (c.quantization.mxfp4) {
    plan.weight_format = absl::StrCat("mxfp4 experts + ", DTypeName(c.torch_dtype));
  } else {
    plan.weight_format = std::string(DTypeName(c.torch_dtype));
  }
  plan.num_parameters = inv.params;
  plan.mtp_parameters = inv.mtp_params;
  plan.checkpoint_bytes = inv.bytes + inv.mtp_bytes;
  plan.model_weight_bytes = inv.bytes + (o.load_mtp ? inv.mtp_bytes : 0);

  ev.violations = CheckLayout(c, shape, o.devices, inv.folded);
  if (!ev.violations.empty()) return ev;

  absl::StatusOr<Mesh> mesh = Mesh::Create(shape);
  if (!mesh.ok()) {
    ev.violations.push_back(std::string(mesh.status().message()));
    return ev;
  }
  const int64_t usable = static_cast<int64_t>(
      std::floor(static_cast<double>(o.device_memory_bytes) * (1.0 - o.overhead_fraction)));
  const LayerKvSpec spec = KvSpecForRank(c, shape.tp);
  const int64_t layer_kv = KvBytesPerToken(spec, plan.kv_dtype);
  std::map<std::pair<int, int>, RankPlan> cache;  // by (pp_rank, tp_rank)
  for (int r = 0; r < shape.world_size(); ++r) {
    const MeshCoord coord = mesh->Coord(r);
    auto [it, inserted] = cache.try_emplace({coord.pp_rank, coord.tp_rank});
    RankPlan& proto = it->second;
    if (inserted) {
      proto.layers = PipelineStageLayers(c.num_hidden_layers, shape.pp, coord.pp_rank);
      proto.has_embedding = coord.pp_rank == 0;
      proto.has_head = coord.pp_rank == shape.pp - 1;
      proto.experts_per_layer = c.is_moe() ? c.num_experts / shape.ep : 0;
      RankWeights(c, inv, shape, coord, o.load_mtp, &proto);
      for (int l = proto.layers.begin; l < proto.layers.end; ++l) {
        proto.kv_bytes_per_token += layer_kv;
        if (c.IsSlidingLayer(l)) proto.kv_bytes_per_token_sliding += layer_kv;
      }
      if (o.load_mtp && proto.has_head) {
        proto.kv_bytes_per_token += layer_kv * c.num_nextn_predict_layers;
      }
      proto.usable_bytes = usable;
      proto.kv_bytes = usable - proto.weight_bytes;
    }
    RankPlan rank = proto;
    rank.coord = coord;
    plan.ranks.push_back(rank);
  }

  // Memory: every rank must hold its weights.
  const RankPlan* worst = &plan.ranks[0];
  int over = 0;
  for (const RankPlan& r : plan.ranks) {
    if (r.weight_bytes > worst->weight_bytes) worst = &r;
    if (r.kv_bytes < 0) ++over;
  }
  ev.worst_weight_bytes = worst->weight_bytes;
  ev.weights_fit = over == 0;
  if (!ev.weights_fit) {
    ev.violations.push_back(absl::StrFormat(
        "weights exceed device memory: rank %d needs %s of weights but a %s device leaves %s "
        "after the %.0f%% reserve (%s short; %d of %d ranks do not fit)",
        worst->coord.rank, FormatBytes(worst->weight_bytes), FormatBytes(o.device_memory_bytes),
        FormatBytes(usable), o.overhead_fraction * 100, FormatBytes(-worst->kv_bytes), over,
        shape.world_size()));
    return ev;
  }

  // KV capacity of one DP replica (dp_rank 0; every replica is identical).
  int64_t context = std::numeric_limits<int64_t>::max();
  int64_t tokens = std::numeric_limits<int64_t>::max();
  for (const RankPlan& r : plan.ranks) {
    if (r.coord.dp_rank != 0) continue;
    context = std::min(context, MaxSequenceTokens(c, r, o.block_size));
    tokens = std::min(tokens, r.kv_bytes / r.kv_bytes_per_token);
  }
  plan.max_kv_tokens = tokens;
  plan.max_context = std::min<int64_t>(context, c.max_position_embeddings);
  const int64_t wanted = o.max_model_len > 0 ? o.max_model_len : c.max_position_embeddings;
  ev.holds_sequence = context >= wanted && context > 0;
  if (o.max_model_len > 0) {
    plan.max_model_len = o.max_model_len;
    if (o.max_model_len > c.max_position_embeddings) {
      ev.violations.push_back(absl::StrCat(
          "--max-model-len ", o.max_model_len, " exceeds the model's max_position_embeddings (",
          c.max_position_embeddings, ") in ", c.source));
    }
    if (context < o.max_model_len) {
      ev.violations.push_back(absl::StrCat(
          "--max-model-len ", o.max_model_len, " does not fit in the KV cache: one sequence needs ",
          FormatBytes(SequenceKvBytes(c, *worst, o.max_model_len, o.block_size)),
          " on rank ", worst->coord.rank, ", which has ", FormatBytes(worst->kv_bytes),
          " free; lower --max-model-len to ", plan.max_context,
          " or less, use --kv-dtype fp8, or use more devices"));
    }
  } else {
    plan.max_model_len = plan.max_context;
    plan.max_model_len_lowered = plan.max_model_len < c.max_position_embeddings;
    if (plan.max_model_len < o.block_size) {
      ev.violations.push_back(absl::StrCat(
          "no room for the KV cache: the tightest rank has ", FormatBytes(worst->kv_bytes),
          " left after its weights, less than one block of ", o.block_size,
          " tokens; use more devices or a larger --tp"));
    }
  }
  if (plan.max_model_len > 0) {
    int64_t per_replica = std::numeric_limits<int64_t>::max();
    for (const RankPlan& r : plan.ranks) {
      if (r.coord.dp_rank != 0) continue;
      const int64_t need = SequenceKvBytes(c, r, plan.max_model_len, o.block_size);
      per_replica = std::min(per_replica, need > 0 ? r.kv_bytes / need : 0);
    }
    plan.max_sequences_per_replica = per_replica;
    plan.max_sequences = per_replica * shape.dp;
  }
  return ev;
}

// Candidate layouts for `devices`, in policy order: pp ascending (none first), tp ascending,
// dp filling the rest, ep = tp * dp before ep = 1 for MoE. Given values are fixed.
std::vector<MeshShape> Candidates(const ModelConfig& c, const PlanOptions& o, int devices) {
  std::vector<MeshShape> out;
  for (int pp : Divisors(devices)) {
    if (o.pp && *o.pp != pp) continue;
    for (int tp : Divisors(devices / pp)) {
      if (o.tp && *o.tp != tp) continue;
      const int dp = devices / pp / tp;
      if (o.dp && *o.dp != dp) continue;
      std::vector<int> eps;
      if (o.ep) {
        eps = {*o.ep};
      } else if (c.is_moe()) {
        eps = {tp * dp};
        if (tp * dp != 1) eps.push_back(1);
      } else {
        eps = {1};
      }
      for (int ep : eps) out.push_back(MeshShape{tp, dp, pp, ep});
    }
  }
  return out;
}

// Policy order: pipeline sizes ascending; within one pp, the first candidate (tp ascending) whose
// weights fit and which holds one full-length sequence, else the one of them holding the longest
// sequence. A larger pp is only tried when no layout of the smaller one fits at all.
std::optional<Evaluation> Search(const ModelConfig& c, const Inventory& inv, const PlanOptions& o,
                                 int devices) {
  std::optional<Evaluation> fallback;
  int fallback_pp = 0;
  for (const MeshShape& shape : Candidates(c, o, devices)) {
    if (fallback && shape.pp != fallback_pp) break;
    PlanOptions at = o;
    at.devices = devices;
    Evaluation ev = Evaluate(c, inv, at, shape);
    if (!ev.weights_fit || !ev.violations.empty()) continue;
    if (ev.holds_sequence) return ev;
    if (!fallback || ev.plan.max_context > fallback->plan.max_context) {
      fallback = std::move(ev);
      fallback_pp = shape.pp;
    }
  }
  return fallback;
}

// What to change when the weights do not fit: another layout of these devices, else more
// devices, else larger devices.
std::string MemoryAdvice(const ModelConfig& c, const Inventory& inv, const PlanOptions& o,
                         int64_t worst_weight_bytes) {
  PlanOptions free = o;
  free.tp.reset();
  free.dp.reset();
  free.pp.reset();
  free.ep.reset();
  free.max_model_len = 0;
  if (std::optional<Evaluation> ev = Search(c, inv, free, o.devices)) {
    return absl::StrCat("use ", LayoutFlags(ev->plan.shape), " on these ", o.devices,
                        " devices");
  }
  for (int n = o.devices * 2; n <= 4096; n *= 2) {
    free.devices = n;
    if (std::optional<Evaluation> ev = Search(c, inv, free, n)) {
      return absl::StrCat("use ", n, " or more devices (e.g. --devices ", n, " ",
                          LayoutFlags(ev->plan.shape), "), or devices with more than ",
                          FormatBytes(static_cast<int64_t>(static_cast<double>(worst_weight_bytes) /
                                                           (1.0 - o.overhead_fraction))),
                          " of memory");
    }
  }
  return "no layout of up to 4096 such devices holds the weights; use larger devices";
}

absl::Status ViolationsStatus(const ModelConfig& c, const MeshShape& shape, int devices,
                              bool searched, const std::vector<std::string>& violations) {
  const std::string n = devices == 1 ? "1 device" : absl::StrCat(devices, " devices");
  const std::string what =
      searched ? absl::StrCat("no layout of ", n, " works; the closest is ", LayoutFlags(shape))
               : LayoutFlags(shape);
  return absl::InvalidArgumentError(absl::StrCat("cannot plan ", c.source, " on ", n,
                                                 searched ? ": " : " with ", what, ":\n  - ",
                                                 absl::StrJoin(violations, "\n  - ")));
}

}  // namespace

int64_t SequenceKvBytes(const ModelConfig& c, const RankPlan& rank, int64_t tokens,
                        int block_size) {
  const int64_t blocks = CeilDiv(tokens, block_size);
  int64_t sliding_blocks = blocks;
  if (c.sliding_window > 0) {
    sliding_blocks = std::min(blocks, CeilDiv(c.sliding_window, block_size) + 1);
  }
  const int64_t full = rank.kv_bytes_per_token - rank.kv_bytes_per_token_sliding;
  return (full * blocks + rank.kv_bytes_per_token_sliding * sliding_blocks) * block_size;
}

namespace {

// `tensors`: the checkpoint's tensors (routed experts may be folded: they are never split).
std::vector<std::string> CheckLayout(const ModelConfig& c, const MeshShape& s, int devices,
                                     const std::vector<CheckpointTensor>& tensors) {
  std::vector<std::string> v;
  if (s.tp < 1 || s.dp < 1 || s.pp < 1 || s.ep < 1) {
    v.push_back(absl::StrCat("every parallel size must be >= 1 (got ", LayoutFlags(s), ")"));
    return v;
  }
  if (s.world_size() != devices) {
    v.push_back(absl::StrCat("world size tp * dp * pp = ", s.tp, " * ", s.dp, " * ", s.pp, " = ",
                             s.world_size(), " does not match --devices ", devices));
  }
  bool heads_ok = true;
  if (c.num_attention_heads % s.tp != 0) {
    heads_ok = false;
    v.push_back(absl::StrCat("num_attention_heads (", c.num_attention_heads,
                             ") is not divisible by --tp ", s.tp));
  }
  if (!c.is_mla()) {
    const int kv = c.num_key_value_heads;
    if ((kv >= s.tp && kv % s.tp != 0) || (kv < s.tp && s.tp % kv != 0)) {
      heads_ok = false;
      v.push_back(absl::StrCat("num_key_value_heads (", kv, ") and --tp ", s.tp,
                               " must divide one another (KV heads are split over TP, or "
                               "replicated when fewer than tp)"));
    }
  }
  if (c.is_moe()) {
    if (s.ep != 1 && s.ep != s.tp * s.dp) {
      v.push_back(absl::StrCat("--ep ", s.ep, " must be 1 (experts replicated) or tp * dp = ",
                               s.tp * s.dp));
    }
    if (c.num_experts % s.ep != 0) {
      v.push_back(absl::StrCat("the ", c.num_experts, " routed experts do not divide over --ep ",
                               s.ep, " (num_experts % ep must be 0)"));
    }
  } else if (s.ep != 1) {
    v.push_back(absl::StrCat("--ep ", s.ep, " given but ", c.architecture,
                             " has no routed experts (use --ep 1)"));
  }
  if (c.num_hidden_layers < s.pp) {
    v.push_back(absl::StrCat("num_hidden_layers (", c.num_hidden_layers, ") < --pp ", s.pp,
                             ": every pipeline stage needs at least one layer"));
  }
  if (heads_ok) {
    for (std::string& m : ValidateTensorSplits(c, tensors, s)) v.push_back(std::move(m));
  }
  return v;
}

}  // namespace

std::vector<std::string> LayoutViolations(const ModelConfig& c, const MeshShape& s,
                                          int devices) {
  return CheckLayout(c, s, devices, BuildInventory(c).folded);
}

absl::StatusOr<ShardingPlan> PlanSharding(const ModelConfig& c, const PlanOptions& o) {
  std::vector<std::string> bad;
  if (o.devices < 1) bad.push_back(absl::StrCat("--devices must be >= 1 (got ", o.devices, ")"));
  if (o.device_memory_bytes <= 0) {
    bad.push_back("--device-memory must be positive (e.g. 80GiB)");
  }
  if (!(o.overhead_fraction >= 0 && o.overhead_fraction < 1)) {
    bad.push_back(absl::StrCat("--overhead-fraction must be in [0, 1) (got ", o.overhead_fraction,
                               ")"));
  }
  if (o.block_size < 1) bad.push_back("--block-size must be >= 1");
  if (o.max_model_len < 0) bad.push_back("--max-model-len must be >= 0");
  if (o.kv_dtype && !IsFloatingPoint(*o.kv_dtype)) {
    bad.push_back(absl::StrCat("--kv-dtype ", DTypeName(*o.kv_dtype), " is not a float type"));
  }
  for (const auto& [name, value] : {std::pair<const char*, const std::optional<int>&>{"tp", o.tp},
                                    {"dp", o.dp},
                                    {"pp", o.pp},
                                    {"ep", o.ep}}) {
    if (value && *value < 1) bad.push_back(absl::StrCat("--", name, " must be >= 1"));
  }
  if (!bad.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tessera plan: invalid options:\n  - ", absl::StrJoin(bad, "\n  - ")));
  }
  RETURN_IF_ERROR(ValidateModelConfig(c));
  const Inventory inv = BuildInventory(c);
  const bool all_given = o.tp && o.dp && o.pp && (o.ep || !c.is_moe());

  MeshShape shape;
  if (all_given) {
    shape = MeshShape{*o.tp, *o.dp, *o.pp, o.ep.value_or(1)};
  } else {
    if (std::optional<Evaluation> ev = Search(c, inv, o, o.devices)) {
      ev->plan.auto_layout = true;
      return std::move(ev->plan);
    }
    // Nothing fits: report the candidate that comes closest (valid layout, least weight per
    // rank), else the first candidate's layout violations.
    std::vector<MeshShape> candidates = Candidates(c, o, o.devices);
    if (candidates.empty()) {
      const int tp = o.tp.value_or(1), pp = o.pp.value_or(1);
      const int dp = o.dp.value_or(std::max(1, o.devices / std::max(1, tp * pp)));
      shape = MeshShape{tp, dp, pp, o.ep.value_or(c.is_moe() ? tp * dp : 1)};
    } else {
      shape = candidates.front();
      int64_t best = std::numeric_limits<int64_t>::max();
      for (const MeshShape& s : candidates) {
        Evaluation ev = Evaluate(c, inv, o, s);
        if (ev.worst_weight_bytes == 0) continue;  // layout violations
        if (ev.worst_weight_bytes < best) {
          best = ev.worst_weight_bytes;
          shape = s;
        }
      }
    }
  }
  Evaluation ev = Evaluate(c, inv, o, shape);
  if (!ev.weights_fit && ev.worst_weight_bytes > 0) {
    ev.violations.back() += "; " + MemoryAdvice(c, inv, o, ev.worst_weight_bytes);
  }
  if (!ev.violations.empty()) {
    return ViolationsStatus(c, shape, o.devices, !all_given, ev.violations);
  }
  ev.plan.auto_layout = !all_given;
  return std::move(ev.plan);
}

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text) {
  std::string s(absl::StripAsciiWhitespace(text));
  size_t split = s.size();
  while (split > 0 && std::isalpha(static_cast<unsigned char>(s[split - 1]))) --split;
  std::string number(absl::StripAsciiWhitespace(s.substr(0, split)));
  std::string unit = absl::AsciiStrToLower(s.substr(split));
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value) || !(value >= 0) ||
      !std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot parse size '", text, "': expected a number with an optional unit, e.g. 80GiB, "
        "80GB or 80e9"));
  }
  static const std::map<std::string, double> kUnits = {
      {"", 1},
      {"b", 1},
      {"kb", 1e3},
      {"mb", 1e6},
      {"gb", 1e9},
      {"tb", 1e12},
      {"kib", 1024.0},
      {"mib", 1024.0 * 1024},
      {"gib", kGiB},
      {"tib", kGiB * 1024}};
  auto it = kUnits.find(unit);
  if (it == kUnits.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot parse size '", text, "': unknown unit '", s.substr(split),
        "' (use B, KB/MB/GB/TB for powers of 1000 or KiB/MiB/GiB/TiB for powers of 1024)"));
  }
  const double bytes = value * it->second;
  if (bytes > 9.0e18) {
    return absl::InvalidArgumentError(absl::StrCat("size '", text, "' is too large"));
  }
  return static_cast<int64_t>(std::llround(bytes));
}

std::string FormatBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  const double a = std::fabs(b);
  if (a < 1024) return absl::StrCat(bytes, " B");
  if (a < 1024.0 * 1024) return absl::StrFormat("%.2f KiB", b / 1024);
  if (a < kGiB) return absl::StrFormat("%.2f MiB", b / (1024.0 * 1024));
  if (a < kGiB * 1024) return absl::StrFormat("%.2f GiB", b / kGiB);
  return absl::StrFormat("%.2f TiB", b / (kGiB * 1024));
}

}  // namespace tessera
