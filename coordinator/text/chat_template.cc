#include "coordinator/text/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "coordinator/text/jinja/ast.h"
#include "coordinator/text/jinja/interpreter.h"
#include "coordinator/text/jinja/parser.h"
#include "kernels/base/status.h"

namespace tessera {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A special token in tokenizer_config.json: a string, an AddedToken object ({"content": ...}),
// or null.
std::optional<std::string> TokenString(const nlohmann::ordered_json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

// Whether `j` nests deeper than `limit` (stops descending at the limit, so it is safe on any
// input); conversion and rendering recurse over the nesting.
bool NestsDeeperThan(const nlohmann::ordered_json& j, int limit) {
  if (!j.is_structured()) return false;
  if (limit <= 0) return true;
  for (const auto& e : j) {
    if (NestsDeeperThan(e, limit - 1)) return true;
  }
  return false;
}

constexpr int kMaxContextDepth = 128;

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string source) {
  jinja::ParseOptions options;  // HF: trim_blocks, lstrip_blocks, no trailing newline
  ASSIGN_OR_RETURN(jinja::Body body, jinja::ParseTemplate(source, options));
  ChatTemplate t;
  t.source_ = std::make_shared<const std::string>(std::move(source));
  t.body_ = std::make_shared<const jinja::Body>(std::move(body));
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) {
    return absl::InvalidArgumentError("chat template context must be a JSON object");
  }
  if (NestsDeeperThan(context, kMaxContextDepth)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template input nests deeper than ", kMaxContextDepth,
        " levels (messages / tools / kwargs); flatten it"));
  }
  jinja::Interpreter interpreter(jinja::Value::FromJson(context));
  return interpreter.Render(*body_);
}

nlohmann::ordered_json ChatTemplateContext(const ChatTemplateInputs& inputs) {
  // transformers: compiled_template.render(messages=chat, tools=tool_schemas,
  // documents=documents, add_generation_prompt=..., **{**special_tokens_map, **kwargs}).
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = inputs.messages;
  ctx["tools"] = inputs.tools ? *inputs.tools : nlohmann::ordered_json(nullptr);
  ctx["documents"] = inputs.documents ? *inputs.documents : nlohmann::ordered_json(nullptr);
  ctx["add_generation_prompt"] = inputs.add_generation_prompt;
  if (inputs.bos_token) ctx["bos_token"] = *inputs.bos_token;
  if (inputs.eos_token) ctx["eos_token"] = *inputs.eos_token;
  if (inputs.unk_token) ctx["unk_token"] = *inputs.unk_token;
  if (inputs.pad_token) ctx["pad_token"] = *inputs.pad_token;
  if (inputs.extra_kwargs.is_object()) {
    for (auto it = inputs.extra_kwargs.begin(); it != inputs.extra_kwargs.end(); ++it) {
      ctx[it.key()] = it.value();
    }
  }
  return ctx;
}

absl::StatusOr<std::string> ApplyChatTemplate(const ChatTemplate& chat_template,
                                              const ChatTemplateInputs& inputs) {
  if (!inputs.messages.is_array()) {
    return absl::InvalidArgumentError("chat template: messages must be a JSON array");
  }
  if (inputs.tools && !inputs.tools->is_array() && !inputs.tools->is_null()) {
    return absl::InvalidArgumentError("chat template: tools must be a JSON array");
  }
  if (!inputs.extra_kwargs.is_object()) {
    return absl::InvalidArgumentError("chat template: extra kwargs must be a JSON object");
  }
  return chat_template.Render(ChatTemplateContext(inputs));
}

const ChatTemplate* LoadedChatTemplate::Find(const std::string& name) const {
  for (const auto& [n, t] : templates) {
    if (n == name) return &t;
  }
  return nullptr;
}

const ChatTemplate* LoadedChatTemplate::Select(bool has_tools) const {
  if (has_tools) {
    if (const ChatTemplate* t = Find("tool_use")) return t;
  }
  if (const ChatTemplate* t = Find("default")) return t;
  if (templates.size() == 1) return &templates[0].second;
  return nullptr;
}

absl::StatusOr<LoadedChatTemplate> LoadChatTemplate(const std::string& model_dir) {
  LoadedChatTemplate loaded;
  const std::string config_path = model_dir + "/tokenizer_config.json";
  absl::StatusOr<std::string> config_text = ReadFile(config_path);
  if (config_text.ok()) {
    nlohmann::ordered_json config =
        nlohmann::ordered_json::parse(*config_text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, " is not a JSON object"));
    }
    loaded.bos_token = TokenString(config, "bos_token");
    loaded.eos_token = TokenString(config, "eos_token");
    loaded.unk_token = TokenString(config, "unk_token");
    loaded.pad_token = TokenString(config, "pad_token");
    auto it = config.find("chat_template");
    if (it != config.end() && it->is_string()) {
      absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(it->get<std::string>());
      if (!t.ok()) return Annotate(t.status(), absl::StrCat(config_path, ": chat_template"));
      loaded.templates.emplace_back("default", std::move(*t));
    } else if (it != config.end() && it->is_array()) {
      for (const auto& entry : *it) {
        if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
            !entry["name"].is_string() || !entry["template"].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              config_path, ": chat_template list entries must be {\"name\", \"template\"}"));
        }
        const std::string name = entry["name"].get<std::string>();
        absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(entry["template"].get<std::string>());
        if (!t.ok()) {
          return Annotate(t.status(), absl::StrCat(config_path, ": chat_template '", name, "'"));
        }
        loaded.templates.emplace_back(name, std::move(*t));
      }
    } else if (it != config.end() && !it->is_null()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path, ": chat_template must be a string or a list"));
    }
  } else if (!absl::IsNotFound(config_text.status())) {
    return config_text.status();
  }
  const std::string jinja_path = model_dir + "/chat_template.jinja";
  absl::StatusOr<std::string> jinja_text = ReadFile(jinja_path);
  if (jinja_text.ok()) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(*jinja_text);
    if (!t.ok()) return Annotate(t.status(), jinja_path);
    for (auto& [name, tmpl] : loaded.templates) {
      if (name == "default") {
        tmpl = std::move(*t);
        return loaded;
      }
    }
    loaded.templates.emplace_back("default", std::move(*t));
  }
  if (loaded.templates.empty()) {
    return absl::NotFoundError(absl::StrCat(
        model_dir, " has no chat template (no chat_template in tokenizer_config.json and no "
                   "chat_template.jinja); pass one with --template FILE.jinja"));
  }
  return loaded;
}

}  // namespace tessera
