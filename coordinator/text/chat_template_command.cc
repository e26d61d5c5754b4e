#include "coordinator/text/chat_template_command.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/text/chat_template.h"
#include "coordinator/text/jinja/builtins.h"
#include "coordinator/text/jinja/errors.h"
#include "coordinator/text/tokenizer.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<Json> ParseJson(const std::string& text, const std::string& what) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": invalid JSON"));
  return j;
}

absl::StatusOr<Json> ReadJson(const std::string& path, const std::string& flag) {
  ASSIGN_OR_RETURN(std::string text, ReadText(path));
  return ParseJson(text, absl::StrCat(flag, " ", path));
}

void WriteOut(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// The message given to raise_exception(), when `status` is such a failure.
std::string RaisedMessage(const absl::Status& status) {
  absl::string_view m = status.message();
  const size_t at = m.find(jinja::kRaiseExceptionPrefix);
  if (!absl::IsFailedPrecondition(status) || at == absl::string_view::npos) return "";
  return std::string(m.substr(at + std::strlen(jinja::kRaiseExceptionPrefix)));
}

}  // namespace

int RunChatTemplate(int argc, char** argv) {
  FlagParser parser("chat-template", "render a conversation with a model's chat template");
  std::string model_dir, template_path, template_name, bos, eos, messages_path, tools_path,
      documents_path, kwargs_text;
  bool add_generation_prompt = false, json = false, batch = false;
  parser.AddString("model", &model_dir, "model directory (tokenizer_config.json, "
                                        "chat_template.jinja, tokenizer.json)");
  parser.AddString("template", &template_path, "chat template file (.jinja) instead of --model");
  parser.AddString("template-name", &template_name,
                   "named template of a list-valued chat_template (default: HF's choice)");
  parser.AddString("bos-token", &bos, "bos_token variable (overrides the model's)");
  parser.AddString("eos-token", &eos, "eos_token variable (overrides the model's)");
  parser.AddString("messages", &messages_path, "JSON file: the list of messages");
  parser.AddString("tools", &tools_path, "JSON file: the list of tool schemas");
  parser.AddString("documents", &documents_path, "JSON file: retrieval documents (RAG templates)");
  parser.AddBool("add-generation-prompt", &add_generation_prompt,
                 "end with the assistant turn header");
  parser.AddString("kwargs", &kwargs_text,
                   "JSON object of extra template variables, e.g. {\"enable_thinking\": false}");
  parser.AddBool("json", &json, "print {\"prompt\": ...} (and prompt_ids with a tokenizer)");
  parser.AddBool("batch", &batch, "--messages is a JSON list of cases; print a JSON array");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (model_dir.empty() == template_path.empty()) {
      return absl::InvalidArgumentError("give exactly one of --model DIR or --template FILE");
    }
    if (messages_path.empty()) return absl::InvalidArgumentError("--messages is required");
    std::optional<LoadedChatTemplate> loaded;
    std::optional<ChatTemplate> single;
    std::unique_ptr<Tokenizer> tokenizer;
    if (!model_dir.empty()) {
      ASSIGN_OR_RETURN(loaded, LoadChatTemplate(model_dir));
      if (json) {
        // Any tokenizer format the model ships (tokenizer.json, tiktoken.model, tokenizer.model);
        // a model without one simply gets no prompt_ids.
        absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(model_dir);
        if (t.ok()) {
          tokenizer = std::move(*t);
        } else if (!absl::IsNotFound(t.status())) {
          return t.status();
        }
      }
    } else {
      ASSIGN_OR_RETURN(std::string source, ReadText(template_path));
      absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(std::move(source));
      if (!t.ok()) return Annotate(t.status(), template_path);
      single = std::move(*t);
    }
    auto pick = [&](bool has_tools) -> absl::StatusOr<const ChatTemplate*> {
      if (single) return &*single;
      const ChatTemplate* t =
          template_name.empty() ? loaded->Select(has_tools) : loaded->Find(template_name);
      if (t == nullptr) {
        return absl::NotFoundError(absl::StrCat(
            model_dir, ": no chat template named '",
            template_name.empty() ? "default" : template_name, "'"));
      }
      return t;
    };
    ChatTemplateInputs base;
    if (loaded) {
      base.bos_token = loaded->bos_token;
      base.eos_token = loaded->eos_token;
      base.unk_token = loaded->unk_token;
      base.pad_token = loaded->pad_token;
    }
    if (parser.WasSet("bos-token")) base.bos_token = bos;
    if (parser.WasSet("eos-token")) base.eos_token = eos;
    base.add_generation_prompt = add_generation_prompt;
    if (!kwargs_text.empty()) {
      ASSIGN_OR_RETURN(base.extra_kwargs, ParseJson(kwargs_text, "--kwargs"));
      if (!base.extra_kwargs.is_object()) {
        return absl::InvalidArgumentError("--kwargs must be a JSON object");
      }
    }
    if (!tools_path.empty()) {
      ASSIGN_OR_RETURN(Json tools, ReadJson(tools_path, "--tools"));
      base.tools = std::move(tools);
    }
    if (!documents_path.empty()) {
      ASSIGN_OR_RETURN(Json documents, ReadJson(documents_path, "--documents"));
      base.documents = std::move(documents);
    }
    ASSIGN_OR_RETURN(Json messages, ReadJson(messages_path, "--messages"));
    if (batch) {
      if (!messages.is_array()) {
        return absl::InvalidArgumentError("--batch: --messages must hold a JSON list of cases");
      }
      Json results = Json::array();
      for (const Json& c : messages) {
        ChatTemplateInputs in = base;
        if (!c.is_object() || !c.contains("messages")) {
          return absl::InvalidArgumentError("--batch: each case needs \"messages\"");
        }
        in.messages = c["messages"];
        if (c.contains("tools") && !c["tools"].is_null()) in.tools = c["tools"];
        if (c.contains("documents") && !c["documents"].is_null()) in.documents = c["documents"];
        if (c.contains("add_generation_prompt")) {
          in.add_generation_prompt = c["add_generation_prompt"].get<bool>();
        }
        if (c.contains("kwargs")) {
          for (auto it = c["kwargs"].begin(); it != c["kwargs"].end(); ++it) {
            in.extra_kwargs[it.key()] = it.value();
          }
        }
        Json r = Json::object();
        absl::StatusOr<const ChatTemplate*> t = pick(in.tools.has_value());
        absl::StatusOr<std::string> prompt =
            t.ok() ? ApplyChatTemplate(**t, in) : absl::StatusOr<std::string>(t.status());
        if (prompt.ok()) {
          r["prompt"] = *prompt;
        } else {
          r["error"] = std::string(prompt.status().message());
          const std::string raised = RaisedMessage(prompt.status());
          if (!raised.empty() || absl::IsFailedPrecondition(prompt.status())) {
            r["raise_exception"] = raised;
          }
        }
        results.push_back(std::move(r));
      }
      WriteOut(results.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
      return absl::OkStatus();
    }
    base.messages = std::move(messages);
    ASSIGN_OR_RETURN(const ChatTemplate* t, pick(base.tools.has_value()));
    ASSIGN_OR_RETURN(std::string prompt, ApplyChatTemplate(*t, base));
    if (!json) {
      WriteOut(prompt);
      return absl::OkStatus();
    }
    Json out = Json::object();
    out["prompt"] = prompt;
    if (tokenizer) out["prompt_ids"] = tokenizer->Encode(prompt, /*allow_special=*/true);
    WriteOut(out.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
    return absl::OkStatus();
  });
}

namespace {

// One template rendered with `context`: {"output"} or {"error", "kind", "raise_exception"?}.
Json RenderOne(const std::string& source, const Json& context) {
  Json r = Json::object();
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  absl::StatusOr<std::string> out = t.ok() ? t->Render(context)
                                           : absl::StatusOr<std::string>(t.status());
  if (out.ok()) {
    r["output"] = *out;
    return r;
  }
  r["error"] = std::string(out.status().message());
  const jinja::ErrorKind kind = jinja::ErrorKindOf(out.status());
  r["kind"] = jinja::ErrorKindName(kind);
  if (kind == jinja::ErrorKind::kRaised) r["raise_exception"] = RaisedMessage(out.status());
  return r;
}

}  // namespace

int RunJinjaRender(int argc, char** argv) {
  FlagParser parser("jinja-render", "render any Jinja template with JSON variables (tests)");
  std::string template_path, context_text, batch_path;
  parser.AddString("template", &template_path, "template file");
  parser.AddString("context", &context_text, "JSON object of template variables");
  parser.AddString("batch", &batch_path,
                   "JSON file: list of {\"template\", \"context\"}; prints a JSON array");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (template_path.empty() == batch_path.empty()) {
      return absl::InvalidArgumentError("give exactly one of --template FILE or --batch FILE");
    }
    if (!batch_path.empty()) {
      ASSIGN_OR_RETURN(Json cases, ReadJson(batch_path, "--batch"));
      if (!cases.is_array()) return absl::InvalidArgumentError("--batch: expected a JSON list");
      Json results = Json::array();
      for (const Json& c : cases) {
        if (!c.is_object() || !c.contains("template") || !c["template"].is_string()) {
          return absl::InvalidArgumentError("--batch: each case needs a \"template\" string");
        }
        const Json context = c.contains("context") ? c["context"] : Json::object();
        if (!context.is_object()) {
          return absl::InvalidArgumentError("--batch: \"context\" must be a JSON object");
        }
        results.push_back(RenderOne(c["template"].get<std::string>(), context));
      }
      WriteOut(results.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(std::string source, ReadText(template_path));
    Json context = Json::object();
    if (!context_text.empty()) {
      ASSIGN_OR_RETURN(context, ParseJson(context_text, "--context"));
      if (!context.is_object()) return absl::InvalidArgumentError("--context must be an object");
    }
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(std::move(source));
    if (!t.ok()) return Annotate(t.status(), template_path);
    absl::StatusOr<std::string> out = t->Render(context);
    if (!out.ok()) {
      return jinja::WithMessagePrefix(out.status(),
                               absl::StrCat(template_path, " (",
                                            jinja::ErrorKindName(jinja::ErrorKindOf(out.status())),
                                            " error): "));
    }
    WriteOut(*out);
    return absl::OkStatus();
  });
}

}  // namespace tessera
