// `tessera plan`: the sharding plan and per-device memory of a model, from its config.json alone.
//
//   tessera plan --model DIR|CONFIG.json --devices N --device-memory 80GiB
//       [--tp T] [--dp D] [--pp P] [--ep E] [--kv-dtype bf16|fp8|f16|f32] [--max-model-len L]
//       [--overhead-fraction 0.1] [--block-size 16] [--load-mtp] [--json]
//
// Prints the layout (chosen by the policy of coordinator/cluster/planner.h for the sizes not
// given), per-rank weight and KV-cache bytes, the longest single sequence and the concurrent
// sequences of --max-model-len tokens. --json prints one object (docs/planner.md lists its
// fields); on an invalid layout it prints {"error": ..., "violations": [...]} and exits 1, like
// the text form (which lists every violation on stderr).
//
// Thread safety: a command body, run once on the main thread.
#pragma once

#include <string>

#include "coordinator/cluster/planner.h"
#include "nlohmann/json_fwd.hpp"

namespace tessera {

// The --json object of a plan.
nlohmann::json PlanToJson(const ShardingPlan& plan);
// The human-readable report.
std::string PlanToText(const ShardingPlan& plan);

int RunPlan(int argc, char** argv);

}  // namespace tessera
