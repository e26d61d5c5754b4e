// Streaming split of model output into reasoning and content for <think>...</think> models
// (Qwen3 / QwQ, DeepSeek-R1 / V3.1 thinking mode, Kimi-K2-Thinking, GLM-4.5/4.6).
//
// Contract:
// - Text arrives in arbitrary deltas (a marker may be split across them); only a suffix that could
//   still become "<think>" / "</think>" is held back.
// - Reasoning starts either because the output begins with "<think>" (after optional leading
//   whitespace) or because the prompt already ended inside <think> (`starts_in_reasoning`,
//   R1-style output without an opening tag; a repeated "<think>" at its start is dropped, as
//   vLLM's deepseek_r1 parser does). It ends at the first "</think>"; everything after is
//   content. Output that does not open with "<think>" is all content. An unterminated reasoning
//   block (max_tokens hit) stays reasoning.
// - Formatting newlines are dropped: leading and trailing newlines of the reasoning, and the
//   newlines right after "</think>" (templates render "<think>\nR\n</think>\n\nC"). Other text is
//   passed through byte for byte; content is passed on raw (the tool layer trims it further).
// - The concatenated outputs do not depend on how the input was split.
//
// Thread safety: one instance per request/choice; not safe for concurrent use.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "coordinator/text/marker_scan.h"

namespace tessera {

class ReasoningParser {
 public:
  explicit ReasoningParser(bool starts_in_reasoning);

  // Appends what can be decided to `reasoning` and `content`.
  void Push(absl::string_view text, std::string* reasoning, std::string* content);
  // Flushes everything held back.
  void Finish(std::string* reasoning, std::string* content);

 private:
  enum class State { kPrefix, kReasoning, kContent };
  void Process(bool final, std::string* reasoning, std::string* content);

  State state_;
  bool starts_in_reasoning_;
  std::string buffer_;
  bool strip_content_newlines_ = false;
  text_internal::NewlineTrimmer reasoning_trim_;
};

}  // namespace tessera
