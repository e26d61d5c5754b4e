// Chat templates: renders a conversation into a prompt exactly as Hugging Face transformers'
// apply_chat_template does (Jinja2 ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks, loop controls, tojson = json.dumps(ensure_ascii=False), raise_exception,
// strftime_now), with a C++ Jinja2 interpreter (coordinator/text/jinja/).
//
//   ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::Parse(source));   // once
//   ASSIGN_OR_RETURN(std::string prompt, ApplyChatTemplate(t, inputs));  // per request
//
// Errors name the template line and column; a template's own raise_exception("msg") fails with
// FailedPrecondition and a message containing "raise_exception: msg".
// Thread safety: a parsed ChatTemplate is immutable; Render / ApplyChatTemplate may be called
// from any number of threads at once.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera {

namespace jinja {
struct Stmt;
}

class ChatTemplate {
 public:
  static absl::StatusOr<ChatTemplate> Parse(std::string source);

  // Renders with `context` (a JSON object) as the template variables.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;

  const std::string& source() const { return *source_; }

 private:
  ChatTemplate() = default;
  std::shared_ptr<const std::string> source_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Stmt>>> body_;
};

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  // Tool schemas (list of {"type": "function", "function": {...}}); absent -> tools=None, as HF.
  std::optional<nlohmann::ordered_json> tools;
  // Retrieval documents; absent -> documents=None, as HF.
  std::optional<nlohmann::ordered_json> documents;
  bool add_generation_prompt = false;
  // Extra template variables merged last (enable_thinking, reasoning_effort, thinking, ...).
  nlohmann::ordered_json extra_kwargs = nlohmann::ordered_json::object();
  // Special tokens (HF passes tokenizer.special_tokens_map); unset ones are left undefined.
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> unk_token;
  std::optional<std::string> pad_token;
};

// The template variables HF's render_jinja_template passes for these inputs.
nlohmann::ordered_json ChatTemplateContext(const ChatTemplateInputs& inputs);

absl::StatusOr<std::string> ApplyChatTemplate(const ChatTemplate& chat_template,
                                              const ChatTemplateInputs& inputs);

struct LoadedChatTemplate {
  // Named templates: "default" plus e.g. "tool_use" / "rag" when tokenizer_config.json holds a
  // list of {name, template}. A single template is stored as "default".
  std::vector<std::pair<std::string, ChatTemplate>> templates;
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> unk_token;
  std::optional<std::string> pad_token;

  // HF's choice: "tool_use" when tools are given and such a template exists, else "default"
  // (or the only template). nullptr when none fits.
  const ChatTemplate* Select(bool has_tools) const;
  const ChatTemplate* Find(const std::string& name) const;
};

// Reads DIR/tokenizer_config.json ("chat_template" string or list of {name, template};
// bos/eos/unk/pad tokens as strings or AddedToken objects) and DIR/chat_template.jinja (used
// when present, as newer transformers save it there; it overrides the config's default).
absl::StatusOr<LoadedChatTemplate> LoadChatTemplate(const std::string& model_dir);

}  // namespace tessera
