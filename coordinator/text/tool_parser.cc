#include "coordinator/text/tool_parser.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

using text_internal::FindFirstMarker;
using text_internal::PartialMarkerSuffix;
using text_internal::TrimWhitespace;
using ordered_json = nlohmann::ordered_json;

ordered_json ParseJson(absl::string_view text) {
  return ordered_json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

std::string DumpCompact(const ordered_json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::string> ArgumentsFromJson(const ordered_json& args) {
  if (args.is_null()) return std::string("{}");
  if (args.is_object()) return DumpCompact(args);
  if (args.is_string()) {
    const std::string& inner = args.get_ref<const std::string&>();
    if (TrimWhitespace(inner).empty()) return std::string("{}");
    ordered_json parsed = ParseJson(inner);
    if (parsed.is_object()) return DumpCompact(parsed);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tool call arguments must be a JSON object, got ", args.type_name()));
}

// {"name": N, "arguments": {..}} (hermes, Mistral arrays). "parameters" is accepted for
// "arguments" (Llama-style models fine-tuned on hermes data write it).
absl::StatusOr<ParsedToolCall> CallFromObject(const ordered_json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("tool call is not a JSON object");
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return absl::InvalidArgumentError("tool call has no \"name\" string");
  }
  ParsedToolCall call;
  call.name = name->get<std::string>();
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  if (args == j.end()) {
    call.arguments = "{}";
  } else {
    absl::StatusOr<std::string> a = ArgumentsFromJson(*args);
    if (!a.ok()) return a.status();
    call.arguments = *std::move(a);
  }
  if (auto id = j.find("id"); id != j.end() && id->is_string()) call.id = id->get<std::string>();
  return call;
}

absl::StatusOr<std::vector<ParsedToolCall>> ParseHermes(absl::string_view body) {
  ordered_json j = ParseJson(TrimWhitespace(body));
  if (j.is_discarded()) return absl::InvalidArgumentError("tool call body is not valid JSON");
  absl::StatusOr<ParsedToolCall> call = CallFromObject(j);
  if (!call.ok()) return call.status();
  return std::vector<ParsedToolCall>{*std::move(call)};
}

constexpr absl::string_view kDeepSeekSep = "<｜tool▁sep｜>";

absl::StatusOr<std::vector<ParsedToolCall>> ParseDeepSeek(absl::string_view body) {
  const size_t sep = body.find(kDeepSeekSep);
  if (sep == absl::string_view::npos) {
    return absl::InvalidArgumentError("DeepSeek tool call without <｜tool▁sep｜>");
  }
  absl::string_view left = TrimWhitespace(body.substr(0, sep));
  absl::string_view right = body.substr(sep + kDeepSeekSep.size());
  ParsedToolCall call;
  absl::string_view args;
  absl::string_view right_trimmed = TrimWhitespace(right);
  if (left == "function" && !right_trimmed.empty() && right_trimmed.front() != '{') {
    // V3 / R1: function<sep>NAME\n```json\n{..}\n```
    const size_t nl = right_trimmed.find('\n');
    if (nl == absl::string_view::npos) {
      return absl::InvalidArgumentError("DeepSeek-V3 tool call without a newline after the name");
    }
    call.name = std::string(TrimWhitespace(right_trimmed.substr(0, nl)));
    args = TrimWhitespace(right_trimmed.substr(nl + 1));
    if (absl::StartsWith(args, "```")) {
      args.remove_prefix(3);
      if (absl::StartsWith(args, "json")) args.remove_prefix(4);
      if (!absl::EndsWith(args, "```")) {
        return absl::InvalidArgumentError("DeepSeek-V3 tool call arguments: unclosed ``` fence");
      }
      args.remove_suffix(3);
    }
  } else {
    // V3.1: NAME<sep>{..}
    call.name = std::string(left);
    args = right;
  }
  if (call.name.empty()) return absl::InvalidArgumentError("DeepSeek tool call without a name");
  absl::StatusOr<std::string> a = NormalizeToolArguments(args);
  if (!a.ok()) return a.status();
  call.arguments = *std::move(a);
  return std::vector<ParsedToolCall>{std::move(call)};
}

constexpr absl::string_view kKimiArgBegin = "<|tool_call_argument_begin|>";

absl::StatusOr<std::vector<ParsedToolCall>> ParseKimi(absl::string_view body) {
  const size_t sep = body.find(kKimiArgBegin);
  if (sep == absl::string_view::npos) {
    return absl::InvalidArgumentError("Kimi K2 tool call without <|tool_call_argument_begin|>");
  }
  ParsedToolCall call;
  absl::string_view id = TrimWhitespace(body.substr(0, sep));
  absl::string_view name = id;
  if (absl::StartsWith(name, "functions.")) name.remove_prefix(10);
  const size_t colon = name.rfind(':');
  if (colon != absl::string_view::npos) name = name.substr(0, colon);
  if (name.empty()) return absl::InvalidArgumentError("Kimi K2 tool call id without a name");
  call.id = std::string(id);
  call.name = std::string(name);
  absl::StatusOr<std::string> a = NormalizeToolArguments(body.substr(sep + kKimiArgBegin.size()));
  if (!a.ok()) return a.status();
  call.arguments = *std::move(a);
  return std::vector<ParsedToolCall>{std::move(call)};
}

// tool name -> names of its parameters declared "type": "string".
using StringParams = std::vector<std::pair<std::string, absl::flat_hash_set<std::string>>>;

StringParams StringParamsOf(const nlohmann::json& tools) {
  StringParams out;
  if (!tools.is_array()) return out;
  for (const nlohmann::json& tool : tools) {
    if (!tool.is_object()) continue;
    const nlohmann::json* fn = &tool;
    if (auto f = tool.find("function"); f != tool.end() && f->is_object()) fn = &*f;
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string()) continue;
    absl::flat_hash_set<std::string> strings;
    auto params = fn->find("parameters");
    if (params != fn->end() && params->is_object()) {
      auto props = params->find("properties");
      if (props != params->end() && props->is_object()) {
        for (auto it = props->begin(); it != props->end(); ++it) {
          if (!it.value().is_object()) continue;
          auto type = it.value().find("type");
          if (type != it.value().end() && type->is_string() && *type == "string") {
            strings.insert(it.key());
          }
        }
      }
    }
    out.emplace_back(name->get<std::string>(), std::move(strings));
  }
  return out;
}

constexpr absl::string_view kArgKey = "<arg_key>";
constexpr absl::string_view kArgKeyEnd = "</arg_key>";
constexpr absl::string_view kArgValue = "<arg_value>";
constexpr absl::string_view kArgValueEnd = "</arg_value>";

absl::StatusOr<std::vector<ParsedToolCall>> ParseGlm(const StringParams& string_params,
                                                     absl::string_view body) {
  size_t first_key = body.find(kArgKey);
  ParsedToolCall call;
  call.name = std::string(TrimWhitespace(body.substr(0, first_key)));
  if (call.name.empty() || call.name.find('<') != std::string::npos ||
      call.name.find('\n') != std::string::npos) {
    return absl::InvalidArgumentError("GLM tool call without a function name line");
  }
  const absl::flat_hash_set<std::string>* strings = nullptr;
  for (const auto& [tool, names] : string_params) {
    if (tool == call.name) strings = &names;
  }
  ordered_json args = ordered_json::object();
  absl::string_view rest = first_key == absl::string_view::npos ? "" : body.substr(first_key);
  while (true) {
    rest = TrimWhitespace(rest);
    if (rest.empty()) break;
    if (!absl::StartsWith(rest, kArgKey)) {
      return absl::InvalidArgumentError("GLM tool call: text outside <arg_key>/<arg_value>");
    }
    rest.remove_prefix(kArgKey.size());
    const size_t key_end = rest.find(kArgKeyEnd);
    if (key_end == absl::string_view::npos) {
      return absl::InvalidArgumentError("GLM tool call: unclosed <arg_key>");
    }
    std::string key(TrimWhitespace(rest.substr(0, key_end)));
    rest = TrimWhitespace(rest.substr(key_end + kArgKeyEnd.size()));
    if (!absl::StartsWith(rest, kArgValue)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GLM tool call: <arg_key>", key, "</arg_key> without <arg_value>"));
    }
    rest.remove_prefix(kArgValue.size());
    const size_t value_end = rest.find(kArgValueEnd);
    if (value_end == absl::string_view::npos) {
      return absl::InvalidArgumentError("GLM tool call: unclosed <arg_value>");
    }
    absl::string_view value = rest.substr(0, value_end);
    rest.remove_prefix(value_end + kArgValueEnd.size());
    if (strings != nullptr && strings->contains(key)) {
      args[key] = std::string(value);
      continue;
    }
    ordered_json parsed = ParseJson(TrimWhitespace(value));
    if (parsed.is_discarded() || TrimWhitespace(value).empty()) {
      args[key] = std::string(value);
    } else {
      args[key] = std::move(parsed);
    }
  }
  call.arguments = DumpCompact(args);
  return std::vector<ParsedToolCall>{std::move(call)};
}

constexpr absl::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr absl::string_view kMistralArgs = "[ARGS]";
constexpr absl::string_view kMistralCallId = "[CALL_ID]";

std::optional<size_t> MistralFindEnd(absl::string_view body) {
  size_t start = 0;
  while (start < body.size() && (body[start] == ' ' || body[start] == '\n')) ++start;
  if (start == body.size()) return std::nullopt;
  if (body[start] == '[' || body[start] == '{') {
    std::optional<size_t> end = ScanJsonValueEnd(body);
    return end;
  }
  // NAME[CALL_ID]id[ARGS]{..}
  const text_internal::MarkerHit hit = FindFirstMarker(body, {kMistralArgs, kMistralCalls});
  if (!hit.found()) return std::nullopt;
  if (hit.index == 1) return hit.pos;  // next call began before this one had [ARGS]: malformed
  absl::string_view args = body.substr(hit.pos + hit.length);
  size_t ws = 0;
  while (ws < args.size() && (args[ws] == ' ' || args[ws] == '\n')) ++ws;
  if (ws == args.size()) return std::nullopt;
  if (args[ws] == '{' || args[ws] == '[') {
    std::optional<size_t> end = ScanJsonValueEnd(args);
    if (!end.has_value()) return std::nullopt;
    return hit.pos + hit.length + *end;
  }
  // Not JSON: the block runs to the next call or to the end of the output.
  const size_t next = args.find(kMistralCalls);
  if (next == absl::string_view::npos) return std::nullopt;
  return hit.pos + hit.length + next;
}

absl::StatusOr<std::vector<ParsedToolCall>> ParseMistral(absl::string_view body) {
  absl::string_view trimmed = TrimWhitespace(body);
  std::vector<ParsedToolCall> calls;
  if (!trimmed.empty() && (trimmed.front() == '[' || trimmed.front() == '{')) {
    ordered_json j = ParseJson(trimmed);
    if (j.is_discarded()) return absl::InvalidArgumentError("[TOOL_CALLS] JSON is not valid");
    if (j.is_object()) j = ordered_json::array({std::move(j)});
    if (j.empty()) return absl::InvalidArgumentError("[TOOL_CALLS] with an empty list");
    for (const ordered_json& item : j) {
      absl::StatusOr<ParsedToolCall> call = CallFromObject(item);
      if (!call.ok()) return call.status();
      calls.push_back(*std::move(call));
    }
    return calls;
  }
  const size_t args_pos = trimmed.find(kMistralArgs);
  if (args_pos == absl::string_view::npos) {
    return absl::InvalidArgumentError("[TOOL_CALLS] without [ARGS]");
  }
  absl::string_view head = trimmed.substr(0, args_pos);
  ParsedToolCall call;
  const size_t id_pos = head.find(kMistralCallId);
  if (id_pos != absl::string_view::npos) {
    call.id = std::string(TrimWhitespace(head.substr(id_pos + kMistralCallId.size())));
    head = head.substr(0, id_pos);
  }
  call.name = std::string(TrimWhitespace(head));
  if (call.name.empty()) return absl::InvalidArgumentError("[TOOL_CALLS] without a name");
  absl::StatusOr<std::string> a = NormalizeToolArguments(trimmed.substr(args_pos + 6));
  if (!a.ok()) return a.status();
  call.arguments = *std::move(a);
  calls.push_back(std::move(call));
  return calls;
}

}  // namespace

absl::StatusOr<std::string> NormalizeToolArguments(absl::string_view text) {
  text = TrimWhitespace(text);
  if (text.empty()) return std::string("{}");
  ordered_json j = ParseJson(text);
  if (j.is_discarded()) return absl::InvalidArgumentError("tool call arguments are not valid JSON");
  return ArgumentsFromJson(j);
}

std::optional<size_t> ScanJsonValueEnd(absl::string_view text) {
  size_t i = 0;
  while (i < text.size() &&
         (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) {
    ++i;
  }
  if (i == text.size()) return std::nullopt;
  if (text[i] != '{' && text[i] != '[') return 0;
  int depth = 0;
  bool in_string = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::nullopt;
}

ToolSyntax HermesToolSyntax() {
  ToolSyntax s;
  s.call_begin = "<tool_call>";
  s.call_end = "</tool_call>";
  s.parse = ParseHermes;
  return s;
}

ToolSyntax DeepSeekToolSyntax() {
  ToolSyntax s;
  s.section_begin = "<｜tool▁calls▁begin｜>";
  s.section_end = "<｜tool▁calls▁end｜>";
  s.call_begin = "<｜tool▁call▁begin｜>";
  s.call_end = "<｜tool▁call▁end｜>";
  s.parse = ParseDeepSeek;
  return s;
}

ToolSyntax KimiK2ToolSyntax() {
  ToolSyntax s;
  s.section_begin = "<|tool_calls_section_begin|>";
  s.section_end = "<|tool_calls_section_end|>";
  s.call_begin = "<|tool_call_begin|>";
  s.call_end = "<|tool_call_end|>";
  s.parse = ParseKimi;
  return s;
}

ToolSyntax Glm45ToolSyntax(const nlohmann::json& tools) {
  ToolSyntax s;
  s.call_begin = "<tool_call>";
  s.call_end = "</tool_call>";
  s.parse = [params = StringParamsOf(tools)](absl::string_view body) {
    return ParseGlm(params, body);
  };
  return s;
}

ToolSyntax MistralToolSyntax() {
  ToolSyntax s;
  s.call_begin = std::string(kMistralCalls);
  s.find_end = MistralFindEnd;
  s.parse = ParseMistral;
  return s;
}

ToolCallParser::ToolCallParser(ToolSyntax syntax) : syntax_(std::move(syntax)) {}

void ToolCallParser::Push(absl::string_view text, std::string* content,
                          std::vector<ParsedToolCall>* calls) {
  buffer_.append(text.data(), text.size());
  Process(/*final=*/false, content, calls);
}

void ToolCallParser::Finish(std::string* content, std::vector<ParsedToolCall>* calls) {
  Process(/*final=*/true, content, calls);
  content_trim_.Flush(content);
}

void ToolCallParser::EmitCall(absl::string_view body, absl::string_view raw, std::string* content,
                              std::vector<ParsedToolCall>* calls) {
  absl::StatusOr<std::vector<ParsedToolCall>> parsed = syntax_.parse(body);
  if (parsed.ok()) {
    for (ParsedToolCall& c : *parsed) calls->push_back(std::move(c));
    dropped_newlines_.clear();
    return;
  }
  // Invalid: the block is content, with the newlines that were dropped before it.
  content_trim_.AppendVerbatim(dropped_newlines_, content);
  dropped_newlines_.clear();
  content_trim_.Append(raw, content);
}

void ToolCallParser::Process(bool final, std::string* content, std::vector<ParsedToolCall>* calls) {
  // Consumed text is dropped once per call (not per block: many calls in one Push stay linear).
  consumed_ = 0;
  ProcessBuffer(final, content, calls);
  buffer_.erase(0, consumed_);
  consumed_ = 0;
}

void ToolCallParser::ProcessBuffer(bool final, std::string* content,
                                   std::vector<ParsedToolCall>* calls) {
  const absl::string_view section_begin = syntax_.section_begin;
  const absl::string_view section_end = syntax_.section_end;
  const absl::string_view call_begin = syntax_.call_begin;
  const absl::string_view call_end = syntax_.call_end;
  while (true) {
    absl::string_view buf = absl::string_view(buffer_).substr(consumed_);
    switch (state_) {
      case State::kContent: {
        const text_internal::MarkerHit hit = FindFirstMarker(buf, {section_begin, call_begin});
        if (hit.found()) {
          content_trim_.Append(buf.substr(0, hit.pos), content);
          dropped_newlines_ = content_trim_.Break();
          in_section_ = hit.index == 0;
          if (in_section_) dropped_newlines_.append(section_begin.data(), section_begin.size());
          consumed_ += hit.pos + (in_section_ ? hit.length : 0);
          state_ = in_section_ ? State::kSection : State::kCall;
          continue;
        }
        const size_t hold = final ? 0 : PartialMarkerSuffix(buf, {section_begin, call_begin});
        content_trim_.Append(buf.substr(0, buf.size() - hold), content);
        consumed_ += buf.size() - hold;
        return;
      }
      case State::kSection: {
        // Between blocks of a section: whitespace is held (dropped if a call or the section end
        // follows); any other text means the model left the section: it is content from here,
        // with the held text.
        size_t ws = 0;
        while (ws < buf.size() && (buf[ws] == ' ' || buf[ws] == '\n')) ++ws;
        dropped_newlines_.append(buf.data(), ws);
        consumed_ += ws;
        buf.remove_prefix(ws);
        if (absl::StartsWith(buf, call_begin)) {
          state_ = State::kCall;
          continue;
        }
        if (absl::StartsWith(buf, section_end)) {
          consumed_ += section_end.size();
          in_section_ = false;
          dropped_newlines_.clear();
          state_ = State::kContent;
          continue;
        }
        if (buf.empty()) return;
        if (!final && (absl::StartsWith(call_begin, buf) || absl::StartsWith(section_end, buf))) {
          return;
        }
        content_trim_.AppendVerbatim(dropped_newlines_, content);
        dropped_newlines_.clear();
        in_section_ = false;
        state_ = State::kContent;
        continue;
      }
      case State::kCall: {
        // buf starts with call_begin.
        absl::string_view rest = buf.substr(call_begin.size());
        std::optional<size_t> body_len;
        size_t end_len = 0;
        if (!call_end.empty()) {
          // Resume the search where the previous Push left off (long calls, small deltas).
          const size_t from =
              call_scanned_ > call_end.size() ? call_scanned_ - call_end.size() + 1 : 0;
          const size_t pos = rest.find(call_end, from);
          if (pos != absl::string_view::npos) {
            body_len = pos;
            end_len = call_end.size();
          }
          call_scanned_ = rest.size();
        } else {
          body_len = syntax_.find_end(rest);
        }
        if (!body_len.has_value()) {
          if (!final) return;
          body_len = rest.size();  // unterminated at the end of the output
        }
        const size_t raw_len = call_begin.size() + *body_len + end_len;
        std::string raw = std::string(buf.substr(0, raw_len));
        EmitCall(rest.substr(0, *body_len), raw, content, calls);
        call_scanned_ = 0;
        consumed_ += raw_len;
        if (in_section_) {
          state_ = State::kSection;
        } else {
          content_trim_.Break();
          state_ = State::kContent;
        }
        continue;
      }
    }
  }
}

}  // namespace tessera
