// OpenAI-compatible request parsing and error bodies (POST /v1/chat/completions and
// /v1/completions), following the OpenAPI description and vLLM's extensions (docs/http-api.md).
//
// Contract: Parse*Request() reads a decoded JSON body into a typed request with every field
// type- and range-checked; an error is an ApiError whose message names the parameter at fault
// (`param` carries it too) and whose status is the HTTP status to answer with. Unknown fields
// are ignored (as vLLM does). Context-length checks need the tokenized prompt and happen later
// (openai_serving.h). Pure functions, thread safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "coordinator/engine/sampling_proto.h"
#include "nlohmann/json.hpp"

namespace tessera::api {

// Limits of the protocol layer (docs/http-api.md says why).
inline constexpr int kMaxStopSequences = 16;
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxN = 128;
inline constexpr int kMaxPrompts = 1024;  // prompts in one /v1/completions request

// An error answer: HTTP status + OpenAI's {"error": {message, type, param, code}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty -> null
  std::string code;   // empty -> null
};

ApiError BadRequest(std::string message, std::string param = "");
// The JSON body of `error` (one line, no trailing newline).
std::string ErrorBody(const ApiError& error);
// Whether `text` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(absl::string_view text);
// `bytes` with every ill-formed UTF-8 sequence replaced by U+FFFD.
std::string SanitizeUtf8(absl::string_view bytes);

// Fields common to both endpoints.
struct CommonRequest {
  std::string model;                // empty: the served model
  int n = 1;
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  bool continuous_usage = false;    // stream_options.continuous_usage_stats (vLLM)
  std::optional<int> max_tokens;    // unset: default_max_tokens
  int default_max_tokens = 0;       // 0: the rest of the context; completions: 16 (OpenAI)
  RequestSampling sampling;         // everything but max_tokens and logprobs
  int logprobs = -1;                // -1: no logprobs; k >= 0: sampled token + top k
  bool skip_special_tokens = true;
  bool echo = false;
};

struct ChatRequest : CommonRequest {
  // Messages with string content (text content parts joined); tool_calls / tool_call_id / name
  // kept as sent.
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;     // array of {"type":"function","function":{...}} or null
  std::string tool_choice = "auto"; // auto | none | required | function (named_tool set)
  std::string named_tool;
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  // vLLM extension: apply the tokenizer's post-processor to the rendered prompt (false: the
  // chat template already renders BOS).
  bool add_special_tokens = false;
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
};

struct PromptInput {
  bool is_ids = false;
  std::string text;
  std::vector<int32_t> ids;
};

struct CompletionRequest : CommonRequest {
  std::vector<PromptInput> prompts;
  // vLLM extension: apply the tokenizer's post-processor (e.g. prepend BOS) to string prompts
  // (as Hugging Face encode(text) does by default); token-id prompts are never changed.
  bool add_special_tokens = true;
};

// Parse the body of POST /v1/chat/completions / POST /v1/completions. Bodies are parsed as
// ordered_json so that messages and tools reach the chat template with their keys in the
// client's order (templates print them with tojson, as Python dicts keep insertion order).
std::optional<ApiError> ParseChatRequest(const nlohmann::ordered_json& body, ChatRequest* out);
std::optional<ApiError> ParseCompletionRequest(const nlohmann::ordered_json& body,
                                               CompletionRequest* out);

// POST /tokenize (vLLM's extension): a chat request ("messages" present: parsed as for chat
// completions, so add_special_tokens defaults to false and add_generation_prompt to true) or
// {"prompt": string} with add_special_tokens defaulting to true; both take return_token_strs.
struct TokenizeRequest {
  std::string model;
  bool is_chat = false;
  ChatRequest chat;
  std::string prompt;
  bool add_special_tokens = true;
  bool return_token_strs = false;
};
std::optional<ApiError> ParseTokenizeRequest(const nlohmann::ordered_json& body,
                                             TokenizeRequest* out);

// POST /detokenize: {"tokens": [ids]} (required, may be empty).
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};
std::optional<ApiError> ParseDetokenizeRequest(const nlohmann::ordered_json& body,
                                               DetokenizeRequest* out);

}  // namespace tessera::api
