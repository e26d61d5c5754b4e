// Streaming parser of gpt-oss "harmony" output (the tokens after the prompt's "<|start|>assistant",
// decoded with special tokens kept).
//
// A message is  [<|start|>ROLE][ to=RECIPIENT]<|channel|>CHANNEL[ to=RECIPIENT][ TYPE]
// [<|constrain|>FMT]<|message|>BODY  ended by <|end|>, <|call|> or <|return|> (a following
// <|start|> also ends it). Routing of BODY:
//   recipient "functions.NAME" (or a bare "NAME")   -> tool call NAME, BODY = JSON arguments
//   recipient browser.* / python / container.*     -> built-in tool use: reasoning
//   role other than assistant (a tool's output)     -> reasoning
//   channel analysis                                -> reasoning
//   channel final, commentary (preambles), other    -> content
// With parse_tools false a tool call's BODY is content; with parse_reasoning false reasoning
// bodies are content. Bodies are passed through verbatim (no newline trimming); bodies of
// successive messages of one kind are concatenated. Tool calls are emitted whole at their end
// marker (or at Finish if the output stopped before <|call|>); an invalid JSON body is content.
// A header cut off by the end of the output is dropped (it carries no text), unless it contains
// no special token at all (then the model did not speak harmony: the text is content).
//
// Thread safety: one instance per request/choice; not safe for concurrent use.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "coordinator/text/tool_parser.h"

namespace tessera {

class HarmonyParser {
 public:
  HarmonyParser(bool parse_reasoning, bool parse_tools);

  void Push(absl::string_view text, std::string* reasoning, std::string* content,
            std::vector<ParsedToolCall>* calls);
  void Finish(std::string* reasoning, std::string* content, std::vector<ParsedToolCall>* calls);

 private:
  enum class State { kHeader, kBody };
  enum class Route { kReasoning, kContent, kTool };
  void Process(bool final, std::string* reasoning, std::string* content,
               std::vector<ParsedToolCall>* calls);
  void StartBody(absl::string_view header);
  void EndToolBody(absl::string_view body, std::string* content,
                   std::vector<ParsedToolCall>* calls);

  bool parse_reasoning_;
  bool parse_tools_;
  State state_ = State::kHeader;
  Route route_ = Route::kContent;
  std::string tool_name_;
  std::string buffer_;
};

}  // namespace tessera
