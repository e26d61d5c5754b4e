// `tessera tokenize` (see tokenize_command.h).
#include "coordinator/text/tokenize_command.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "coordinator/text/detokenizer.h"
#include "coordinator/text/tokenizer.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using json = nlohmann::json;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot open '", path, "'"));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int32_t v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--decode: '", part, "' is not a token id; give ids like 1,2,3"));
    }
    ids.push_back(v);
  }
  return ids;
}

// ids, tokens and the decoded text of `ids`; with `all_decodings` also the text with special
// tokens skipped and what StreamingDetokenizer produces token by token (both settings).
absl::StatusOr<json> IdsToJson(const Tokenizer& tok, const std::vector<int32_t>& ids,
                               bool all_decodings) {
  json j;
  json tokens = json::array();
  for (int32_t id : ids) tokens.push_back(tok.IdToToken(id).value_or(""));
  ASSIGN_OR_RETURN(std::string decoded, tok.Decode(ids));
  j["ids"] = ids;
  j["tokens"] = std::move(tokens);
  j["text"] = std::move(decoded);
  if (all_decodings) {
    ASSIGN_OR_RETURN(j["text_skip_special"], tok.Decode(ids, /*skip_special_tokens=*/true));
    for (const bool skip : {false, true}) {
      StreamingDetokenizer stream(tok, skip);
      std::string text;
      for (int32_t id : ids) text += stream.Push(id);
      text += stream.Finish();
      j[skip ? "stream_skip_special" : "stream"] = std::move(text);
    }
  }
  return j;
}

absl::StatusOr<json> EncodeToJson(const Tokenizer& tok, absl::string_view text,
                                  bool allow_special, bool add_special_tokens,
                                  bool all_decodings = false) {
  return IdsToJson(tok, tok.Encode(text, allow_special, add_special_tokens), all_decodings);
}

std::string Dump(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

}  // namespace

int RunTokenize(int argc, char** argv) {
  FlagParser parser("tokenize",
                    "encode text to token ids (or decode ids) with a model's tokenizer");
  std::string model, text, file, batch, decode;
  bool as_json = false, no_special = false, skip_special = false, add_special_tokens = false;
  parser.AddString("model", &model,
                   "model directory or tokenizer file (tokenizer.json, tiktoken.model, "
                   "tokenizer.model)");
  parser.AddString("text", &text, "text to encode");
  parser.AddString("file", &file, "file whose bytes are encoded");
  parser.AddString("batch", &batch,
                   "JSON file holding an array of strings to encode (an element that is an "
                   "array of ids is decoded); prints per element ids, tokens, text, "
                   "text_skip_special, stream, stream_skip_special (StreamingDetokenizer)");
  parser.AddString("decode", &decode, "comma-separated token ids to decode instead");
  parser.AddBool("json", &as_json, "print JSON");
  parser.AddBool("no-special", &no_special, "treat special-token text as ordinary text");
  parser.AddBool("skip-special", &skip_special, "--decode: drop special tokens");
  parser.AddBool("add-special-tokens", &add_special_tokens,
                 "apply the tokenizer's post-processor (e.g. prepend BOS), as Hugging Face "
                 "encode(text) does by default and completion prompts are served");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (model.empty()) return absl::InvalidArgumentError("--model is required");
    const int inputs = parser.WasSet("text") + parser.WasSet("file") + parser.WasSet("batch") +
                       parser.WasSet("decode");
    if (inputs != 1) {
      return absl::InvalidArgumentError("give exactly one of --text, --file, --batch, --decode");
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(model));
    if (parser.WasSet("decode")) {
      ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIds(decode));
      ASSIGN_OR_RETURN(std::string out, tok->Decode(ids, skip_special));
      if (as_json) {
        std::printf("%s\n", Dump(json{{"text", out}}).c_str());
      } else {
        std::fwrite(out.data(), 1, out.size(), stdout);
        std::printf("\n");
      }
      return absl::OkStatus();
    }
    if (parser.WasSet("batch")) {
      ASSIGN_OR_RETURN(std::string content, ReadFile(batch, "--batch"));
      json texts = json::parse(content, nullptr, /*allow_exceptions=*/false);
      if (texts.is_discarded() || !texts.is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--batch: '", batch, "' is not a JSON array of strings"));
      }
      json out = json::array();
      for (const json& t : texts) {
        if (t.is_array()) {
          std::vector<int32_t> ids;
          for (const json& id : t) {
            if (!id.is_number_integer()) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "--batch: '", batch, "' has an id array with a non-integer element"));
            }
            ids.push_back(id.get<int32_t>());
          }
          ASSIGN_OR_RETURN(json j, IdsToJson(*tok, ids, /*all_decodings=*/true));
          out.push_back(std::move(j));
          continue;
        }
        if (!t.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--batch: '", batch, "' has an element that is neither a string nor ids"));
        }
        ASSIGN_OR_RETURN(json j, EncodeToJson(*tok, t.get<std::string>(), !no_special,
                                              add_special_tokens, /*all_decodings=*/true));
        out.push_back(std::move(j));
      }
      std::printf("%s\n", Dump(out).c_str());
      return absl::OkStatus();
    }
    if (parser.WasSet("file")) {
      ASSIGN_OR_RETURN(text, ReadFile(file, "--file"));
    }
    ASSIGN_OR_RETURN(json j, EncodeToJson(*tok, text, !no_special, add_special_tokens));
    if (as_json) {
      std::printf("%s\n", Dump(j).c_str());
      return absl::OkStatus();
    }
    std::string line;
    for (size_t i = 0; i < j["ids"].size(); ++i) {
      absl::StrAppend(&line, i ? " " : "", j["ids"][i].get<int32_t>());
    }
    std::printf("%s\n", line.c_str());
    for (size_t i = 0; i < j["ids"].size(); ++i) {
      std::printf("%d\t%s\n", j["ids"][i].get<int32_t>(),
                  j["tokens"][i].get<std::string>().c_str());
    }
    return absl::OkStatus();
  });
}

}  // namespace tessera
