#include "cli/commands.h"

#include <cstdio>

#include "coordinator/api/bench_serve.h"
#include "coordinator/cluster/plan_command.h"
#include "coordinator/serve_command.h"
#include "coordinator/text/chat_template_command.h"
#include "coordinator/text/parse_output_command.h"
#include "coordinator/text/tokenize_command.h"
#include "worker/generate_command.h"
#include "worker/make_model.h"
#include "worker/worker_process.h"

namespace tessera::cli {
namespace {

int RunVersion(int, char**) {
  std::printf("tessera 0.1.0\n");
  return 0;
}

}  // namespace

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"version", "print the version", RunVersion},
      {"bench", "benchmark an OpenAI-compatible server (bench serve)", api::RunBenchCommand},
      {"generate", "one-shot local generation on this machine's CPU", RunGenerate},
      {"serve", "serve a model: gRPC API, cluster, local workers", RunServeCommand},
      {"worker", "join a coordinator (tessera serve) and execute its steps", RunWorkerCommand},
      {"chat-template", "render a conversation with a model's chat template", RunChatTemplate},
      {"jinja-render", "render any Jinja template with JSON variables (tests)", RunJinjaRender},
      {"make-model", "write a deterministic random-weight checkpoint (HF layout)", RunMakeModel},
      {"parse-output", "split model output into content, reasoning and tool calls", RunParseOutput},
      {"plan", "sharding plan and per-device memory of a model from its config.json", RunPlan},
      {"tokenize", "encode text to token ids and pieces (or decode ids)", RunTokenize},
  };
  return commands;
}

}  // namespace tessera::cli
