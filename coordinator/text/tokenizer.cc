// Tokenizer base (Decode) and LoadTokenizer (see tokenizer.h).
#include "coordinator/text/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The text of a tokenizer_config.json token entry: "text" or {"content": "text", ...}.
std::optional<std::string> TokenText(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::string bytes, out;
  DecodeState state;
  const Replacement repl = replacement();
  for (const int32_t id : ids) {
    const size_t before = bytes.size();
    if (!AppendTokenBytes(id, skip_special_tokens, &state, &bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Decode: token id ", id, " is not in the vocabulary (size ",
                       vocab_size(), ")"));
    }
    if (state.ends_byte_run && before > 0) {
      AppendValidUtf8(absl::string_view(bytes).substr(0, before), /*final=*/true, repl, &out);
      bytes.erase(0, before);
    }
  }
  FinishTokenBytes(&state, &bytes);
  AppendValidUtf8(bytes, /*final=*/true, repl, &out);
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  std::error_code ec;
  fs::path dir = model_dir, file;
  bool from_dir = false;
  if (fs::is_regular_file(model_dir, ec)) {
    file = model_dir;
    dir = file.parent_path();
  } else if (fs::is_directory(model_dir, ec)) {
    from_dir = true;
    for (const char* name : {"tokenizer.json", "tiktoken.model", "tokenizer.model"}) {
      if (fs::is_regular_file(dir / name, ec)) {
        file = dir / name;
        break;
      }
    }
    if (file.empty()) {
      return absl::NotFoundError(absl::StrCat(
          model_dir, ": no tokenizer.json, tiktoken.model or tokenizer.model in this directory"));
    }
  } else {
    return absl::NotFoundError(absl::StrCat(model_dir, ": no such file or directory"));
  }

  // tokenizer_config.json (optional): bos/eos, and the specials of a tiktoken file.
  json config;
  const fs::path config_path = dir / "tokenizer_config.json";
  if (fs::is_regular_file(config_path, ec)) {
    std::ifstream in(config_path, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    config = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not valid JSON"));
    }
  }

  const std::string name = file.filename().string();
  std::unique_ptr<Tokenizer> tok;
  if (absl::EndsWith(name, ".json")) {
    auto t = Tokenizer::FromFile(file.string());
    if (!t.ok()) {
      // Llama/Mistral-style tokenizer.json (byte_fallback, Metaspace) loads; a tokenizer.json
      // with a component still unsupported (e.g. a Unigram model) falls back to a
      // SentencePiece tokenizer.model beside it, with a warning naming the field at fault.
      if (t.status().code() != absl::StatusCode::kInvalidArgument ||
          !from_dir || !fs::is_regular_file(dir / "tokenizer.model", ec)) {
        return t.status();
      }
      LOG(WARNING) << t.status().message() << "; using " << (dir / "tokenizer.model").string()
                   << " instead";
      file = dir / "tokenizer.model";
      auto sp = LoadSentencePiece(file.string());
      if (!sp.ok()) return t.status();
      tok = *std::move(sp);
    } else {
      tok = *std::move(t);
    }
  } else if (absl::StrContains(name, "tiktoken")) {
    std::vector<std::pair<std::string, int32_t>> specials;
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
      for (auto it = config["added_tokens_decoder"].begin();
           it != config["added_tokens_decoder"].end(); ++it) {
        int32_t id = -1;
        const auto text = TokenText(it.value());
        if (!absl::SimpleAtoi(it.key(), &id) || !text.has_value()) {
          return absl::InvalidArgumentError(
              absl::StrCat(config_path.string(), ": field 'added_tokens_decoder' entry '",
                           it.key(), "' needs an integer key and a content"));
        }
        specials.emplace_back(*text, id);
      }
    }
    auto t = LoadTiktoken(file.string(), kKimiPattern, specials, /*num_reserved=*/256,
                          /*kimi_chunking=*/true);
    if (!t.ok()) return t.status();
    tok = *std::move(t);
  } else {
    auto t = LoadSentencePiece(file.string());
    if (!t.ok()) return t.status();
    tok = *std::move(t);
  }

  for (const char* field : {"bos_token", "eos_token"}) {
    if (!config.contains(field) || config[field].is_null()) continue;
    const auto text = TokenText(config[field]);
    const auto id = text.has_value() ? tok->TokenToId(*text) : std::nullopt;
    if (!id.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config_path.string(), ": field '", field, "' names no token of ", file.string()));
    }
    if (field[0] == 'b') {
      tok->set_bos_id(id);
    } else {
      tok->set_eos_id(id);
    }
  }
  return tok;
}

}  // namespace tessera
