#include "coordinator/api/openai_protocol.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera::api {
namespace {

using json = nlohmann::ordered_json;

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "integer";
    case json::value_t::number_float: return "number";
    default: return "value";
  }
}

ApiError TypeError(absl::string_view name, absl::string_view want, const json& got) {
  return BadRequest(absl::StrCat("'", name, "' must be ", want, ", got ", TypeName(got)),
                    std::string(name));
}

// The field `name` of `body`, or nullptr when missing or null (null means "default").
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> GetBool(const json& body, const char* name, bool* out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return TypeError(name, "a boolean", *v);
  *out = v->get<bool>();
  return std::nullopt;
}

// Integers may be sent as integral floats (5.0), as pydantic accepts.
std::optional<ApiError> ToInt(const json& v, absl::string_view name, int64_t lo, int64_t hi,
                              int64_t* out) {
  int64_t value = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) {
      return BadRequest(absl::StrCat("'", name, "' is out of range"), std::string(name));
    }
    value = v.get<int64_t>();
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    if (!(std::floor(d) == d) || std::fabs(d) > 9.0e18) return TypeError(name, "an integer", v);
    value = static_cast<int64_t>(d);
  } else {
    return TypeError(name, "an integer", v);
  }
  if (value < lo || value > hi) {
    std::string range = hi == std::numeric_limits<int64_t>::max()
                            ? absl::StrCat(">= ", lo)
                            : absl::StrCat("between ", lo, " and ", hi);
    return BadRequest(absl::StrCat("'", name, "' must be ", range, ", got ", value),
                      std::string(name));
  }
  *out = value;
  return std::nullopt;
}

std::optional<ApiError> GetInt(const json& body, const char* name, int64_t lo, int64_t hi,
                               std::optional<int64_t>* out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  int64_t value = 0;
  if (auto err = ToInt(*v, name, lo, hi, &value)) return err;
  *out = value;
  return std::nullopt;
}

// A float in [lo, hi] (lo excluded when lo_open).
std::optional<ApiError> GetFloat(const json& body, const char* name, double lo, double hi,
                                 bool lo_open, float* out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return TypeError(name, "a number", *v);
  double d = v->get<double>();
  bool ok = std::isfinite(d) && (lo_open ? d > lo : d >= lo) && d <= hi;
  if (!ok) {
    std::string range;
    if (hi == std::numeric_limits<double>::infinity()) {
      range = absl::StrCat(lo_open ? "> " : ">= ", lo);
    } else {
      range = absl::StrCat("in ", lo_open ? "(" : "[", lo, ", ", hi, "]");
    }
    return BadRequest(absl::StrCat("'", name, "' must be ", range, ", got ", v->dump()), name);
  }
  *out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<ApiError> GetString(const json& body, const char* name, std::string* out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return TypeError(name, "a string", *v);
  *out = v->get<std::string>();
  return std::nullopt;
}

#define TESSERA_API_TRY(expr)                  \
  do {                                         \
    if (auto api_err_ = (expr)) return api_err_; \
  } while (0)

// Fields shared by chat and completions.
std::optional<ApiError> ParseCommon(const json& body, CommonRequest* out) {
  if (!body.is_object()) return BadRequest("the request body must be a JSON object");
  TESSERA_API_TRY(GetString(body, "model", &out->model));
  std::optional<int64_t> n;
  TESSERA_API_TRY(GetInt(body, "n", 1, kMaxN, &n));
  if (n) out->n = static_cast<int>(*n);
  TESSERA_API_TRY(GetBool(body, "stream", &out->stream));
  if (const json* so = Field(body, "stream_options")) {
    if (!so->is_object()) return TypeError("stream_options", "an object", *so);
    if (!out->stream) {
      return BadRequest("'stream_options' is only allowed when 'stream' is true",
                        "stream_options");
    }
    if (auto err = GetBool(*so, "include_usage", &out->include_usage)) {
      err->param = "stream_options.include_usage";
      err->message = "'stream_options.include_usage' must be a boolean";
      return err;
    }
    if (auto err = GetBool(*so, "continuous_usage_stats", &out->continuous_usage)) {
      err->param = "stream_options.continuous_usage_stats";
      err->message = "'stream_options.continuous_usage_stats' must be a boolean";
      return err;
    }
  }
  RequestSampling& s = out->sampling;
  TESSERA_API_TRY(GetFloat(body, "temperature", 0.0, std::numeric_limits<double>::infinity(),
                           false, &s.temperature));
  TESSERA_API_TRY(GetFloat(body, "top_p", 0.0, 1.0, true, &s.top_p));
  std::optional<int64_t> top_k;
  TESSERA_API_TRY(GetInt(body, "top_k", -1, std::numeric_limits<int32_t>::max(), &top_k));
  if (top_k) s.top_k = *top_k <= 0 ? 0 : static_cast<int>(*top_k);
  TESSERA_API_TRY(GetFloat(body, "min_p", 0.0, 1.0, false, &s.min_p));
  TESSERA_API_TRY(GetFloat(body, "presence_penalty", -2.0, 2.0, false, &s.presence_penalty));
  TESSERA_API_TRY(GetFloat(body, "frequency_penalty", -2.0, 2.0, false, &s.frequency_penalty));
  TESSERA_API_TRY(GetFloat(body, "repetition_penalty", 0.0,
                           std::numeric_limits<double>::infinity(), true,
                           &s.repetition_penalty));
  std::optional<int64_t> seed;
  TESSERA_API_TRY(GetInt(body, "seed", std::numeric_limits<int64_t>::min(),
                         std::numeric_limits<int64_t>::max(), &seed));
  if (seed) s.seed = static_cast<uint64_t>(*seed);
  TESSERA_API_TRY(GetBool(body, "ignore_eos", &s.ignore_eos));
  std::optional<int64_t> min_tokens;
  TESSERA_API_TRY(
      GetInt(body, "min_tokens", 0, std::numeric_limits<int32_t>::max(), &min_tokens));
  if (min_tokens) s.min_tokens = static_cast<int>(*min_tokens);
  TESSERA_API_TRY(GetBool(body, "skip_special_tokens", &out->skip_special_tokens));
  TESSERA_API_TRY(GetBool(body, "echo", &out->echo));

  if (const json* stop = Field(body, "stop")) {
    if (stop->is_string()) {
      s.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const json& item : *stop) {
        if (!item.is_string()) return TypeError("stop", "a string or an array of strings", item);
        s.stop.push_back(item.get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or an array of strings", *stop);
    }
    if (static_cast<int>(s.stop.size()) > kMaxStopSequences) {
      return BadRequest(absl::StrCat("too many stop sequences: ", s.stop.size(), " (at most ",
                                     kMaxStopSequences, ")"),
                        "stop");
    }
    for (size_t i = 0; i < s.stop.size(); ++i) {
      if (s.stop[i].empty()) return BadRequest(absl::StrCat("'stop[", i, "]' is empty"), "stop");
    }
  }
  if (const json* ids = Field(body, "stop_token_ids")) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "an array of integers", *ids);
    for (const json& item : *ids) {
      int64_t id = 0;
      TESSERA_API_TRY(ToInt(item, "stop_token_ids", 0, std::numeric_limits<int32_t>::max(), &id));
      s.stop_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (const json* rf = Field(body, "response_format")) {
    std::string type;
    if (rf->is_object()) GetString(*rf, "type", &type);
    if (type != "text") {
      return BadRequest(
          absl::StrCat("response_format type '", type,
                       "' is not supported: this server has no structured-output decoding; "
                       "omit response_format or use {\"type\": \"text\"}"),
          "response_format");
    }
  }
  return std::nullopt;
}

// Text of a message's content: a string, null, or an array of {"type": "text", "text": ...}.
std::optional<ApiError> ContentText(const json& content, size_t index, json* out) {
  std::string param = absl::StrCat("messages[", index, "].content");
  if (content.is_null() || content.is_string()) {
    *out = content;
    return std::nullopt;
  }
  if (!content.is_array()) return TypeError(param, "a string or an array of content parts", content);
  std::string text;
  for (size_t p = 0; p < content.size(); ++p) {
    const json& part = content[p];
    std::string part_param = absl::StrCat(param, "[", p, "]");
    if (!part.is_object()) return TypeError(part_param, "an object", part);
    std::string type;
    if (auto err = GetString(part, "type", &type)) return BadRequest(err->message, part_param);
    if (type != "text") {
      return BadRequest(absl::StrCat("content part type '", type, "' in ", part_param,
                                     " is not supported: this model takes text only"),
                        part_param);
    }
    const json* t = Field(part, "text");
    if (t == nullptr || !t->is_string()) {
      return BadRequest(absl::StrCat("'", part_param, ".text' must be a string"), part_param);
    }
    // Parts are concatenated with newlines, as vLLM does for text-only models.
    if (p > 0) text += "\n";
    text += t->get<std::string>();
  }
  *out = text;
  return std::nullopt;
}

}  // namespace

ApiError BadRequest(std::string message, std::string param) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

std::string ErrorBody(const ApiError& error) {
  nlohmann::ordered_json body;
  body["error"]["message"] = error.message;
  body["error"]["type"] = error.type;
  body["error"]["param"] = error.param.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(error.param);
  body["error"]["code"] = error.code.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(error.code);
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

namespace {
// Length of the well-formed UTF-8 sequence at the start of `s`, or 0 when ill-formed.
size_t Utf8SequenceLength(absl::string_view s) {
  auto c0 = static_cast<unsigned char>(s[0]);
  if (c0 < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    len = 2;
    cp = c0 & 0x1F;
  } else if (c0 >= 0xE0 && c0 <= 0xEF) {
    len = 3;
    cp = c0 & 0x0F;
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    len = 4;
    cp = c0 & 0x07;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  return len;
}
}  // namespace

bool IsValidUtf8(absl::string_view text) {
  while (!text.empty()) {
    size_t len = Utf8SequenceLength(text);
    if (len == 0) return false;
    text.remove_prefix(len);
  }
  return true;
}

std::string SanitizeUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    size_t len = Utf8SequenceLength(bytes);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      len = 1;
    } else {
      out.append(bytes.data(), len);
    }
    bytes.remove_prefix(len);
  }
  return out;
}

std::optional<ApiError> ParseChatRequest(const json& body, ChatRequest* out) {
  TESSERA_API_TRY(ParseCommon(body, out));
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return BadRequest("'messages' is required", "messages");
  if (!messages->is_array()) return TypeError("messages", "an array", *messages);
  if (messages->empty()) return BadRequest("'messages' must not be empty", "messages");
  out->messages = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return TypeError(param, "an object", m);
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return BadRequest(absl::StrCat("'", param, ".role' must be a string"), param + ".role");
    }
    json msg = m;
    json content;
    auto it = m.find("content");
    TESSERA_API_TRY(ContentText(it == m.end() ? json() : *it, i, &content));
    msg["content"] = content;
    // Templates expect tool_calls[].function.arguments as a mapping; clients send JSON text.
    if (auto tc = msg.find("tool_calls"); tc != msg.end() && tc->is_array()) {
      for (json& call : *tc) {
        if (!call.is_object() || !call.contains("function")) continue;
        json& fn = call["function"];
        if (fn.is_object() && fn.contains("arguments") && fn["arguments"].is_string()) {
          json parsed = json::parse(fn["arguments"].get<std::string>(), nullptr, false);
          if (!parsed.is_discarded() && parsed.is_object()) fn["arguments"] = parsed;
        }
      }
    }
    out->messages.push_back(std::move(msg));
  }
  std::optional<int64_t> max_tokens;
  TESSERA_API_TRY(GetInt(body, "max_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens));
  std::optional<int64_t> max_completion;
  TESSERA_API_TRY(GetInt(body, "max_completion_tokens", 1, std::numeric_limits<int32_t>::max(),
                         &max_completion));
  if (max_completion) max_tokens = max_completion;
  if (max_tokens) out->max_tokens = static_cast<int>(*max_tokens);

  bool logprobs = false;
  TESSERA_API_TRY(GetBool(body, "logprobs", &logprobs));
  std::optional<int64_t> top_logprobs;
  TESSERA_API_TRY(GetInt(body, "top_logprobs", 0, kMaxTopLogprobs, &top_logprobs));
  if (top_logprobs && !logprobs) {
    return BadRequest("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
  }
  if (logprobs) out->logprobs = top_logprobs ? static_cast<int>(*top_logprobs) : 0;

  if (const json* tools = Field(body, "tools")) {
    if (!tools->is_array()) return TypeError("tools", "an array", *tools);
    for (size_t i = 0; i < tools->size(); ++i) {
      const json& t = (*tools)[i];
      std::string param = absl::StrCat("tools[", i, "]");
      if (!t.is_object() || !t.contains("function") || !t["function"].is_object() ||
          !t["function"].contains("name") || !t["function"]["name"].is_string()) {
        return BadRequest(absl::StrCat("'", param,
                                       "' must be {\"type\": \"function\", \"function\": "
                                       "{\"name\": ..., \"parameters\": ...}}"),
                          param);
      }
      if (t.contains("type") && t["type"] != "function") {
        return BadRequest(absl::StrCat("'", param, ".type' must be \"function\""), param);
      }
    }
    if (!tools->empty()) out->tools = *tools;
  }
  if (const json* choice = Field(body, "tool_choice")) {
    if (choice->is_string()) {
      out->tool_choice = choice->get<std::string>();
      if (out->tool_choice != "auto" && out->tool_choice != "none" &&
          out->tool_choice != "required") {
        return BadRequest(absl::StrCat("'tool_choice' must be \"auto\", \"none\", \"required\" "
                                       "or {\"type\": \"function\", \"function\": {\"name\": "
                                       "...}}, got \"", out->tool_choice, "\""),
                          "tool_choice");
      }
    } else if (choice->is_object() && choice->contains("function") &&
               (*choice)["function"].is_object() &&
               (*choice)["function"].contains("name") &&
               (*choice)["function"]["name"].is_string()) {
      out->tool_choice = "function";
      out->named_tool = (*choice)["function"]["name"].get<std::string>();
    } else {
      return TypeError("tool_choice", "a string or {\"type\": \"function\", ...}", *choice);
    }
    if (out->tool_choice != "none" && out->tool_choice != "auto" && out->tools.is_null()) {
      return BadRequest("'tool_choice' requires 'tools'", "tool_choice");
    }
    if (out->tool_choice == "function") {
      bool found = false;
      for (const json& t : out->tools) found |= t["function"]["name"] == out->named_tool;
      if (!found) {
        return BadRequest(absl::StrCat("'tool_choice' names function '", out->named_tool,
                                       "', which is not in 'tools'"),
                          "tool_choice");
      }
    }
  }
  TESSERA_API_TRY(GetBool(body, "add_generation_prompt", &out->add_generation_prompt));
  TESSERA_API_TRY(GetBool(body, "continue_final_message", &out->continue_final_message));
  TESSERA_API_TRY(GetBool(body, "add_special_tokens", &out->add_special_tokens));
  if (out->continue_final_message && out->add_generation_prompt &&
      Field(body, "add_generation_prompt") != nullptr) {
    return BadRequest("'continue_final_message' and 'add_generation_prompt' cannot both be true",
                      "continue_final_message");
  }
  if (out->continue_final_message) out->add_generation_prompt = false;
  if (const json* kwargs = Field(body, "chat_template_kwargs")) {
    if (!kwargs->is_object()) return TypeError("chat_template_kwargs", "an object", *kwargs);
    out->chat_template_kwargs = *kwargs;
  }
  return std::nullopt;
}

std::optional<ApiError> ParseCompletionRequest(const json& body, CompletionRequest* out) {
  TESSERA_API_TRY(ParseCommon(body, out));
  TESSERA_API_TRY(GetBool(body, "add_special_tokens", &out->add_special_tokens));
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return BadRequest("'prompt' is required", "prompt");
  auto ids_of = [](const json& arr, absl::string_view param,
                   PromptInput* in) -> std::optional<ApiError> {
    in->is_ids = true;
    for (const json& item : arr) {
      int64_t id = 0;
      TESSERA_API_TRY(ToInt(item, param, 0, std::numeric_limits<int32_t>::max(), &id));
      in->ids.push_back(static_cast<int32_t>(id));
    }
    return std::nullopt;
  };
  const char* kPromptTypes = "a string, an array of strings, an array of token ids or an array "
                             "of token id arrays";
  if (prompt->is_string()) {
    out->prompts.push_back({false, prompt->get<std::string>(), {}});
  } else if (prompt->is_array()) {
    if (prompt->empty()) return BadRequest("'prompt' must not be empty", "prompt");
    const json& first = (*prompt)[0];
    if (first.is_number()) {
      PromptInput in;
      TESSERA_API_TRY(ids_of(*prompt, "prompt", &in));
      out->prompts.push_back(std::move(in));
    } else {
      for (size_t i = 0; i < prompt->size(); ++i) {
        const json& p = (*prompt)[i];
        std::string param = absl::StrCat("prompt[", i, "]");
        if (p.is_string()) {
          out->prompts.push_back({false, p.get<std::string>(), {}});
        } else if (p.is_array()) {
          if (p.empty()) return BadRequest(absl::StrCat("'", param, "' is empty"), "prompt");
          PromptInput in;
          TESSERA_API_TRY(ids_of(p, param, &in));
          out->prompts.push_back(std::move(in));
        } else {
          return TypeError("prompt", kPromptTypes, p);
        }
      }
    }
  } else {
    return TypeError("prompt", kPromptTypes, *prompt);
  }
  if (static_cast<int>(out->prompts.size()) > kMaxPrompts) {
    return BadRequest(absl::StrCat("too many prompts: ", out->prompts.size(), " (at most ",
                                   kMaxPrompts, ")"),
                      "prompt");
  }
  // OpenAI's completions default is 16 tokens; null means "up to the context length".
  auto it = body.find("max_tokens");
  if (it == body.end()) {
    out->default_max_tokens = 16;
  } else {
    std::optional<int64_t> max_tokens;
    TESSERA_API_TRY(
        GetInt(body, "max_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens));
    if (max_tokens) out->max_tokens = static_cast<int>(*max_tokens);
  }
  std::optional<int64_t> logprobs;
  TESSERA_API_TRY(GetInt(body, "logprobs", 0, kMaxTopLogprobs, &logprobs));
  if (logprobs) out->logprobs = static_cast<int>(*logprobs);
  if (out->echo && out->logprobs >= 0) {
    return BadRequest("'echo' with 'logprobs' (prompt logprobs) is not supported", "echo");
  }
  std::string suffix;
  TESSERA_API_TRY(GetString(body, "suffix", &suffix));
  if (!suffix.empty()) return BadRequest("'suffix' is not supported", "suffix");
  std::optional<int64_t> best_of;
  TESSERA_API_TRY(GetInt(body, "best_of", 1, kMaxN, &best_of));
  if (best_of && *best_of != out->n) {
    return BadRequest("'best_of' other than 'n' is not supported", "best_of");
  }
  return std::nullopt;
}

std::optional<ApiError> ParseTokenizeRequest(const json& body, TokenizeRequest* out) {
  if (!body.is_object()) return TypeError("body", "a JSON object", body);
  TESSERA_API_TRY(GetBool(body, "return_token_strs", &out->return_token_strs));
  if (Field(body, "messages") != nullptr) {
    out->is_chat = true;
    TESSERA_API_TRY(ParseChatRequest(body, &out->chat));
    out->model = out->chat.model;
    out->add_special_tokens = out->chat.add_special_tokens;
    return std::nullopt;
  }
  TESSERA_API_TRY(GetString(body, "model", &out->model));
  TESSERA_API_TRY(GetBool(body, "add_special_tokens", &out->add_special_tokens));
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return BadRequest("'prompt' or 'messages' is required", "prompt");
  if (!prompt->is_string()) return TypeError("prompt", "a string", *prompt);
  out->prompt = prompt->get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> ParseDetokenizeRequest(const json& body, DetokenizeRequest* out) {
  if (!body.is_object()) return TypeError("body", "a JSON object", body);
  TESSERA_API_TRY(GetString(body, "model", &out->model));
  const json* tokens = Field(body, "tokens");
  if (tokens == nullptr) return BadRequest("'tokens' is required", "tokens");
  if (!tokens->is_array()) return TypeError("tokens", "an array of token ids", *tokens);
  for (size_t i = 0; i < tokens->size(); ++i) {
    int64_t id = 0;
    TESSERA_API_TRY(ToInt((*tokens)[i], absl::StrCat("tokens[", i, "]"), 0,
                          std::numeric_limits<int32_t>::max(), &id));
    out->tokens.push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

}  // namespace tessera::api
