// The OpenAI-compatible endpoints on top of an Engine, independent of the HTTP transport:
// POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics.
//
// Contract: the transport (http_server.h) hands every request to OpenAiService::Handle() with a
// ResponseSink for that exchange; the service answers exactly once through the sink, either
// Respond() or StartStream() + Write()* + EndStream(). Engine callbacks never touch the sink
// directly: they Post() to the sink's executor (the connection's strand), where all per-request
// state lives, so front-end code never blocks an io thread and needs no locks. When the client
// goes away first, the sink runs its close callbacks and the service calls Engine::Abort() for
// every unfinished engine request of the exchange.
//
// Thread safety: OpenAiService is thread safe (Handle() runs on many io threads at once). A
// ResponseSink is used from its own executor only, except Post(), which any thread may call.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/api/openai_protocol.h"
#include "coordinator/engine/engine.h"
#include "coordinator/text/chat_template.h"
#include "coordinator/text/output_parser.h"
#include "coordinator/text/tokenizer.h"
#include "nlohmann/json.hpp"

namespace tessera::api {

// One request/response exchange, implemented by the transport.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // Runs `fn` on the sink's executor (any thread). Dropped when the server is shut down.
  virtual void Post(std::function<void()> fn) = 0;
  // A complete response.
  virtual void Respond(int status, absl::string_view content_type, std::string body) = 0;
  // A streamed (chunked) response: headers now, then Write() pieces, then EndStream().
  virtual void StartStream(int status, absl::string_view content_type) = 0;
  virtual void Write(std::string data) = 0;
  virtual void EndStream() = 0;
  // `fn` runs on the executor when the client disconnects before the response ends (at once
  // when it already has).
  virtual void OnClose(std::function<void()> fn) = 0;
};

// Renders a chat into prompt text (the chat template): messages with string content, tools
// (array or null), add_generation_prompt, continue_final_message, chat_template_kwargs. An error
// becomes a 400 with its message (a template's raise_exception).
using ChatRenderer = std::function<absl::StatusOr<std::string>(
    const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
    bool add_generation_prompt, bool continue_final_message,
    const nlohmann::ordered_json& chat_template_kwargs)>;

// The ChatRenderer of a model's chat template(s) (LoadChatTemplate): picks "tool_use" when tools
// are given and the model has one (HF), passes the special tokens, chat_template_kwargs as extra
// variables, and for continue_final_message renders without a generation prompt and cuts the
// text after the final message's content (HF's continue_final_message).
ChatRenderer MakeChatRenderer(std::shared_ptr<const LoadedChatTemplate> chat_template);

struct OpenAiServiceOptions {
  // Names the model answers to; the first is reported by /v1/models and in responses.
  std::vector<std::string> served_model_names;
  ChatRenderer render_chat;  // null: /v1/chat/completions answers 400
  // How chat output splits into content / reasoning_content / tool_calls (output_parser.h).
  // Other than kPlain, chat requests decode with skip_special_tokens=false, as the parsers
  // need the markers (vLLM does the same for tool and harmony parsers).
  OutputFormat output_format = OutputFormat::kPlain;
  bool parse_reasoning = true;  // false: reasoning stays in the content
  // No tokenizer (vLLM's --skip-tokenizer-init): /v1/completions takes token-id prompts only and
  // answers with empty text (usage, logprob values and finish reasons as usual); text prompts
  // and chat answer 400 saying so. `no_tokenizer_reason` names what is missing.
  bool token_ids_only = false;
  std::string no_tokenizer_reason;
  // Extra Prometheus text for /metrics (the engine's registry); appended after the HTTP metrics.
  std::function<std::string()> metrics_text;
};

class OpenAiService {
 public:
  // `engine` and `tokenizer` must outlive the service and every exchange it started.
  OpenAiService(Engine& engine, const Tokenizer& tokenizer, OpenAiServiceOptions options);
  ~OpenAiService();

  // Answers one request. `path` excludes the query string; `body` is the raw request body.
  void Handle(absl::string_view method, absl::string_view path, absl::string_view body,
              std::shared_ptr<ResponseSink> sink);

  // While draining, new generation requests and /health answer 503.
  void set_draining(bool draining) { draining_ = draining; }
  // Engine requests submitted and not yet finished (the engine's final output not delivered).
  int64_t live_engine_requests() const;
  // Counts an HTTP response by status (for /metrics; the transport's own answers too).
  void CountResponse(int status);

  const OpenAiServiceOptions& options() const { return options_; }

 private:
  struct Shared;
  class Job;

  void HandleChat(absl::string_view body, std::shared_ptr<ResponseSink> sink);
  void HandleCompletion(absl::string_view body, std::shared_ptr<ResponseSink> sink);
  void HandleModels(absl::string_view path, std::shared_ptr<ResponseSink> sink);
  void HandleTokenize(absl::string_view body, std::shared_ptr<ResponseSink> sink);
  // The chat template applied to a parsed chat request (tools only when they apply); a 400 when
  // the model has no template or rendering fails.
  std::optional<ApiError> RenderChatPrompt(const ChatRequest& req, std::string* prompt) const;
  void HandleDetokenize(absl::string_view body, std::shared_ptr<ResponseSink> sink);
  void HandleMetrics(std::shared_ptr<ResponseSink> sink);
  // Checks the model name; fills *out with the engine's model info.
  std::optional<ApiError> CheckModel(const std::string& requested, ModelInfo* out) const;

  Engine& engine_;
  const Tokenizer& tokenizer_;
  OpenAiServiceOptions options_;
  std::atomic<bool> draining_{false};
  std::shared_ptr<Shared> shared_;
};

// Sends `error` through `sink` as a complete response.
void RespondError(ResponseSink& sink, const ApiError& error);

}  // namespace tessera::api
