#include "coordinator/text/reasoning_parser.h"

namespace tessera {
namespace {

constexpr absl::string_view kThinkStart = "<think>";
constexpr absl::string_view kThinkEnd = "</think>";

}  // namespace

using text_internal::FindFirstMarker;
using text_internal::PartialMarkerSuffix;

ReasoningParser::ReasoningParser(bool starts_in_reasoning)
    : state_(State::kPrefix), starts_in_reasoning_(starts_in_reasoning) {}

void ReasoningParser::Push(absl::string_view text, std::string* reasoning, std::string* content) {
  buffer_.append(text.data(), text.size());
  Process(/*final=*/false, reasoning, content);
}

void ReasoningParser::Finish(std::string* reasoning, std::string* content) {
  Process(/*final=*/true, reasoning, content);
  // An unterminated reasoning block: its trailing newlines are formatting, like before </think>.
  reasoning_trim_.Break();
}

void ReasoningParser::Process(bool final, std::string* reasoning, std::string* content) {
  while (true) {
    switch (state_) {
      case State::kPrefix: {
        size_t first = 0;
        while (first < buffer_.size() && (buffer_[first] == ' ' || buffer_[first] == '\n' ||
                                          buffer_[first] == '\r' || buffer_[first] == '\t')) {
          ++first;
        }
        absl::string_view rest = absl::string_view(buffer_).substr(first);
        if (rest.substr(0, kThinkStart.size()) == kThinkStart) {
          buffer_.erase(0, first + kThinkStart.size());
          state_ = State::kReasoning;
          continue;
        }
        if (!final && kThinkStart.substr(0, rest.size()) == rest) return;  // maybe "<think>"
        state_ = starts_in_reasoning_ ? State::kReasoning : State::kContent;
        continue;
      }
      case State::kReasoning: {
        const text_internal::MarkerHit hit = FindFirstMarker(buffer_, {kThinkEnd});
        if (hit.found()) {
          reasoning_trim_.Append(absl::string_view(buffer_).substr(0, hit.pos), reasoning);
          reasoning_trim_.Break();
          buffer_.erase(0, hit.pos + hit.length);
          state_ = State::kContent;
          strip_content_newlines_ = true;
          continue;
        }
        const size_t hold = final ? 0 : PartialMarkerSuffix(buffer_, {kThinkEnd});
        reasoning_trim_.Append(absl::string_view(buffer_).substr(0, buffer_.size() - hold),
                               reasoning);
        buffer_.erase(0, buffer_.size() - hold);
        return;
      }
      case State::kContent: {
        size_t skip = 0;
        if (strip_content_newlines_) {
          while (skip < buffer_.size() && buffer_[skip] == '\n') ++skip;
          if (skip < buffer_.size()) strip_content_newlines_ = false;
        }
        content->append(buffer_, skip, std::string::npos);
        buffer_.clear();
        return;
      }
    }
  }
}

}  // namespace tessera
