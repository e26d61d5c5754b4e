// Tokenizer base (Decode) and LoadTokenizer (see tokenizer.h).
#include "coordinator/text/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
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

// Parses one post-processor object (recursing into Sequence) at `field`, appending its steps
// to `out`. `*segments`: how many segments reach this step (updated; see Tokenizer::PostStep).
absl::Status ParsePostStep(const std::string& path, const json& p, const std::string& field,
                           int32_t vocab_size, size_t* segments,
                           std::vector<Tokenizer::PostStep>* out) {
  auto err = [&](const std::string& f, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field '", f, "' ", what));
  };
  if (p.is_null()) return absl::OkStatus();
  if (!p.is_object() || !p.contains("type") || !p["type"].is_string()) {
    return err(field, "must be null or an object with a string 'type'");
  }
  auto check_id = [&](const std::string& f, const json& v, int32_t* id) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab_size) {
      return err(f, absl::StrCat("must be a token id in [0, ", vocab_size, "), got ", v.dump()));
    }
    *id = static_cast<int32_t>(v.get<int64_t>());
    return absl::OkStatus();
  };
  const std::string type = p["type"].get<std::string>();
  if (type == "ByteLevel") return absl::OkStatus();  // Offsets only; adds no ids.
  if (type == "Sequence") {
    if (!p.contains("processors") || !p["processors"].is_array()) {
      return err(field + ".processors", "missing or not an array");
    }
    for (size_t k = 0; k < p["processors"].size(); ++k) {
      RETURN_IF_ERROR(ParsePostStep(path, p["processors"][k],
                                    absl::StrCat(field, ".processors[", k, "]"), vocab_size,
                                    segments, out));
    }
    return absl::OkStatus();
  }
  Tokenizer::PostStep step;
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    step.kind = type[0] == 'B' ? Tokenizer::PostStep::kBert : Tokenizer::PostStep::kRoberta;
    const char* names[2] = {"cls", "sep"};
    int32_t* ids[2] = {&step.cls, &step.sep};
    for (int k = 0; k < 2; ++k) {
      const json& v = p.contains(names[k]) ? p[names[k]] : json();
      if (!v.is_array() || v.size() != 2 || !v[0].is_string()) {
        return err(field + "." + names[k], "must be [token, id]");
      }
      RETURN_IF_ERROR(check_id(field + "." + names[k] + "[1]", v[1], ids[k]));
    }
    out->push_back(std::move(step));
    return absl::OkStatus();  // Keeps the number of segments.
  }
  if (type != "TemplateProcessing") {
    return err(field + ".type",
               absl::StrCat("'", type, "' is not supported (null, ByteLevel, TemplateProcessing, "
                                       "BertProcessing, RobertaProcessing and Sequence are)"));
  }
  // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, ...}
  absl::flat_hash_map<std::string, std::vector<int32_t>> specials;
  if (p.contains("special_tokens") && !p["special_tokens"].is_null()) {
    const json& st = p["special_tokens"];
    if (!st.is_object()) return err(field + ".special_tokens", "must be an object");
    for (auto it = st.begin(); it != st.end(); ++it) {
      const std::string f = absl::StrCat(field, ".special_tokens[\"", it.key(), "\"]");
      const json& e = it.value();
      if (!e.is_object() || !e.contains("ids") || !e["ids"].is_array()) {
        return err(f + ".ids", "missing or not an array");
      }
      std::vector<int32_t> ids;
      for (size_t k = 0; k < e["ids"].size(); ++k) {
        int32_t id = 0;
        RETURN_IF_ERROR(check_id(absl::StrCat(f, ".ids[", k, "]"), e["ids"][k], &id));
        ids.push_back(id);
      }
      // `tokenizers` keys the map by the entry's own "id" (the key repeats it).
      const std::string key =
          e.contains("id") && e["id"].is_string() ? e["id"].get<std::string>() : it.key();
      specials[key] = std::move(ids);
    }
  }
  // Templates: [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", ...}}]
  for (const char* which : {"single", "pair"}) {
    const std::string f = field + "." + which;
    if (!p.contains(which) || !p[which].is_array()) return err(f, "missing or not an array");
    const json& tmpl = p[which];
    std::vector<Tokenizer::PostStep::Item>& items = which[0] == 's' ? step.single : step.pair;
    for (size_t k = 0; k < tmpl.size(); ++k) {
      const std::string fk = absl::StrCat(f, "[", k, "]");
      const json& item = tmpl[k];
      Tokenizer::PostStep::Item it;
      if (item.is_object() && item.contains("SpecialToken") &&
          item["SpecialToken"].is_object() && item["SpecialToken"].contains("id") &&
          item["SpecialToken"]["id"].is_string()) {
        const std::string name = item["SpecialToken"]["id"].get<std::string>();
        auto found = specials.find(name);
        if (found == specials.end()) {
          return err(fk, absl::StrCat("names special token '", name,
                                      "', which is missing from special_tokens"));
        }
        it.ids = found->second;
      } else if (item.is_object() && item.contains("Sequence") && item["Sequence"].is_object() &&
                 item["Sequence"].contains("id") && item["Sequence"]["id"].is_string()) {
        const std::string seq = item["Sequence"]["id"].get<std::string>();
        if (seq != "A" && seq != "B") return err(fk, "Sequence id must be \"A\" or \"B\"");
        it.sequence = seq == "A" ? 0 : 1;
      } else {
        return err(fk, "must be {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": {\"id\": "
                       "\"A\"|\"B\"}}");
      }
      items.push_back(std::move(it));
    }
  }
  // What reaches this template: one segment (single) or two (pair); `tokenizers` panics on
  // more, and on a template that uses B with one segment.
  if (*segments > 2) {
    return err(field, absl::StrCat("gets ", *segments, " segments from the processors before it "
                                   "(a template takes one or two; tokenizers would panic)"));
  }
  const auto& used = *segments == 1 ? step.single : step.pair;
  for (const auto& it : used) {
    if (it.sequence >= static_cast<int>(*segments)) {
      return err(field + (*segments == 1 ? ".single" : ".pair"),
                 "uses sequence B, which a single sequence does not have");
    }
  }
  *segments = used.size();
  out->push_back(std::move(step));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Tokenizer::PostStep>> ParsePostProcessor(
    const std::string& path, const std::string& post_processor_json, int32_t vocab_size) {
  json p = json::parse(post_processor_json, nullptr, /*allow_exceptions=*/false);
  if (p.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field 'post_processor' is not valid JSON"));
  }
  std::vector<Tokenizer::PostStep> out;
  size_t segments = 1;
  try {
    RETURN_IF_ERROR(ParsePostStep(path, p, "post_processor", vocab_size, &segments, &out));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field 'post_processor': ", e.what()));
  }
  return out;
}

void Tokenizer::ApplyPostProcessor(std::vector<int32_t>* ids) const {
  if (post_processor_.empty()) return;
  std::vector<std::vector<int32_t>> segs;
  segs.push_back(std::move(*ids));
  for (const PostStep& step : post_processor_) {
    std::vector<std::vector<int32_t>> next;
    if (step.kind == PostStep::kTemplate) {
      // ParsePostProcessor guarantees 1 or 2 segments and no B with one.
      for (const PostStep::Item& item : segs.size() == 1 ? step.single : step.pair) {
        next.push_back(item.sequence < 0 ? item.ids : segs[item.sequence]);
      }
    } else {
      for (size_t i = 0; i < segs.size(); ++i) {
        std::vector<int32_t> s;
        if (i == 0) {
          s.push_back(step.cls);
        } else if (step.kind == PostStep::kRoberta) {
          s.push_back(step.sep);
        }
        s.insert(s.end(), segs[i].begin(), segs[i].end());
        s.push_back(step.sep);
        next.push_back(std::move(s));
      }
    }
    segs = std::move(next);
  }
  ids->clear();
  for (const auto& s : segs) ids->insert(ids->end(), s.begin(), s.end());
}

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
  if (tok->format() == "sentencepiece") {
    // transformers' slow LlamaTokenizer (what a SentencePiece-only model loads as) adds BOS
    // when add_bos_token (default true) and EOS when add_eos_token (default false).
    bool add[2] = {true, false};  // add_bos_token, add_eos_token
    const char* fields[2] = {"add_bos_token", "add_eos_token"};
    for (int k = 0; k < 2; ++k) {
      if (!config.contains(fields[k]) || config[fields[k]].is_null()) continue;
      if (!config[fields[k]].is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat(
            config_path.string(), ": field '", fields[k], "' must be true or false"));
      }
      add[k] = config[fields[k]].get<bool>();
    }
    Tokenizer::PostStep t;  // bos? $A eos?
    if (add[0] && tok->bos_id().has_value()) t.single.push_back({-1, {*tok->bos_id()}});
    t.single.push_back({0, {}});
    if (add[1] && tok->eos_id().has_value()) t.single.push_back({-1, {*tok->eos_id()}});
    if (t.single.size() > 1) tok->set_post_processor({std::move(t)});
  }
  return tok;
}

}  // namespace tessera
