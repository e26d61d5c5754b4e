// Output parsing for the OpenAI API layer: turns the text a model generates (decoded with
// skip_special_tokens=false, in arbitrary deltas) into `content`, `reasoning_content` and
// `tool_calls`, in the model family's own format (docs/text.md, "Output parsing").
//
//   OutputParser::Options options;
//   options.parse_tools = request_has_tools;
//   options.starts_in_reasoning = PromptEndsInReasoning(format, prompt);
//   auto parser = OutputParser::Create(format, std::move(options));
//   for (delta : decoded_text_deltas) Send(parser->Push(delta));
//   Send(parser->Finish());
//
// Contract:
// - Streaming equals one-shot: for any split of a text, the concatenation of the Push/Finish
//   results equals OutputParser::Parse(text) (content and reasoning strings concatenated, tool
//   calls in order; ids are random per call unless Options::id_seed is set).
// - Only text that could still be the start of a marker is held back; content and reasoning are
//   otherwise emitted as soon as they arrive. A tool call is emitted whole (one ToolCallDelta with
//   id, name and the complete arguments) once its closing marker has arrived: partial arguments
//   are never streamed, so an invalid call can still be returned as content instead (never lost).
// - Finish() flushes: an unterminated reasoning block stays reasoning; an unterminated tool call
//   is parsed as if terminated and, if invalid, returned as content.
// - Reasoning/tool rules per family: reasoning_parser.h, tool_parser.h, harmony_parser.h.
// - Tool call ids: "call_" + 24 random alphanumerics (vLLM style); Kimi K2 uses the id written in
//   the text ("functions.NAME:IDX"); Mistral uses the [CALL_ID] of the text or 9 random
//   alphanumerics (its template rejects any other id shape when the call is sent back).
//
// Thread safety: an OutputParser serves one request/choice and is not thread safe; the free
// functions are stateless.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/text/harmony_parser.h"
#include "coordinator/text/reasoning_parser.h"
#include "coordinator/text/tool_parser.h"
#include "nlohmann/json.hpp"

namespace tessera {

enum class OutputFormat {
  kQwen3,        // hermes <tool_call> JSON; <think> (Qwen2.5, QwQ, Qwen3)
  kDeepSeekV3,   // DeepSeek-V3 / R1 (``` fenced arguments); <think>
  kDeepSeekV31,  // DeepSeek-V3.1 / V3.2 (NAME<sep>args); <think>
  kKimiK2,       // Kimi K2 (-Thinking): section markers, ids from the text; <think>
  kGlm45,        // GLM-4.5 / 4.6: <arg_key>/<arg_value>; <think>
  kGptOss,       // harmony channels
  kMistral,      // [TOOL_CALLS]; no reasoning
  kPlain,        // everything is content
};

// The canonical name ("qwen3", "deepseek_v3", "deepseek_v31", "kimi_k2", "glm45", "gpt_oss",
// "mistral", "plain").
absl::string_view OutputFormatName(OutputFormat format);
// Parses a canonical name or a vLLM parser alias (hermes, deepseek_r1, glm4_moe, openai,
// harmony, ...). The error lists the accepted names.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name);
// Picks the format from the chat template's text when it shows a known tool-call syntax, else
// from config.json's model_type. Error (naming both) when neither is known: callers may fall back
// to kPlain.
absl::StatusOr<OutputFormat> OutputFormatFor(absl::string_view model_type,
                                             absl::string_view chat_template);
// True when the rendered prompt leaves the model inside a reasoning block (it ends with "<think>"
// plus optional whitespace, as QwQ, DeepSeek-R1 and DeepSeek-V3.1 thinking prompts do): use as
// Options::starts_in_reasoning.
bool PromptEndsInReasoning(OutputFormat format, absl::string_view prompt);

struct ToolCallDelta {
  int index = 0;          // position of the call in this choice's tool_calls
  std::string id;         // set (calls are emitted whole)
  std::string name;       // set
  std::string arguments;  // the complete JSON object text
};

struct ParsedDelta {
  std::string content;
  std::string reasoning_content;
  std::vector<ToolCallDelta> tool_calls;

  bool empty() const { return content.empty() && reasoning_content.empty() && tool_calls.empty(); }
  void Append(ParsedDelta other);
};

class OutputParser {
 public:
  struct Options {
    bool parse_reasoning = true;  // false: reasoning markers stay in the content
    bool parse_tools = false;     // true only when the request has tools
    bool starts_in_reasoning = false;
    // The request's OpenAI "tools" array (GLM-4.5 keeps string-typed parameters as strings).
    nlohmann::json tools;
    // Non-zero: deterministic tool call ids (tests); zero: seeded from std::random_device.
    uint64_t id_seed = 0;
  };

  static std::unique_ptr<OutputParser> Create(OutputFormat format, Options options);
  // Non-streaming convenience: Push(text) followed by Finish(), merged.
  static ParsedDelta Parse(OutputFormat format, Options options, absl::string_view text);

  ParsedDelta Push(absl::string_view text);
  ParsedDelta Finish();

  OutputFormat format() const { return format_; }

 private:
  OutputParser(OutputFormat format, Options options);
  ParsedDelta Run(absl::string_view text, bool final);
  std::string NewId();

  OutputFormat format_;
  Options options_;
  std::unique_ptr<ReasoningParser> reasoning_;
  std::unique_ptr<ToolCallParser> tools_;
  std::unique_ptr<HarmonyParser> harmony_;
  std::mt19937_64 rng_;
  int next_index_ = 0;
  bool finished_ = false;
};

}  // namespace tessera
