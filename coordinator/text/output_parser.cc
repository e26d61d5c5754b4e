#include "coordinator/text/output_parser.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {
namespace {

struct FormatName {
  absl::string_view name;
  OutputFormat format;
};

// Canonical names first (OutputFormatName returns the first match), then aliases.
constexpr FormatName kFormatNames[] = {
    {"qwen3", OutputFormat::kQwen3},
    {"deepseek_v3", OutputFormat::kDeepSeekV3},
    {"deepseek_v31", OutputFormat::kDeepSeekV31},
    {"kimi_k2", OutputFormat::kKimiK2},
    {"glm45", OutputFormat::kGlm45},
    {"gpt_oss", OutputFormat::kGptOss},
    {"mistral", OutputFormat::kMistral},
    {"plain", OutputFormat::kPlain},
    {"hermes", OutputFormat::kQwen3},
    {"qwen", OutputFormat::kQwen3},
    {"qwen2", OutputFormat::kQwen3},
    {"qwq", OutputFormat::kQwen3},
    {"deepseek_r1", OutputFormat::kDeepSeekV3},
    {"deepseek_v3.1", OutputFormat::kDeepSeekV31},
    {"kimi", OutputFormat::kKimiK2},
    {"glm", OutputFormat::kGlm45},
    {"glm4_moe", OutputFormat::kGlm45},
    {"glm46", OutputFormat::kGlm45},
    {"openai", OutputFormat::kGptOss},
    {"harmony", OutputFormat::kGptOss},
    {"none", OutputFormat::kPlain},
};

bool UsesThinkTags(OutputFormat f) {
  return f == OutputFormat::kQwen3 || f == OutputFormat::kDeepSeekV3 ||
         f == OutputFormat::kDeepSeekV31 || f == OutputFormat::kKimiK2 || f == OutputFormat::kGlm45;
}

}  // namespace

absl::string_view OutputFormatName(OutputFormat format) {
  for (const FormatName& n : kFormatNames) {
    if (n.format == format) return n.name;
  }
  return "plain";
}

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  std::vector<absl::string_view> names;
  for (const FormatName& n : kFormatNames) {
    if (n.name == lower) return n.format;
    names.push_back(n.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format '", name, "'; use one of: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<OutputFormat> OutputFormatFor(absl::string_view model_type,
                                             absl::string_view chat_template) {
  // The template renders assistant tool calls in the model's own syntax: the best evidence.
  const absl::string_view t = chat_template;
  if (absl::StrContains(t, "<|channel|>")) return OutputFormat::kGptOss;
  if (absl::StrContains(t, "<|tool_calls_section_begin|>")) return OutputFormat::kKimiK2;
  if (absl::StrContains(t, "<arg_key>")) return OutputFormat::kGlm45;
  if (absl::StrContains(t, "[TOOL_CALLS]")) return OutputFormat::kMistral;
  if (absl::StrContains(t, "<｜tool▁call▁begin｜>")) {
    // V3 / R1 write "function<sep>NAME\n```json"; V3.1 writes "NAME<sep>ARGS".
    if (absl::StrContains(t, "```json")) return OutputFormat::kDeepSeekV3;
    return OutputFormat::kDeepSeekV31;
  }
  if (absl::StrContains(t, "<tool_call>")) return OutputFormat::kQwen3;
  const std::string mt = absl::AsciiStrToLower(model_type);
  if (absl::StartsWith(mt, "qwen")) return OutputFormat::kQwen3;
  if (mt == "deepseek_v3" || mt == "deepseek_v2") return OutputFormat::kDeepSeekV3;
  if (mt == "deepseek_v32") return OutputFormat::kDeepSeekV31;
  if (mt == "kimi_k2") return OutputFormat::kKimiK2;
  if (mt == "glm4_moe" || mt == "glm4") return OutputFormat::kGlm45;
  if (mt == "gpt_oss") return OutputFormat::kGptOss;
  if (mt == "mistral" || mt == "mixtral" || mt == "mistral3") return OutputFormat::kMistral;
  return absl::NotFoundError(
      absl::StrCat("no output format known for model_type '", model_type,
                   "' and its chat template shows no known tool-call syntax; name one explicitly (",
                   "e.g. --tool-call-parser) or use 'plain'"));
}

bool PromptEndsInReasoning(OutputFormat format, absl::string_view prompt) {
  if (!UsesThinkTags(format)) return false;
  while (!prompt.empty() && (prompt.back() == '\n' || prompt.back() == ' ')) {
    prompt.remove_suffix(1);
  }
  return absl::EndsWith(prompt, "<think>");
}

void ParsedDelta::Append(ParsedDelta other) {
  content.append(other.content);
  reasoning_content.append(other.reasoning_content);
  for (ToolCallDelta& c : other.tool_calls) tool_calls.push_back(std::move(c));
}

OutputParser::OutputParser(OutputFormat format, Options options)
    : format_(format), options_(std::move(options)) {
  if (options_.id_seed != 0) {
    rng_.seed(options_.id_seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
  if (format_ == OutputFormat::kGptOss) {
    harmony_ = std::make_unique<HarmonyParser>(options_.parse_reasoning, options_.parse_tools);
    return;
  }
  if (UsesThinkTags(format_) && options_.parse_reasoning) {
    reasoning_ = std::make_unique<ReasoningParser>(options_.starts_in_reasoning);
  }
  if (options_.parse_tools) {
    switch (format_) {
      case OutputFormat::kQwen3:
        tools_ = std::make_unique<ToolCallParser>(HermesToolSyntax());
        break;
      case OutputFormat::kDeepSeekV3:
      case OutputFormat::kDeepSeekV31:
        tools_ = std::make_unique<ToolCallParser>(DeepSeekToolSyntax());
        break;
      case OutputFormat::kKimiK2:
        tools_ = std::make_unique<ToolCallParser>(KimiK2ToolSyntax());
        break;
      case OutputFormat::kGlm45:
        tools_ = std::make_unique<ToolCallParser>(Glm45ToolSyntax(options_.tools));
        break;
      case OutputFormat::kMistral:
        tools_ = std::make_unique<ToolCallParser>(MistralToolSyntax());
        break;
      case OutputFormat::kGptOss:
      case OutputFormat::kPlain:
        break;
    }
  }
}

std::unique_ptr<OutputParser> OutputParser::Create(OutputFormat format, Options options) {
  return std::unique_ptr<OutputParser>(new OutputParser(format, std::move(options)));
}

ParsedDelta OutputParser::Parse(OutputFormat format, Options options, absl::string_view text) {
  std::unique_ptr<OutputParser> parser = Create(format, std::move(options));
  ParsedDelta out = parser->Push(text);
  out.Append(parser->Finish());
  return out;
}

std::string OutputParser::NewId() {
  static constexpr char kAlnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bool mistral = format_ == OutputFormat::kMistral;
  std::string id = mistral ? "" : "call_";
  std::uniform_int_distribution<int> pick(0, 61);
  for (int i = 0; i < (mistral ? 9 : 24); ++i) id.push_back(kAlnum[pick(rng_)]);
  return id;
}

ParsedDelta OutputParser::Push(absl::string_view text) { return Run(text, /*final=*/false); }

ParsedDelta OutputParser::Finish() {
  if (finished_) return ParsedDelta();
  ParsedDelta out = Run("", /*final=*/true);
  finished_ = true;
  return out;
}

ParsedDelta OutputParser::Run(absl::string_view text, bool final) {
  ParsedDelta out;
  if (finished_) return out;
  std::vector<ParsedToolCall> calls;
  if (harmony_ != nullptr) {
    harmony_->Push(text, &out.reasoning_content, &out.content, &calls);
    if (final) harmony_->Finish(&out.reasoning_content, &out.content, &calls);
  } else {
    std::string content;
    absl::string_view content_in = text;
    if (reasoning_ != nullptr) {
      reasoning_->Push(text, &out.reasoning_content, &content);
      if (final) reasoning_->Finish(&out.reasoning_content, &content);
      content_in = content;
    }
    if (tools_ != nullptr) {
      tools_->Push(content_in, &out.content, &calls);
      if (final) tools_->Finish(&out.content, &calls);
    } else {
      out.content.append(content_in.data(), content_in.size());
    }
  }
  for (ParsedToolCall& c : calls) {
    ToolCallDelta d;
    d.index = next_index_++;
    d.id = c.id.empty() || format_ == OutputFormat::kQwen3 ? NewId() : std::move(c.id);
    d.name = std::move(c.name);
    d.arguments = std::move(c.arguments);
    out.tool_calls.push_back(std::move(d));
  }
  return out;
}

}  // namespace tessera
