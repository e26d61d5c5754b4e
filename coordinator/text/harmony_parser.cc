#include "coordinator/text/harmony_parser.h"

#include <utility>

#include "absl/strings/match.h"

namespace tessera {
namespace {

using text_internal::FindFirstMarker;
using text_internal::PartialMarkerSuffix;

constexpr absl::string_view kStart = "<|start|>";
constexpr absl::string_view kChannel = "<|channel|>";
constexpr absl::string_view kMessage = "<|message|>";
constexpr absl::string_view kEnd = "<|end|>";
constexpr absl::string_view kCall = "<|call|>";
constexpr absl::string_view kReturn = "<|return|>";

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// The word at the start of `s` (up to whitespace or a special token).
absl::string_view Word(absl::string_view s) {
  size_t i = 0;
  while (i < s.size() && !IsSpace(s[i]) && s[i] != '<') ++i;
  return s.substr(0, i);
}

absl::string_view SkipSpace(absl::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}

}  // namespace

HarmonyParser::HarmonyParser(bool parse_reasoning, bool parse_tools)
    : parse_reasoning_(parse_reasoning), parse_tools_(parse_tools) {}

void HarmonyParser::Push(absl::string_view text, std::string* reasoning, std::string* content,
                         std::vector<ParsedToolCall>* calls) {
  buffer_.append(text.data(), text.size());
  Process(/*final=*/false, reasoning, content, calls);
}

void HarmonyParser::Finish(std::string* reasoning, std::string* content,
                           std::vector<ParsedToolCall>* calls) {
  Process(/*final=*/true, reasoning, content, calls);
  if (state_ == State::kHeader && !buffer_.empty()) {
    if (buffer_.find("<|") == std::string::npos) content->append(buffer_);
  } else if (state_ == State::kBody && route_ == Route::kTool) {
    EndToolBody(buffer_, content, calls);
  }
  buffer_.clear();
  state_ = State::kHeader;
}

void HarmonyParser::StartBody(absl::string_view header) {
  header = SkipSpace(header);
  if (absl::StartsWith(header, kStart)) header.remove_prefix(kStart.size());
  const size_t channel_pos = header.find(kChannel);
  absl::string_view pre = header.substr(0, channel_pos);
  absl::string_view post =
      channel_pos == absl::string_view::npos ? "" : header.substr(channel_pos + kChannel.size());
  absl::string_view role = SkipSpace(pre);
  role = absl::StartsWith(role, "to=") ? "" : Word(role);
  absl::string_view channel = Word(SkipSpace(post));
  absl::string_view recipient;
  for (absl::string_view part : {pre, post}) {
    const size_t to = part.find("to=");
    if (to != absl::string_view::npos && recipient.empty()) recipient = Word(part.substr(to + 3));
  }
  route_ = Route::kContent;
  tool_name_.clear();
  if (!role.empty() && role != "assistant") {
    route_ = Route::kReasoning;
  } else if (!recipient.empty() && recipient != "assistant") {
    if (absl::StartsWith(recipient, "functions.")) {
      tool_name_ = std::string(recipient.substr(10));
      route_ = Route::kTool;
    } else if (absl::StartsWith(recipient, "browser.") || recipient == "python" ||
               absl::StartsWith(recipient, "container.")) {
      route_ = Route::kReasoning;
    } else {
      tool_name_ = std::string(recipient);
      route_ = Route::kTool;
    }
  } else if (channel == "analysis") {
    route_ = Route::kReasoning;
  }
  if (route_ == Route::kTool && !parse_tools_) route_ = Route::kContent;
  if (route_ == Route::kReasoning && !parse_reasoning_) route_ = Route::kContent;
}

void HarmonyParser::EndToolBody(absl::string_view body, std::string* content,
                                std::vector<ParsedToolCall>* calls) {
  absl::StatusOr<std::string> args = NormalizeToolArguments(body);
  if (!args.ok() || tool_name_.empty()) {
    content->append(body.data(), body.size());
    return;
  }
  ParsedToolCall call;
  call.name = tool_name_;
  call.arguments = *std::move(args);
  calls->push_back(std::move(call));
}

void HarmonyParser::Process(bool final, std::string* reasoning, std::string* content,
                            std::vector<ParsedToolCall>* calls) {
  while (true) {
    absl::string_view buf = buffer_;
    if (state_ == State::kHeader) {
      const size_t pos = buf.find(kMessage);
      if (pos == absl::string_view::npos) return;  // headers are short: wait for all of it
      StartBody(buf.substr(0, pos));
      buffer_.erase(0, pos + kMessage.size());
      state_ = State::kBody;
      continue;
    }
    const text_internal::MarkerHit hit = FindFirstMarker(buf, {kEnd, kCall, kReturn, kStart});
    if (route_ == Route::kTool) {
      if (!hit.found()) return;  // the arguments are emitted whole
      EndToolBody(buf.substr(0, hit.pos), content, calls);
    } else {
      std::string* out = route_ == Route::kReasoning ? reasoning : content;
      if (!hit.found()) {
        const size_t hold = final ? 0 : PartialMarkerSuffix(buf, {kEnd, kCall, kReturn, kStart});
        absl::string_view emit = buf.substr(0, buf.size() - hold);
        out->append(emit.data(), emit.size());
        buffer_.erase(0, buf.size() - hold);
        return;
      }
      out->append(buf.data(), hit.pos);
    }
    // <|start|> begins the next header; the end tokens are consumed.
    buffer_.erase(0, hit.pos + (hit.index == 3 ? 0 : hit.length));
    state_ = State::kHeader;
  }
}

}  // namespace tessera
