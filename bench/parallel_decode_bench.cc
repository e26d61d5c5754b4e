// Parallel decode benchmark: decode tokens/s of one sequence for several layouts (tp 1, tp 2,
// ep 2, dp 2 / ep 2 by default), each rank one process with one kernel thread, and the share of
// the decode step rank 0 spends inside communicator calls (parallel/comm_stats.h), with the
// communication per decoder layer split by op (the MoE dispatch / combine under dp: all-gather of
// the split counts + all-to-all-v of tokens, expert ids and outputs).
//
// It runs `tessera generate --json` (real processes over Gloo on 127.0.0.1) and reads its
// timings. Single-thread read bandwidth is measured in the same run (printed: the ceiling of a
// one-thread rank), and weights/rk is the largest rank's resident weight bytes.
//   tessera make-model --arch qwen3_moe --preset bench --seed 0 --dtype bf16 --out /tmp/bench-model
//   build/bench/parallel_decode_bench --model /tmp/bench-model
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/machine_limits.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

extern "C" char** environ;

namespace tessera {
namespace {

struct Layout {
  int tp = 1, ep = 1, dp = 1, pp = 1;
  std::string Name() const {
    std::string n;
    if (tp > 1) absl::StrAppend(&n, "tp", tp, " ");
    if (ep > 1) absl::StrAppend(&n, "ep", ep, " ");
    if (dp > 1) absl::StrAppend(&n, "dp", dp, " ");
    if (pp > 1) absl::StrAppend(&n, "pp", pp, " ");
    if (n.empty()) n = "1 rank ";
    n.pop_back();
    return n;
  }
};

absl::StatusOr<nlohmann::json> RunGenerate(const std::string& tessera, const std::string& model,
                                           const Layout& l, int prompt_len, int tokens) {
  std::string prompt;
  for (int i = 0; i < prompt_len; ++i) absl::StrAppend(&prompt, i ? "," : "", 1 + (i * 7) % 1000);
  std::vector<std::string> args = {
      tessera, "generate", "--model", model, "--prompt-ids", prompt, "--max-tokens",
      absl::StrCat(tokens), "--temperature", "0", "--threads", "1", "--json",
      "--tp", absl::StrCat(l.tp), "--ep", absl::StrCat(l.ep), "--dp", absl::StrCat(l.dp),
      "--pp", absl::StrCat(l.pp), "--comm-timeout", "120"};
  const std::string out = (std::filesystem::temp_directory_path() /
                           absl::StrCat("parallel_decode_bench_", getpid(), ".json"))
                              .string();
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0].c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return absl::InternalError(absl::StrCat("cannot start ", tessera));
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream f(out);
  std::stringstream text;
  text << f.rdbuf();
  std::filesystem::remove(out);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("tessera generate (", l.Name(), ") failed"));
  }
  return nlohmann::json::parse(text.str());
}

int Main(int argc, char** argv) {
  FlagParser parser("parallel_decode_bench", "decode tokens/s and communication share by layout");
  std::string model = "/tmp/bench-model";
  std::string tessera =
      (std::filesystem::canonical("/proc/self/exe").parent_path().parent_path() / "cli" /
       "tessera")
          .string();
  std::string layouts = "1,1,1,1;2,1,1,1;1,2,1,1;1,2,2,1";
  int prompt_len = 16, tokens = 32, repeats = 2;
  parser.AddString("model", &model, "checkpoint directory (the bench preset)");
  parser.AddString("tessera", &tessera, "the tessera binary");
  parser.AddString("layouts", &layouts, "tp,ep,dp,pp;... to run");
  parser.AddInt("prompt-len", &prompt_len, "prompt tokens");
  parser.AddInt("tokens", &tokens, "tokens to generate per run");
  parser.AddInt("repeats", &repeats, "runs per layout (the fastest decode is kept)");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    std::ifstream cf(model + "/config.json");
    if (!cf) return absl::NotFoundError(absl::StrCat(model, "/config.json not found"));
    const nlohmann::json config = nlohmann::json::parse(cf);
    const int layers = config.value("num_hidden_layers", 1);
    const double bw = bench::MeasureReadBandwidth(1);
    std::printf("model %s: %d layers; single-thread read bandwidth %.2f GB/s\n", model.c_str(),
                layers, bw / 1e9);
    std::printf("%-12s %9s %8s %8s %11s %11s %11s %11s %11s\n", "layout", "tok/s", "vs 1",
                "comm %", "comm/layer", "all_reduce", "a2a_v+ag", "ag_v/bcast", "weights/rk");
    double base = 0;
    for (absl::string_view spec : absl::StrSplit(layouts, ';')) {
      std::vector<std::string> f = absl::StrSplit(spec, ',');
      if (f.size() != 4) return absl::InvalidArgumentError("--layouts: tp,ep,dp,pp;...");
      Layout l{std::stoi(f[0]), std::stoi(f[1]), std::stoi(f[2]), std::stoi(f[3])};
      nlohmann::json best;
      for (int r = 0; r < repeats; ++r) {
        ASSIGN_OR_RETURN(nlohmann::json j, RunGenerate(tessera, model, l, prompt_len, tokens));
        if (best.is_null() || j["timings"]["decode_tokens_per_s"].get<double>() >
                                  best["timings"]["decode_tokens_per_s"].get<double>()) {
          best = j;
        }
      }
      const nlohmann::json& t = best["timings"];
      const double tps = t["decode_tokens_per_s"].get<double>();
      if (base == 0) base = tps;
      const double steps = std::max<double>(1, t["decode_steps"].get<double>());
      // Rank 0's layers: all of them without pp, its stage's with pp.
      const double rank_layers = static_cast<double>(layers) / l.pp;
      auto op_s = [&](const char* op) {
        const nlohmann::json& c = best["decode_comm"];
        return c.contains(op) ? c[op]["seconds"].get<double>() : 0.0;
      };
      const double per_layer = 1e6 / (steps * rank_layers);
      int64_t max_weights = 0;
      for (const auto& b : best["rank_weight_bytes"]) {
        max_weights = std::max<int64_t>(max_weights, b.get<int64_t>());
      }
      std::printf("%-12s %9.2f %7.2fx %7.1f%% %9.0fus %9.0fus %9.0fus %9.0fus %8.2f GB\n",
                  l.Name().c_str(), tps, tps / base, 100 * t["decode_comm_share"].get<double>(),
                  t["decode_comm_s"].get<double>() * per_layer, op_s("all_reduce") * per_layer,
                  (op_s("all_to_all_v") + op_s("all_gather")) * per_layer,
                  (op_s("all_gather_v") + op_s("broadcast")) * per_layer, max_weights / 1e9);
      std::fflush(stdout);
    }
    return absl::OkStatus();
  });
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
