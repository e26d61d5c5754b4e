// Chat-template rendering speed: renders/s of ChatTemplate::Render for every real template in
// testdata/chat_templates over a typical chat (system prompt, 3 user turns, 2 assistant turns, one
// tool call and its result, two tools), compared with Python jinja2 configured like Hugging Face,
// measured in the same run (the reference the output must match byte for byte). Rates are renders
// per CPU second of each process.
//
//   build/bench/chat_template_bench [--testdata DIR] [--python PYTHON] [--seconds S]
//
// The Python side needs jinja2 (Debian's python3-jinja2; scripts/python_env.sh's venv).
#include <algorithm>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/text/chat_template.h"
#include "nlohmann/json.hpp"

namespace {

using Json = nlohmann::ordered_json;

const char kConversation[] = R"({
  "messages": [
    {"role": "system", "content": "You are a helpful assistant. Answer concisely and cite sources."},
    {"role": "user", "content": "What's the weather in Paris today? Also, what should I wear?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call00001", "type": "function",
      "function": {"name": "get_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}]},
    {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "{\"temp\": 22, \"sky\": \"sunny\"}"},
    {"role": "assistant", "content": "It is sunny and 22°C in Paris. A light jacket is enough."},
    {"role": "user", "content": "Great, and tomorrow? Please answer in French — merci ✓"}
  ],
  "tools": [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather",
      "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web",
      "parameters": {"type": "object", "properties": {"query": {"type": "string"},
        "limit": {"type": "integer"}}, "required": ["query"]}}}
  ],
  "add_generation_prompt": true,
  "bos_token": "<s>",
  "eos_token": "</s>"
})";

const char kPythonScript[] = R"PY(
import json, sys, time
import jinja2, jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from datetime import datetime
def raise_exception(m): raise jinja2.exceptions.TemplateError(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)
ctx = json.loads(sys.stdin.read())
seconds = float(sys.argv[1])
for path in sys.argv[2:]:
    t = env.from_string(open(path, encoding="utf-8").read())
    try:
        t.render(**ctx)
    except Exception:
        print(path, "error"); continue
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        t.render(**ctx); n += 1
    print(path, n / (time.process_time() - t0))
)PY";

// CPU time of this process: the build machines are shared, so wall-clock rates would measure
// the load; both sides are timed in CPU seconds.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::string testdata = TESSERA_BENCH_TESTDATA;
  std::string python = std::string(std::getenv("HOME") ? std::getenv("HOME") : "") +
                       "/.cache/tessera/venv/bin/python3";
  if (!std::filesystem::exists(python)) python = "python3";
  double seconds = 0.5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--testdata") testdata = argv[i + 1];
    if (flag == "--python") python = argv[i + 1];
    if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
  }
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(testdata + "/chat_templates")) {
    if (e.path().extension() == ".jinja") paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  const Json ctx = Json::parse(kConversation);

  // Python jinja2 in the same run.
  const std::string script_path =
      (std::filesystem::temp_directory_path() / "tessera_chat_template_bench.py").string();
  const std::string ctx_path =
      (std::filesystem::temp_directory_path() / "tessera_chat_template_bench.json").string();
  std::ofstream(script_path) << kPythonScript;
  std::ofstream(ctx_path) << ctx.dump();
  std::string cmd = python + " " + script_path + " " + std::to_string(seconds);
  for (const auto& p : paths) cmd += " " + p;
  cmd += " < " + ctx_path;
  std::vector<std::pair<std::string, double>> py_rates;
  if (FILE* pipe = popen(cmd.c_str(), "r")) {
    char line[4096];
    while (std::fgets(line, sizeof(line), pipe)) {
      std::istringstream ls(line);
      std::string path, rate;
      ls >> path >> rate;
      py_rates.emplace_back(path, rate == "error" ? 0.0 : std::atof(rate.c_str()));
    }
    pclose(pipe);
  }

  std::printf("%-48s %10s %12s %12s %8s\n", "template", "prompt_B", "tessera/cpu-s", "jinja2/cpu-s",
              "speedup");
  double log_sum = 0;
  int log_n = 0;
  for (const auto& path : paths) {
    absl::StatusOr<tessera::ChatTemplate> t = tessera::ChatTemplate::Parse(ReadFile(path));
    if (!t.ok()) {
      std::printf("%s: %s\n", path.c_str(), std::string(t.status().message()).c_str());
      return 1;
    }
    absl::StatusOr<std::string> first = t->Render(ctx);
    const std::string name = std::filesystem::path(path).filename().string();
    if (!first.ok()) {
      std::printf("%-48s %s\n", name.c_str(), "(template rejects this conversation)");
      continue;
    }
    int64_t n = 0;
    const double t0 = CpuSeconds();
    double elapsed = 0;
    while (elapsed < seconds) {
      for (int k = 0; k < 16; ++k) {
        absl::StatusOr<std::string> out = t->Render(ctx);
        if (!out.ok()) return 1;
      }
      n += 16;
      elapsed = CpuSeconds() - t0;
    }
    const double rate = static_cast<double>(n) / elapsed;
    double py = 0;
    for (const auto& [p, r] : py_rates) {
      if (p == path) py = r;
    }
    if (py > 0) {
      std::printf("%-48s %10zu %12.0f %12.0f %7.1fx\n", name.c_str(), first->size(), rate, py,
                  rate / py);
      log_sum += std::log(rate / py);
      ++log_n;
    } else {
      std::printf("%-48s %10zu %12.0f %12s\n", name.c_str(), first->size(), rate, "n/a");
    }
  }
  if (log_n > 0) {
    std::printf("geometric-mean speedup over python jinja2: %.1fx (%d templates)\n",
                std::exp(log_sum / log_n), log_n);
  }
  std::filesystem::remove(script_path);
  std::filesystem::remove(ctx_path);
  return 0;
}
