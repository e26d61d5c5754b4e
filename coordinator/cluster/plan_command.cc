#include "coordinator/cluster/plan_command.h"

#include <cstdio>
#include <map>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

std::string Billions(int64_t n) { return absl::StrFormat("%.2fB", static_cast<double>(n) / 1e9); }

// "0-3,8-11" for a sorted list of ranks.
std::string RankRanges(const std::vector<int>& ranks) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    parts.push_back(i == j ? absl::StrCat(ranks[i]) : absl::StrCat(ranks[i], "-", ranks[j]));
    i = j + 1;
  }
  return absl::StrJoin(parts, ",");
}

}  // namespace

nlohmann::json PlanToJson(const ShardingPlan& p) {
  nlohmann::json j;
  j["model"] = p.model;
  j["architecture"] = p.architecture;
  j["weight_format"] = p.weight_format;
  j["num_parameters"] = p.num_parameters;
  j["mtp_parameters"] = p.mtp_parameters;
  j["load_mtp"] = p.load_mtp;
  j["checkpoint_bytes"] = p.checkpoint_bytes;
  j["model_weight_bytes"] = p.model_weight_bytes;
  j["layout"] = {{"tp", p.shape.tp},
                 {"dp", p.shape.dp},
                 {"pp", p.shape.pp},
                 {"ep", p.shape.ep},
                 {"world_size", p.shape.world_size()},
                 {"auto", p.auto_layout}};
  j["device_memory_bytes"] = p.device_memory_bytes;
  j["overhead_fraction"] = p.overhead_fraction;
  j["usable_bytes"] = p.ranks.empty() ? 0 : p.ranks[0].usable_bytes;
  j["kv_dtype"] = std::string(DTypeName(p.kv_dtype));
  j["block_size"] = p.block_size;
  j["max_position_embeddings"] = p.max_position_embeddings;
  j["max_model_len"] = p.max_model_len;
  j["max_model_len_lowered"] = p.max_model_len_lowered;
  j["max_kv_tokens"] = p.max_kv_tokens;
  j["max_context"] = p.max_context;
  j["max_sequences_per_replica"] = p.max_sequences_per_replica;
  j["max_sequences"] = p.max_sequences;
  nlohmann::json ranks = nlohmann::json::array();
  for (const RankPlan& r : p.ranks) {
    ranks.push_back({{"rank", r.coord.rank},
                     {"tp_rank", r.coord.tp_rank},
                     {"dp_rank", r.coord.dp_rank},
                     {"pp_rank", r.coord.pp_rank},
                     {"ep_rank", r.coord.ep_rank},
                     {"layers", {r.layers.begin, r.layers.end}},
                     {"has_embedding", r.has_embedding},
                     {"has_head", r.has_head},
                     {"experts_per_layer", r.experts_per_layer},
                     {"num_tensors", r.num_tensors},
                     {"weight_bytes", r.weight_bytes},
                     {"kv_bytes_per_token", r.kv_bytes_per_token},
                     {"kv_bytes_per_token_sliding", r.kv_bytes_per_token_sliding},
                     {"kv_bytes", r.kv_bytes},
                     {"max_kv_tokens", r.kv_bytes_per_token > 0
                                           ? r.kv_bytes / r.kv_bytes_per_token
                                           : 0}});
  }
  j["ranks"] = std::move(ranks);
  return j;
}

std::string PlanToText(const ShardingPlan& p) {
  std::string out;
  const MeshShape& s = p.shape;
  absl::StrAppend(&out, "model        ", p.model, " (", p.architecture, ")\n");
  absl::StrAppend(&out, "parameters   ", Billions(p.num_parameters));
  if (p.mtp_parameters > 0) {
    absl::StrAppend(&out, " + ", Billions(p.mtp_parameters), " MTP (",
                    p.load_mtp ? "loaded" : "not loaded", ")");
  }
  absl::StrAppend(&out, "; checkpoint ", FormatBytes(p.checkpoint_bytes), "\n");
  absl::StrAppend(&out, "weights      ", p.weight_format, "\n");
  absl::StrAppend(&out, "layout       tp ", s.tp, " x dp ", s.dp, " x pp ", s.pp, " = ",
                  s.world_size(), " ranks, ep ", s.ep,
                  p.auto_layout ? " (chosen by the layout policy)" : "", "\n");
  const int64_t usable = p.ranks.empty() ? 0 : p.ranks[0].usable_bytes;
  absl::StrAppend(&out, "device       ", FormatBytes(p.device_memory_bytes), ", ",
                  absl::StrFormat("%.0f%%", p.overhead_fraction * 100), " reserve -> ",
                  FormatBytes(usable), " usable\n");
  absl::StrAppend(&out, "kv cache     ", DTypeName(p.kv_dtype), ", blocks of ", p.block_size,
                  " tokens; the tightest rank holds ", p.max_kv_tokens, " tokens\n");
  absl::StrAppend(&out, "max context  ", p.max_context,
                  " tokens (one sequence on one replica; max_position_embeddings ",
                  p.max_position_embeddings, ")\n");
  absl::StrAppend(&out, "max batch    ", p.max_sequences, " sequences of ", p.max_model_len,
                  " tokens (", p.max_sequences_per_replica, " per replica x ", s.dp, ")",
                  p.max_model_len_lowered ? "; max_model_len lowered to fit the KV cache" : "",
                  "\n\n");
  // Ranks with identical numbers share a row.
  using Key = std::tuple<int, int, bool, bool, int, int64_t, int64_t, int64_t>;
  std::map<Key, std::vector<int>> groups;
  std::vector<Key> order;
  for (const RankPlan& r : p.ranks) {
    Key key{r.layers.begin, r.layers.end, r.has_embedding, r.has_head, r.experts_per_layer,
            r.weight_bytes, r.kv_bytes_per_token, r.kv_bytes};
    auto [it, inserted] = groups.try_emplace(key);
    if (inserted) order.push_back(key);
    it->second.push_back(r.coord.rank);
  }
  absl::StrAppend(&out, absl::StrFormat("%-12s %-9s %-7s %-8s %12s %12s %12s\n", "ranks",
                                        "layers", "stage", "experts", "weights", "kv/token",
                                        "kv cache"));
  for (const Key& key : order) {
    const auto& [begin, end, embed, head, experts, weights, kv_token, kv] = key;
    std::string stage = absl::StrCat(embed ? "E" : "", head ? "H" : "");
    if (stage.empty()) stage = "-";
    absl::StrAppend(&out, absl::StrFormat("%-12s %-9s %-7s %-8d %12s %12s %12s\n",
                                          RankRanges(groups[key]),
                                          absl::StrCat(begin, "-", end - 1), stage, experts,
                                          FormatBytes(weights), FormatBytes(kv_token),
                                          FormatBytes(kv)));
  }
  absl::StrAppend(&out,
                  "(stage: E = embedding, H = final norm + lm_head; experts: routed experts per "
                  "MoE layer; kv/token: KV bytes per token on the rank)\n");
  return out;
}

int RunPlan(int argc, char** argv) {
  FlagParser parser("plan",
                    "sharding plan and per-device memory of a model from its config.json");
  std::string model, memory, kv_dtype;
  PlanOptions o;
  int tp = 0, dp = 0, pp = 0, ep = 0;
  bool json = false;
  parser.AddString("model", &model, "model directory or config.json");
  parser.AddInt("devices", &o.devices, "number of devices (GPUs)");
  parser.AddString("device-memory", &memory, "memory per device: 80GiB, 80GB, 80e9, ...");
  parser.AddInt("tp", &tp, "tensor-parallel size (0: chosen by the layout policy)");
  parser.AddInt("dp", &dp, "attention data-parallel size (0: chosen)");
  parser.AddInt("pp", &pp, "pipeline-parallel size (0: chosen)");
  parser.AddInt("ep", &ep, "expert-parallel size, 1 or tp * dp (0: tp * dp for MoE)");
  parser.AddString("kv-dtype", &kv_dtype, "KV cache dtype: bf16, f16, fp8, f32 (default: weights')");
  parser.AddInt("max-model-len", &o.max_model_len,
                "context length to plan for (0: max_position_embeddings, lowered to fit)");
  parser.AddDouble("overhead-fraction", &o.overhead_fraction,
                   "fraction of device memory reserved for activations and workspaces");
  parser.AddInt("block-size", &o.block_size, "KV cache block size in tokens");
  parser.AddBool("load-mtp", &o.load_mtp, "also load the MTP (next-token prediction) layers");
  parser.AddBool("json", &json, "print one JSON object");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (model.empty()) return absl::InvalidArgumentError("--model DIR|CONFIG.json is required");
    if (memory.empty()) {
      return absl::InvalidArgumentError("--device-memory is required (e.g. --device-memory 80GiB)");
    }
    ASSIGN_OR_RETURN(o.device_memory_bytes, ParseByteSize(memory));
    // 0 (the default) leaves a size to the layout policy.
    if (parser.WasSet("tp") && tp != 0) o.tp = tp;
    if (parser.WasSet("dp") && dp != 0) o.dp = dp;
    if (parser.WasSet("pp") && pp != 0) o.pp = pp;
    if (parser.WasSet("ep") && ep != 0) o.ep = ep;
    if (!kv_dtype.empty()) {
      absl::StatusOr<DType> d = ParseDType(kv_dtype == "fp8" ? "f8_e4m3" : kv_dtype);
      if (!d.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--kv-dtype '", kv_dtype, "' is not a dtype; use bf16, f16, fp8 or f32"));
      }
      o.kv_dtype = *d;
    }
    ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
    absl::StatusOr<ShardingPlan> plan = PlanSharding(config, o);
    if (!plan.ok()) {
      if (json) {
        const std::string message(plan.status().message());
        std::vector<std::string> violations;
        for (absl::string_view line : absl::StrSplit(message, '\n')) {
          if (absl::ConsumePrefix(&line, "  - ")) violations.emplace_back(line);
        }
        nlohmann::json j = {{"error", message}, {"violations", violations}};
        std::printf("%s\n", j.dump(2).c_str());
      }
      return plan.status();
    }
    if (json) {
      std::printf("%s\n", PlanToJson(*plan).dump(2).c_str());
    } else {
      std::printf("%s", PlanToText(*plan).c_str());
    }
    return absl::OkStatus();
  });
}

}  // namespace tessera
