#include "coordinator/api/openai_serving.h"

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera::api {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr absl::string_view kJson = "application/json";

std::string Dump(const ojson& j) {
  return j.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

std::string RandomHex(int chars) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char kHex[] = "0123456789abcdef";
  std::string out(chars, '0');
  uint64_t bits = 0;
  for (int i = 0; i < chars; ++i) {
    if (i % 16 == 0) bits = rng();
    out[i] = kHex[bits & 15];
    bits >>= 4;
  }
  return out;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ApiError ServerError(int status, std::string message) {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = status == 503 ? "service_unavailable_error" : "server_error";
  return e;
}

// An engine Submit/request error as an HTTP error.
ApiError FromStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return BadRequest(std::string(status.message()));
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
      return ServerError(503, std::string(status.message()));
    default:
      return ServerError(500, std::string(status.message()));
  }
}

const char* FinishReasonText(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    default: return nullptr;
  }
}

// vLLM reports -inf logprobs as -9999.0 (JSON has no infinity).
double FiniteLogprob(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

ojson BytesArray(absl::string_view bytes) {
  ojson arr = ojson::array();
  for (unsigned char c : bytes) arr.push_back(static_cast<int>(c));
  return arr;
}

}  // namespace

ChatRenderer MakeChatRenderer(std::shared_ptr<const LoadedChatTemplate> chat_template) {
  return [chat_template](const ojson& messages, const ojson& tools, bool add_generation_prompt,
                         bool continue_final_message,
                         const ojson& kwargs) -> absl::StatusOr<std::string> {
    const bool has_tools = !tools.is_null();
    const ChatTemplate* t = chat_template->Select(has_tools);
    if (t == nullptr) return absl::FailedPreconditionError("the model has no chat template");
    ChatTemplateInputs inputs;
    inputs.messages = messages;
    if (has_tools) inputs.tools = tools;
    inputs.add_generation_prompt = add_generation_prompt && !continue_final_message;
    if (kwargs.is_object()) inputs.extra_kwargs = kwargs;
    inputs.bos_token = chat_template->bos_token;
    inputs.eos_token = chat_template->eos_token;
    inputs.unk_token = chat_template->unk_token;
    inputs.pad_token = chat_template->pad_token;
    absl::StatusOr<std::string> text = ApplyChatTemplate(*t, inputs);
    if (!text.ok() || !continue_final_message) return text;
    const ojson& last = messages.back();
    if (!last.contains("content") || !last["content"].is_string()) {
      return absl::InvalidArgumentError(
          "continue_final_message needs a final message with string content");
    }
    const std::string content = last["content"].get<std::string>();
    size_t pos = content.empty() ? std::string::npos : text->rfind(content);
    if (pos == std::string::npos) {
      return absl::InvalidArgumentError(
          "continue_final_message: the final message's content does not appear in the "
          "rendered chat");
    }
    return text->substr(0, pos + content.size());
  };
}

void RespondError(ResponseSink& sink, const ApiError& error) {
  sink.Respond(error.status, kJson, ErrorBody(error));
}

struct OpenAiService::Shared {
  std::atomic<int64_t> live_engine_requests{0};
  std::atomic<int64_t> prompt_tokens{0};
  std::atomic<int64_t> generation_tokens{0};
  std::atomic<int64_t> streams_open{0};
  std::mutex mu;
  std::map<int, int64_t> responses_by_status;  // guarded by mu
};

// One generation exchange: n engine requests per prompt, their outputs folded into one HTTP
// response (complete or streamed). Lives on the sink's executor; engine callbacks post to it.
class OpenAiService::Job : public std::enable_shared_from_this<OpenAiService::Job> {
 public:
  struct ToolCall {
    std::string id, name, arguments;
  };
  struct Choice {
    int index = 0;
    int prompt_index = 0;
    GenerateRequest request;
    bool submitted = false;
    bool finished = false;
    FinishReason finish = FinishReason::kNone;
    std::string stop_reason;
    int32_t stop_token_id = -1;
    std::string content;
    std::string reasoning;
    std::vector<ToolCall> tool_calls;
    ojson logprobs;  // chat: content array; completions: the four arrays
    int64_t completion_tokens = 0;
    int64_t cached_tokens = 0;
    size_t text_offset = 0;  // completions: bytes of text so far (echo included)
    std::string echo;        // completions: prompt text to prepend
    std::unique_ptr<OutputParser> parser;
  };

  // vLLM's stop_reason: the matched stop string, the stop token id, or null (EOS, length, ...).
  static ojson StopReasonJson(const Choice& c) {
    if (!c.stop_reason.empty()) return ojson(c.stop_reason);
    if (c.stop_token_id >= 0) return ojson(c.stop_token_id);
    return ojson();
  }

  Job(bool chat, Engine& engine, const Tokenizer& tokenizer, std::shared_ptr<Shared> shared,
      std::shared_ptr<ResponseSink> sink, std::string model, const CommonRequest& common)
      : chat_(chat),
        engine_(engine),
        tokenizer_(tokenizer),
        shared_(std::move(shared)),
        sink_(std::move(sink)),
        id_(absl::StrCat(chat ? "chatcmpl-" : "cmpl-", RandomHex(32))),
        created_(UnixSeconds()),
        model_(std::move(model)),
        stream_(common.stream),
        include_usage_(common.include_usage),
        continuous_usage_(common.continuous_usage),
        logprobs_(common.logprobs) {}

  std::vector<Choice>& choices() { return choices_; }
  std::vector<int64_t>& prompt_tokens() { return prompt_tokens_; }
  const std::string& id() const { return id_; }

  // Submits every choice and starts the response. Runs on the sink's executor.
  void Start() {
    for (size_t i = 0; i < choices_.size(); ++i) {
      Choice& c = choices_[i];
      c.request.request_id = absl::StrCat(id_, "-", i);
      std::shared_ptr<Job> self = shared_from_this();
      std::shared_ptr<Shared> shared = shared_;
      // Counted before Submit: an engine may deliver the final output before Submit returns.
      shared->live_engine_requests.fetch_add(1);
      absl::Status st = engine_.Submit(c.request, [self, shared, i](GenerateOutput out) {
        if (out.finished) shared->live_engine_requests.fetch_sub(1);
        std::shared_ptr<ResponseSink> sink = self->sink_;
        sink->Post([self, i, out = std::move(out)]() mutable { self->OnOutput(i, std::move(out)); });
      });
      if (!st.ok()) {
        shared->live_engine_requests.fetch_sub(1);
        Fail(FromStatus(st));
        return;
      }
      c.submitted = true;
    }
    for (const int64_t n : prompt_tokens_) shared_->prompt_tokens.fetch_add(n);
    std::weak_ptr<Job> weak = weak_from_this();
    sink_->OnClose([weak] {
      if (auto job = weak.lock()) job->ClientGone();
    });
    if (!stream_) return;
    sink_->StartStream(200, "text/event-stream");
    shared_->streams_open.fetch_add(1);
    if (chat_) {
      for (Choice& c : choices_) {
        ojson delta;
        delta["role"] = "assistant";
        delta["content"] = "";
        SendChunk(c, std::move(delta), nullptr, ojson());
      }
    }
  }

 private:
  void ClientGone() {
    if (done_) return;
    client_gone_ = true;
    AbortUnfinished();
  }

  void AbortUnfinished() {
    for (Choice& c : choices_) {
      if (c.submitted && !c.finished) engine_.Abort(c.request.request_id);
    }
  }

  // Ends the exchange with an error (before the response started, or as an SSE error event).
  void Fail(const ApiError& error) {
    if (done_) return;
    done_ = true;
    AbortUnfinished();
    if (client_gone_) return;
    if (stream_ && started_stream()) {
      sink_->Write(absl::StrCat("data: ", ErrorBody(error), "\n\n"));
      sink_->Write("data: [DONE]\n\n");
      EndStream();
    } else {
      RespondError(*sink_, error);
    }
  }

  bool started_stream() const { return stream_ && all_submitted(); }
  bool all_submitted() const {
    for (const Choice& c : choices_) {
      if (!c.submitted) return false;
    }
    return true;
  }

  void EndStream() {
    sink_->EndStream();
    shared_->streams_open.fetch_sub(1);
  }

  void OnOutput(size_t i, GenerateOutput out) {
    Choice& c = choices_[i];
    if (c.finished) return;
    if (out.finished) c.finished = true;
    if (done_ || client_gone_) return;
    if (!out.status.ok()) {
      Fail(FromStatus(out.status));
      return;
    }
    c.completion_tokens += static_cast<int64_t>(out.token_ids.size());
    shared_->generation_tokens.fetch_add(static_cast<int64_t>(out.token_ids.size()));
    if (out.finished) {
      c.finish = out.finish_reason;
      c.stop_reason = out.stop_reason;
      c.stop_token_id = out.stop_token_id;
      c.cached_tokens = out.usage.cached_prompt_tokens;
    }
    ojson logprobs = FormatLogprobs(c, out);
    if (chat_) {
      ParsedDelta delta;
      if (c.parser) {
        delta = c.parser->Push(out.text);
        if (out.finished) delta.Append(c.parser->Finish());
      } else {
        delta.content = std::move(out.text);
      }
      AccumulateChat(c, delta);
      if (stream_ && (!delta.empty() || out.finished || !logprobs.is_null())) {
        SendChunk(c, ChatDelta(delta), out.finished ? ChatFinish(c) : nullptr,
                  std::move(logprobs));
      }
    } else {
      std::string text = std::move(out.text);
      if (!c.echo.empty()) {
        text = c.echo + text;
        c.echo.clear();
      }
      // Without a tokenizer every new token gets its (empty-text) chunk, so clients still see
      // tokens arrive one by one (vLLM sends a chunk per token too).
      const bool token_chunk = tokenizer_.format() == "none" && !out.token_ids.empty();
      if (stream_ && (!text.empty() || out.finished || !logprobs.is_null() || token_chunk)) {
        ojson payload = text;
        SendChunk(c, std::move(payload), out.finished ? FinishReasonText(c.finish) : nullptr,
                  std::move(logprobs));
      }
      if (!stream_) c.content += text;
    }
    for (const Choice& other : choices_) {
      if (!other.finished) return;
    }
    Complete();
  }

  void AccumulateChat(Choice& c, const ParsedDelta& delta) {
    if (!stream_) {
      c.content += delta.content;
      c.reasoning += delta.reasoning_content;
    }
    for (const ToolCallDelta& t : delta.tool_calls) {
      if (t.index >= static_cast<int>(c.tool_calls.size())) c.tool_calls.resize(t.index + 1);
      ToolCall& call = c.tool_calls[t.index];
      if (!t.id.empty()) call.id = t.id;
      if (!t.name.empty()) call.name = t.name;
      call.arguments += t.arguments;
    }
  }

  const char* ChatFinish(const Choice& c) const {
    if (c.finish == FinishReason::kStop && !c.tool_calls.empty()) return "tool_calls";
    return FinishReasonText(c.finish);
  }

  ojson ChatDelta(const ParsedDelta& d) const {
    ojson delta = ojson::object();
    if (!d.reasoning_content.empty()) delta["reasoning_content"] = d.reasoning_content;
    if (!d.content.empty()) delta["content"] = d.content;
    if (!d.tool_calls.empty()) {
      ojson calls = ojson::array();
      for (const ToolCallDelta& t : d.tool_calls) {
        ojson call;
        call["index"] = t.index;
        if (!t.id.empty()) call["id"] = t.id;
        if (!t.name.empty()) call["type"] = "function";
        ojson fn = ojson::object();
        if (!t.name.empty()) fn["name"] = t.name;
        fn["arguments"] = t.arguments;
        call["function"] = std::move(fn);
        calls.push_back(std::move(call));
      }
      delta["tool_calls"] = std::move(calls);
    }
    return delta;
  }

  // Token text for logprobs: the token's own bytes (may be part of a UTF-8 character).
  // Without a tokenizer (token_ids_only): "token_id:N", vLLM's return_tokens_as_token_ids form.
  std::string TokenBytes(int32_t id) const {
    if (tokenizer_.format() == "none") return absl::StrCat("token_id:", id);
    Tokenizer::DecodeState state;
    state.at_start = false;
    state.raw_bytes = true;
    std::string bytes;
    tokenizer_.AppendTokenBytes(id, false, &state, &bytes);
    return bytes;
  }

  // The logprobs of this output's tokens in the endpoint's format (null when not asked), and
  // appends them to the choice's (non-streamed) logprobs.
  ojson FormatLogprobs(Choice& c, const GenerateOutput& out) {
    if (logprobs_ < 0 || out.logprobs.empty()) return nullptr;
    if (chat_) {
      ojson content = ojson::array();
      for (const TokenLogprob& lp : out.logprobs) {
        std::string bytes = TokenBytes(lp.token_id);
        ojson entry;
        entry["token"] = SanitizeUtf8(bytes);
        entry["logprob"] = FiniteLogprob(lp.logprob);
        entry["bytes"] = BytesArray(bytes);
        ojson top = ojson::array();
        for (size_t k = 0; k < lp.top.size() && static_cast<int>(k) < logprobs_; ++k) {
          std::string tb = TokenBytes(lp.top[k].first);
          ojson t;
          t["token"] = SanitizeUtf8(tb);
          t["logprob"] = FiniteLogprob(lp.top[k].second);
          t["bytes"] = BytesArray(tb);
          top.push_back(std::move(t));
        }
        entry["top_logprobs"] = std::move(top);
        content.push_back(entry);
        if (!stream_) {
          if (c.logprobs.is_null()) c.logprobs = ojson::array();
          c.logprobs.push_back(std::move(entry));
        }
      }
      ojson result;
      result["content"] = std::move(content);
      return result;
    }
    ojson result;
    result["text_offset"] = ojson::array();
    result["token_logprobs"] = ojson::array();
    result["tokens"] = ojson::array();
    result["top_logprobs"] = ojson::array();
    if (!c.echo.empty()) c.text_offset += c.echo.size();
    for (const TokenLogprob& lp : out.logprobs) {
      std::string bytes = TokenBytes(lp.token_id);
      std::string token = SanitizeUtf8(bytes);
      result["text_offset"].push_back(c.text_offset);
      c.text_offset += bytes.size();
      result["token_logprobs"].push_back(FiniteLogprob(lp.logprob));
      result["tokens"].push_back(token);
      ojson top = ojson::object();
      for (size_t k = 0; k < lp.top.size() && static_cast<int>(k) < logprobs_; ++k) {
        top[SanitizeUtf8(TokenBytes(lp.top[k].first))] = FiniteLogprob(lp.top[k].second);
      }
      top[token] = FiniteLogprob(lp.logprob);  // the sampled token is always listed (vLLM)
      result["top_logprobs"].push_back(std::move(top));
    }
    if (!stream_) {
      if (c.logprobs.is_null()) {
        c.logprobs = result;
      } else {
        for (const char* key : {"text_offset", "token_logprobs", "tokens", "top_logprobs"}) {
          for (auto& v : result[key]) c.logprobs[key].push_back(v);
        }
      }
    }
    return result;
  }

  ojson UsageJson() const {
    int64_t prompt = 0, cached = 0, completion = 0;
    for (int64_t n : prompt_tokens_) prompt += n;
    std::vector<bool> seen(prompt_tokens_.size(), false);
    for (const Choice& c : choices_) {
      completion += c.completion_tokens;
      if (!seen[c.prompt_index]) {
        seen[c.prompt_index] = true;
        cached += c.cached_tokens;
      }
    }
    ojson usage;
    usage["prompt_tokens"] = prompt;
    usage["total_tokens"] = prompt + completion;
    usage["completion_tokens"] = completion;
    usage["prompt_tokens_details"]["cached_tokens"] = cached;
    return usage;
  }

  // One SSE event for choice `c`: chat `payload` is the delta object, completions the text.
  void SendChunk(const Choice& c, ojson payload, const char* finish, ojson logprobs) {
    ojson chunk;
    chunk["id"] = id_;
    chunk["object"] = chat_ ? "chat.completion.chunk" : "text_completion";
    chunk["created"] = created_;
    chunk["model"] = model_;
    ojson choice;
    choice["index"] = c.index;
    if (chat_) {
      choice["delta"] = std::move(payload);
    } else {
      choice["text"] = std::move(payload);
    }
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = finish == nullptr ? ojson() : ojson(finish);
    if (finish != nullptr) {
      choice["stop_reason"] = StopReasonJson(c);
    }
    chunk["choices"] = ojson::array({std::move(choice)});
    if (include_usage_) chunk["usage"] = continuous_usage_ ? UsageJson() : ojson();
    sink_->Write(absl::StrCat("data: ", Dump(chunk), "\n\n"));
  }

  void Complete() {
    done_ = true;
    if (stream_) {
      if (include_usage_) {
        ojson chunk;
        chunk["id"] = id_;
        chunk["object"] = chat_ ? "chat.completion.chunk" : "text_completion";
        chunk["created"] = created_;
        chunk["model"] = model_;
        chunk["choices"] = ojson::array();
        chunk["usage"] = UsageJson();
        sink_->Write(absl::StrCat("data: ", Dump(chunk), "\n\n"));
      }
      sink_->Write("data: [DONE]\n\n");
      EndStream();
      return;
    }
    ojson body;
    body["id"] = id_;
    body["object"] = chat_ ? "chat.completion" : "text_completion";
    body["created"] = created_;
    body["model"] = model_;
    ojson choices = ojson::array();
    for (const Choice& c : choices_) {
      ojson choice;
      choice["index"] = c.index;
      if (chat_) {
        ojson message;
        message["role"] = "assistant";
        message["content"] =
            c.content.empty() && !c.tool_calls.empty() ? ojson() : ojson(c.content);
        message["reasoning_content"] = c.reasoning.empty() ? ojson() : ojson(c.reasoning);
        if (!c.tool_calls.empty()) {
          ojson calls = ojson::array();
          for (const ToolCall& t : c.tool_calls) {
            ojson call;
            call["id"] = t.id;
            call["type"] = "function";
            call["function"]["name"] = t.name;
            call["function"]["arguments"] = t.arguments;
            calls.push_back(std::move(call));
          }
          message["tool_calls"] = std::move(calls);
        }
        choice["message"] = std::move(message);
        choice["logprobs"] = c.logprobs.is_null() ? ojson()
                                                  : ojson({{"content", c.logprobs}});
        choice["finish_reason"] = ChatFinish(c) ? ojson(ChatFinish(c)) : ojson();
      } else {
        choice["text"] = c.content;
        choice["logprobs"] = c.logprobs;
        const char* finish = FinishReasonText(c.finish);
        choice["finish_reason"] = finish ? ojson(finish) : ojson();
      }
      choice["stop_reason"] = StopReasonJson(c);
      choices.push_back(std::move(choice));
    }
    body["choices"] = std::move(choices);
    body["usage"] = UsageJson();
    sink_->Respond(200, kJson, Dump(body));
  }

  const bool chat_;
  Engine& engine_;
  const Tokenizer& tokenizer_;
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<ResponseSink> sink_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  const bool stream_;
  const bool include_usage_;
  const bool continuous_usage_;
  const int logprobs_;
  std::vector<Choice> choices_;
  std::vector<int64_t> prompt_tokens_;  // per prompt
  bool done_ = false;
  bool client_gone_ = false;
};

OpenAiService::OpenAiService(Engine& engine, const Tokenizer& tokenizer,
                             OpenAiServiceOptions options)
    : engine_(engine),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      shared_(std::make_shared<Shared>()) {}

OpenAiService::~OpenAiService() = default;

int64_t OpenAiService::live_engine_requests() const {
  return shared_->live_engine_requests.load();
}

void OpenAiService::CountResponse(int status) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  ++shared_->responses_by_status[status];
}

std::optional<ApiError> OpenAiService::CheckModel(const std::string& requested,
                                                  ModelInfo* out) const {
  if (!requested.empty()) {
    bool known = false;
    for (const std::string& name : options_.served_model_names) known |= name == requested;
    if (!known) {
      ApiError e;
      e.status = 404;
      e.message = absl::StrCat("The model `", requested, "` does not exist.");
      e.param = "model";
      e.code = "model_not_found";
      return e;
    }
  }
  *out = engine_.model_info();
  if (draining_ || !out->ready) {
    return ServerError(503, draining_ ? "the server is shutting down; retry on another replica"
                                      : "the model is not ready yet (workers are loading); "
                                        "retry later");
  }
  return std::nullopt;
}

namespace {

// Parses the body into JSON, with errors for invalid UTF-8 and malformed JSON.
std::optional<ApiError> ParseBody(absl::string_view body, ojson* out) {
  if (!IsValidUtf8(body)) return BadRequest("the request body is not valid UTF-8");
  try {
    *out = ojson::parse(body.begin(), body.end());
  } catch (const ojson::exception& e) {
    return BadRequest(absl::StrCat("the request body is not valid JSON: ", e.what()));
  }
  return std::nullopt;
}

// Checks the prompt length and resolves max_tokens against the context (errors name both).
std::optional<ApiError> ResolveMaxTokens(const CommonRequest& req, int64_t prompt_len,
                                         int64_t max_model_len, absl::string_view prompt_param,
                                         int* max_tokens) {
  if (prompt_len == 0) return BadRequest("the prompt is empty", std::string(prompt_param));
  if (max_model_len > 0 && prompt_len >= max_model_len) {
    return BadRequest(absl::StrCat("This model's maximum context length is ", max_model_len,
                                   " tokens. However, your request has ", prompt_len,
                                   " input tokens. Please reduce the length of the input."),
                      std::string(prompt_param));
  }
  int64_t room = max_model_len > 0 ? max_model_len - prompt_len : (1 << 30);
  if (req.max_tokens) {
    if (*req.max_tokens > room) {
      return BadRequest(absl::StrCat("'max_tokens' is too large: ", *req.max_tokens,
                                     ". This model's maximum context length is ", max_model_len,
                                     " tokens and your request has ", prompt_len,
                                     " input tokens (", *req.max_tokens, " > ", max_model_len,
                                     " - ", prompt_len, ")."),
                        "max_tokens");
    }
    *max_tokens = *req.max_tokens;
  } else if (req.default_max_tokens > 0) {
    *max_tokens = static_cast<int>(std::min<int64_t>(req.default_max_tokens, room));
  } else {
    *max_tokens = static_cast<int>(std::min<int64_t>(room, std::numeric_limits<int32_t>::max()));
  }
  return std::nullopt;
}

GenerateRequest MakeRequest(const CommonRequest& req, std::vector<int32_t> ids, int max_tokens,
                            int sample_index) {
  GenerateRequest g;
  g.prompt_ids = std::move(ids);
  g.sampling = req.sampling;
  g.sampling.max_tokens = max_tokens;
  // The engine returns logprobs when asked for >= 1; top_logprobs 0 still wants the sampled one.
  g.sampling.logprobs = req.logprobs < 0 ? 0 : std::max(1, req.logprobs);
  // n > 1 with a seed: choice i samples with seed + i (vLLM), so choices differ but repeat.
  if (g.sampling.seed) g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(sample_index);
  g.skip_special_tokens = req.skip_special_tokens;
  return g;
}

}  // namespace

void OpenAiService::Handle(absl::string_view method, absl::string_view path,
                           absl::string_view body, std::shared_ptr<ResponseSink> sink) {
  auto not_allowed = [&] {
    ApiError e;
    e.status = 405;
    e.message = absl::StrCat("method ", method, " is not allowed on ", path);
    RespondError(*sink, e);
  };
  if (path == "/v1/chat/completions" || path == "/v1/completions") {
    if (method != "POST") return not_allowed();
    if (path == "/v1/chat/completions") return HandleChat(body, std::move(sink));
    return HandleCompletion(body, std::move(sink));
  }
  if (path == "/tokenize" || path == "/detokenize") {
    if (method != "POST") return not_allowed();
    if (path == "/tokenize") return HandleTokenize(body, std::move(sink));
    return HandleDetokenize(body, std::move(sink));
  }
  if (path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) {
    if (method != "GET") return not_allowed();
    return HandleModels(path, std::move(sink));
  }
  if (path == "/health") {
    if (method != "GET" && method != "HEAD") return not_allowed();
    bool ready = !draining_ && engine_.model_info().ready;
    sink->Respond(ready ? 200 : 503, "text/plain", "");
    return;
  }
  if (path == "/metrics") {
    if (method != "GET") return not_allowed();
    return HandleMetrics(std::move(sink));
  }
  if (path == "/version") {
    if (method != "GET") return not_allowed();
    sink->Respond(200, kJson, "{\"version\":\"0.1.0\"}");
    return;
  }
  ApiError e;
  e.status = 404;
  e.message = absl::StrCat("no route for ", method, " ", path);
  e.code = "not_found";
  RespondError(*sink, e);
}

void OpenAiService::HandleModels(absl::string_view path, std::shared_ptr<ResponseSink> sink) {
  ModelInfo info = engine_.model_info();
  auto card = [&](const std::string& name) {
    ojson m;
    m["id"] = name;
    m["object"] = "model";
    m["created"] = UnixSeconds();
    m["owned_by"] = "tessera";
    m["root"] = options_.served_model_names.empty() ? name : options_.served_model_names[0];
    m["parent"] = nullptr;
    m["max_model_len"] = info.max_model_len;
    return m;
  };
  if (path == "/v1/models") {
    ojson body;
    body["object"] = "list";
    body["data"] = ojson::array();
    for (const std::string& name : options_.served_model_names) body["data"].push_back(card(name));
    sink->Respond(200, kJson, Dump(body));
    return;
  }
  std::string id(path.substr(std::string("/v1/models/").size()));
  for (const std::string& name : options_.served_model_names) {
    if (name == id) {
      sink->Respond(200, kJson, Dump(card(name)));
      return;
    }
  }
  ApiError e;
  e.status = 404;
  e.message = absl::StrCat("The model `", id, "` does not exist.");
  e.code = "model_not_found";
  RespondError(*sink, e);
}

void OpenAiService::HandleMetrics(std::shared_ptr<ResponseSink> sink) {
  std::string text;
  absl::StrAppend(&text,
                  "# HELP tessera_http_responses_total HTTP responses sent, by status code.\n"
                  "# TYPE tessera_http_responses_total counter\n");
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    for (const auto& [status, count] : shared_->responses_by_status) {
      absl::StrAppend(&text, "tessera_http_responses_total{code=\"", status, "\"} ", count, "\n");
    }
  }
  absl::StrAppend(
      &text,
      "# HELP tessera_http_engine_requests Engine requests submitted by the HTTP API and not "
      "finished.\n# TYPE tessera_http_engine_requests gauge\ntessera_http_engine_requests ",
      shared_->live_engine_requests.load(), "\n",
      "# HELP tessera_http_streams Streaming (SSE) responses in progress.\n"
      "# TYPE tessera_http_streams gauge\ntessera_http_streams ",
      shared_->streams_open.load(), "\n",
      "# HELP tessera_http_prompt_tokens_total Prompt tokens of accepted HTTP requests.\n"
      "# TYPE tessera_http_prompt_tokens_total counter\ntessera_http_prompt_tokens_total ",
      shared_->prompt_tokens.load(), "\n",
      "# HELP tessera_http_generation_tokens_total Tokens generated for HTTP requests.\n"
      "# TYPE tessera_http_generation_tokens_total counter\n"
      "tessera_http_generation_tokens_total ",
      shared_->generation_tokens.load(), "\n");
  if (options_.metrics_text) text += options_.metrics_text();
  sink->Respond(200, "text/plain; version=0.0.4; charset=utf-8", std::move(text));
}

namespace {
// Whether a chat request's tools reach the template and the output parser.
bool UsesTools(const ChatRequest& req) {
  return !req.tools.is_null() && req.tool_choice != "none";
}
}  // namespace

std::optional<ApiError> OpenAiService::RenderChatPrompt(const ChatRequest& req,
                                                        std::string* prompt) const {
  if (!options_.render_chat) {
    return BadRequest("this model has no chat template; use /v1/completions or start the server "
                      "with a chat template");
  }
  absl::StatusOr<std::string> text =
      options_.render_chat(req.messages, UsesTools(req) ? req.tools : ojson(),
                           req.add_generation_prompt, req.continue_final_message,
                           req.chat_template_kwargs);
  if (!text.ok()) {
    return BadRequest(absl::StrCat("chat template: ", text.status().message()), "messages");
  }
  *prompt = *std::move(text);
  return std::nullopt;
}

void OpenAiService::HandleChat(absl::string_view body, std::shared_ptr<ResponseSink> sink) {
  ojson parsed;
  if (auto err = ParseBody(body, &parsed)) return RespondError(*sink, *err);
  ChatRequest req;
  if (auto err = ParseChatRequest(parsed, &req)) return RespondError(*sink, *err);
  ModelInfo info;
  if (auto err = CheckModel(req.model, &info)) return RespondError(*sink, *err);
  if (options_.token_ids_only) {
    return RespondError(*sink, BadRequest(absl::StrCat(
        "this server has no tokenizer (", options_.no_tokenizer_reason,
        "), so chat is unavailable; send token-id prompts to /v1/completions")));
  }
  std::string prompt;
  if (auto err = RenderChatPrompt(req, &prompt)) return RespondError(*sink, *err);
  const bool parse_tools = UsesTools(req);
  std::vector<int32_t> ids =
      tokenizer_.Encode(prompt, /*allow_special=*/true, req.add_special_tokens);
  int max_tokens = 0;
  if (auto err = ResolveMaxTokens(req, static_cast<int64_t>(ids.size()), info.max_model_len,
                                  "messages", &max_tokens)) {
    return RespondError(*sink, *err);
  }
  std::string model =
      options_.served_model_names.empty() ? info.name : options_.served_model_names[0];
  auto job = std::make_shared<Job>(true, engine_, tokenizer_, shared_, sink, model, req);
  job->prompt_tokens().push_back(static_cast<int64_t>(ids.size()));
  const bool use_parser = options_.output_format != OutputFormat::kPlain;
  for (int i = 0; i < req.n; ++i) {
    Job::Choice c;
    c.index = i;
    c.request = MakeRequest(req, ids, max_tokens, i);
    if (use_parser) {
      OutputParser::Options popts;
      popts.parse_reasoning = options_.parse_reasoning;
      popts.parse_tools = parse_tools;
      popts.starts_in_reasoning = PromptEndsInReasoning(options_.output_format, prompt);
      popts.tools = json::parse(req.tools.dump());
      c.parser = OutputParser::Create(options_.output_format, std::move(popts));
      c.request.skip_special_tokens = false;
    }
    job->choices().push_back(std::move(c));
  }
  job->Start();
}

void OpenAiService::HandleTokenize(absl::string_view body, std::shared_ptr<ResponseSink> sink) {
  ojson parsed;
  if (auto err = ParseBody(body, &parsed)) return RespondError(*sink, *err);
  TokenizeRequest req;
  if (auto err = ParseTokenizeRequest(parsed, &req)) return RespondError(*sink, *err);
  ModelInfo info;
  if (auto err = CheckModel(req.model, &info)) return RespondError(*sink, *err);
  if (options_.token_ids_only) {
    return RespondError(*sink, BadRequest(absl::StrCat("this server has no tokenizer (",
                                                       options_.no_tokenizer_reason, ")")));
  }
  std::string text = req.prompt;
  if (req.is_chat) {
    if (auto err = RenderChatPrompt(req.chat, &text)) return RespondError(*sink, *err);
  }
  const std::vector<int32_t> ids =
      tokenizer_.Encode(text, /*allow_special=*/true, req.add_special_tokens);
  ojson out;
  out["count"] = ids.size();
  out["max_model_len"] = info.max_model_len;
  out["tokens"] = ids;
  if (req.return_token_strs) {
    out["token_strs"] = ojson::array();
    for (int32_t id : ids) {
      std::optional<std::string> token = tokenizer_.IdToToken(id);
      out["token_strs"].push_back(token ? SanitizeUtf8(*token) : std::string());
    }
  } else {
    out["token_strs"] = nullptr;
  }
  sink->Respond(200, kJson, Dump(out));
}

void OpenAiService::HandleDetokenize(absl::string_view body, std::shared_ptr<ResponseSink> sink) {
  ojson parsed;
  if (auto err = ParseBody(body, &parsed)) return RespondError(*sink, *err);
  DetokenizeRequest req;
  if (auto err = ParseDetokenizeRequest(parsed, &req)) return RespondError(*sink, *err);
  ModelInfo info;
  if (auto err = CheckModel(req.model, &info)) return RespondError(*sink, *err);
  if (options_.token_ids_only) {
    return RespondError(*sink, BadRequest(absl::StrCat("this server has no tokenizer (",
                                                       options_.no_tokenizer_reason, ")")));
  }
  const int32_t vocab = info.vocab_size > 0 ? info.vocab_size : tokenizer_.vocab_size();
  for (size_t i = 0; i < req.tokens.size(); ++i) {
    if (req.tokens[i] >= vocab) {
      return RespondError(*sink, BadRequest(absl::StrCat("tokens[", i, "] = ", req.tokens[i],
                                                         " is outside the vocabulary (size ",
                                                         vocab, ")"),
                                            "tokens"));
    }
  }
  absl::StatusOr<std::string> text = tokenizer_.Decode(req.tokens, /*skip_special_tokens=*/false);
  if (!text.ok()) {
    return RespondError(*sink, BadRequest(std::string(text.status().message()), "tokens"));
  }
  ojson out;
  out["prompt"] = *text;
  sink->Respond(200, kJson, Dump(out));
}

void OpenAiService::HandleCompletion(absl::string_view body, std::shared_ptr<ResponseSink> sink) {
  ojson parsed;
  if (auto err = ParseBody(body, &parsed)) return RespondError(*sink, *err);
  CompletionRequest req;
  if (auto err = ParseCompletionRequest(parsed, &req)) return RespondError(*sink, *err);
  ModelInfo info;
  if (auto err = CheckModel(req.model, &info)) return RespondError(*sink, *err);
  if (options_.token_ids_only) {
    for (const PromptInput& in : req.prompts) {
      if (!in.is_ids) {
        return RespondError(
            *sink, BadRequest(absl::StrCat("this server has no tokenizer (",
                                           options_.no_tokenizer_reason,
                                           "); send the prompt as an array of token ids"),
                              "prompt"));
      }
    }
  }
  std::string model =
      options_.served_model_names.empty() ? info.name : options_.served_model_names[0];
  auto job = std::make_shared<Job>(false, engine_, tokenizer_, shared_, sink, model, req);
  const int32_t vocab = info.vocab_size > 0 ? info.vocab_size : tokenizer_.vocab_size();
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    PromptInput& in = req.prompts[p];
    std::vector<int32_t> ids =
        in.is_ids ? in.ids
                  : tokenizer_.Encode(in.text, /*allow_special=*/true, req.add_special_tokens);
    for (int32_t id : ids) {
      if (id >= vocab) {
        return RespondError(*sink, BadRequest(absl::StrCat("prompt token id ", id,
                                                           " is outside the vocabulary (size ",
                                                           vocab, ")"),
                                              "prompt"));
      }
    }
    int max_tokens = 0;
    if (auto err = ResolveMaxTokens(req, static_cast<int64_t>(ids.size()), info.max_model_len,
                                    "prompt", &max_tokens)) {
      return RespondError(*sink, *err);
    }
    std::string echo;
    if (req.echo) {
      if (in.is_ids) {
        auto text = tokenizer_.Decode(in.ids, false);
        if (text.ok()) echo = SanitizeUtf8(*text);
      } else {
        echo = in.text;
      }
    }
    job->prompt_tokens().push_back(static_cast<int64_t>(ids.size()));
    for (int i = 0; i < req.n; ++i) {
      Job::Choice c;
      c.index = static_cast<int>(p) * req.n + i;
      c.prompt_index = static_cast<int>(p);
      c.request = MakeRequest(req, ids, max_tokens, i);
      c.echo = echo;
      job->choices().push_back(std::move(c));
    }
  }
  job->Start();
}

}  // namespace tessera::api
