#include "coordinator/text/parse_output_command.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "coordinator/text/output_parser.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot open '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int RunParseOutput(int argc, char** argv) {
  FlagParser parser("parse-output",
                    "split model output text into content, reasoning and tool calls");
  std::string format_name, model_type, template_file, text_file, tools_file;
  bool no_reasoning = false, no_tools = false, starts_in_reasoning = false, json = false;
  int64_t chunk = 0, seed = 0;
  parser.AddString("format", &format_name,
                   "output format (qwen3, deepseek_v3, deepseek_v31, "
                   "kimi_k2, glm45, gpt_oss, mistral, plain)");
  parser.AddString("model-type", &model_type, "config.json model_type (instead of --format)");
  parser.AddString("template-file", &template_file, "chat template (instead of --format)");
  parser.AddString("text-file", &text_file, "the model output text (UTF-8)");
  parser.AddString("tools-file", &tools_file, "the request's tools array (JSON)");
  parser.AddBool("no-reasoning", &no_reasoning, "do not split reasoning off");
  parser.AddBool("no-tools", &no_tools, "do not extract tool calls");
  parser.AddBool("starts-in-reasoning", &starts_in_reasoning, "the prompt ended inside <think>");
  parser.AddInt("chunk", &chunk, "feed the text in deltas of this many bytes (0: one piece)");
  parser.AddInt("seed", &seed, "tool call id seed (0: random)");
  parser.AddBool("json", &json, "print one JSON object");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (text_file.empty()) return absl::InvalidArgumentError("--text-file is required");
    OutputFormat format;
    if (!format_name.empty()) {
      ASSIGN_OR_RETURN(format, ParseOutputFormat(format_name));
    } else {
      std::string template_text;
      if (!template_file.empty()) {
        ASSIGN_OR_RETURN(template_text, ReadFile(template_file, "--template-file"));
      }
      if (model_type.empty() && template_text.empty()) {
        return absl::InvalidArgumentError("give --format, or --model-type / --template-file");
      }
      ASSIGN_OR_RETURN(format, OutputFormatFor(model_type, template_text));
    }
    ASSIGN_OR_RETURN(std::string text, ReadFile(text_file, "--text-file"));
    OutputParser::Options options;
    options.parse_reasoning = !no_reasoning;
    options.parse_tools = !no_tools;
    options.starts_in_reasoning = starts_in_reasoning;
    options.id_seed = static_cast<uint64_t>(seed);
    if (!tools_file.empty()) {
      ASSIGN_OR_RETURN(std::string tools_text, ReadFile(tools_file, "--tools-file"));
      options.tools = nlohmann::json::parse(tools_text, nullptr, /*allow_exceptions=*/false);
      if (options.tools.is_discarded() || !options.tools.is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--tools-file '", tools_file, "' is not a JSON array of tools"));
      }
    }
    std::unique_ptr<OutputParser> p = OutputParser::Create(format, std::move(options));
    ParsedDelta result;
    const size_t step = chunk > 0 ? static_cast<size_t>(chunk) : text.size();
    for (size_t i = 0; i < text.size(); i += step) {
      result.Append(p->Push(absl::string_view(text).substr(i, step)));
    }
    result.Append(p->Finish());
    if (json) {
      nlohmann::ordered_json j;
      j["format"] = std::string(OutputFormatName(format));
      j["content"] = result.content;
      j["reasoning_content"] = result.reasoning_content;
      j["tool_calls"] = nlohmann::ordered_json::array();
      for (const ToolCallDelta& c : result.tool_calls) {
        j["tool_calls"].push_back({{"index", c.index},
                                   {"id", c.id},
                                   {"type", "function"},
                                   {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
      }
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("[reasoning]\n%s\n[content]\n%s\n", result.reasoning_content.c_str(),
                  result.content.c_str());
      for (const ToolCallDelta& c : result.tool_calls) {
        std::printf("[tool_call %d] %s %s %s\n", c.index, c.id.c_str(), c.name.c_str(),
                    c.arguments.c_str());
      }
    }
    return absl::OkStatus();
  });
}

}  // namespace tessera
