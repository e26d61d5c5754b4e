// Tool-call extraction from model output text, per model family, streaming.
//
// A ToolSyntax describes one family's markers and how to read one call block; ToolCallParser
// runs it over the content stream (after reasoning was split off, see reasoning_parser.h):
//
//   hermes (Qwen2.5/QwQ/Qwen3): <tool_call>\n{"name": N, "arguments": {..}}\n</tool_call>
//   DeepSeek-V3/R1:  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>N
//                    \n```json\n{..}\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
//   DeepSeek-V3.1:   same section markers,
//                    <｜tool▁call▁begin｜>N<｜tool▁sep｜>{..}<｜tool▁call▁end｜>
//                    (both DeepSeek forms are accepted by both syntaxes)
//   Kimi K2:         <|tool_calls_section_begin|><|tool_call_begin|>functions.N:I
//                    <|tool_call_argument_begin|>{..}<|tool_call_end|>...<|tool_calls_section_end|>
//                    (the call id is the text "functions.N:I")
//   GLM-4.5/4.6:     <tool_call>N\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>...</tool_call>
//   Mistral:         [TOOL_CALLS][{"name": N, "arguments": {..}}, ...]   (v3 tokenizers) or
//                    [TOOL_CALLS]N[CALL_ID]id[ARGS]{..} / [TOOL_CALLS]N[ARGS]{..} (v11+, Small 3.2)
//
// Contract:
// - Calls are emitted whole, when their closing marker (or, for Mistral, the end of the JSON
//   value) has arrived: a call whose text is not valid is returned as content, byte for byte,
//   never dropped and never half-emitted. Content text is streamed; only a suffix that could
//   still become an opening marker is held back.
// - `arguments` is always a JSON object serialized compactly (no spaces), keys in the model's
//   order, non-ASCII kept as UTF-8 (nlohmann::ordered_json::dump). Arguments the model wrote as a
//   JSON string holding an object are unwrapped; missing / null arguments become "{}"; anything
//   that is not an object makes the call invalid (returned as content).
// - GLM values are parsed as JSON when they are valid JSON (numbers, booleans, objects, arrays,
//   quoted strings) and kept as raw strings otherwise, except that a parameter declared
//   "type": "string" in the request's tool schema is always kept as the raw string (vLLM glm45).
// - Newlines that only separate content from a call block are dropped (the templates render
//   "content\n<tool_call>..."); content after the last block loses its leading newlines.
// - At Finish an unterminated block is parsed as if it were terminated (a model stopped by EOS
//   right before the closing marker); if that fails it is returned as content.
//
// Thread safety: ToolSyntax is immutable; one ToolCallParser per request/choice, not thread safe.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/text/marker_scan.h"
#include "nlohmann/json.hpp"

namespace tessera {

// One call as read from the text; the OutputParser assigns index and (missing) ids.
struct ParsedToolCall {
  std::string id;  // from the text (Kimi K2, Mistral [CALL_ID]); empty otherwise
  std::string name;
  std::string arguments;  // compact JSON object text
};

struct ToolSyntax {
  std::string section_begin, section_end;  // optional (DeepSeek, Kimi)
  std::string call_begin;
  std::string call_end;  // empty: the block ends where find_end says (Mistral)
  // Only when call_end is empty: the length of the call body (text after call_begin) once it is
  // complete, std::nullopt while more text is needed.
  std::function<std::optional<size_t>(absl::string_view body)> find_end;
  // Reads the text between call_begin and call_end (one or, for Mistral arrays, several calls).
  std::function<absl::StatusOr<std::vector<ParsedToolCall>>(absl::string_view body)> parse;
};

ToolSyntax HermesToolSyntax();
ToolSyntax DeepSeekToolSyntax();
ToolSyntax KimiK2ToolSyntax();
// `tools`: the request's OpenAI "tools" array (may be null); used for string-typed parameters.
ToolSyntax Glm45ToolSyntax(const nlohmann::json& tools);
ToolSyntax MistralToolSyntax();

// Validates and compacts model-written arguments (see the contract above). Errors say why.
absl::StatusOr<std::string> NormalizeToolArguments(absl::string_view text);

// Length of the JSON object/array at the start of `text` (after leading whitespace, included in
// the length) once its closing bracket has arrived; std::nullopt while incomplete. Strings and
// escapes are honoured; a text not starting with '{' or '[' returns 0.
std::optional<size_t> ScanJsonValueEnd(absl::string_view text);

// Streams content and extracts calls with one ToolSyntax.
class ToolCallParser {
 public:
  explicit ToolCallParser(ToolSyntax syntax);

  void Push(absl::string_view text, std::string* content, std::vector<ParsedToolCall>* calls);
  void Finish(std::string* content, std::vector<ParsedToolCall>* calls);

 private:
  enum class State { kContent, kSection, kCall };
  void Process(bool final, std::string* content, std::vector<ParsedToolCall>* calls);
  void ProcessBuffer(bool final, std::string* content, std::vector<ParsedToolCall>* calls);
  // Parses one block; on failure the raw text goes to content.
  void EmitCall(absl::string_view body, absl::string_view raw, std::string* content,
                std::vector<ParsedToolCall>* calls);

  ToolSyntax syntax_;
  State state_ = State::kContent;
  bool in_section_ = false;
  std::string buffer_;
  // Text dropped at the start of a block (separating newlines, the section opener): re-emitted as
  // content when the block turns out invalid.
  std::string dropped_newlines_;
  size_t call_scanned_ = 0;  // bytes of the current call body already searched for call_end
  size_t consumed_ = 0;      // bytes of buffer_ consumed during the current Process
  text_internal::NewlineTrimmer content_trim_;
};

}  // namespace tessera
