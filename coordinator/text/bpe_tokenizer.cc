// BPE tokenizers: Hugging Face tokenizer.json (byte-level, and char-level with byte_fallback as
// Llama/Mistral ship) and tiktoken files (see tokenizer.h).
#include "coordinator/text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

#ifdef TESSERA_HAVE_ICU
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#endif

namespace tessera {
namespace {

using json = nlohmann::json;

// Appends the UTF-8 encoding of code point `cp` to `out`.
void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Rust's char::is_whitespace (Unicode White_Space), used by the Strip normalizer.
bool IsUnicodeWhitespace(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// The byte of a ByteFallback token "<0xNN>" (as `tokenizers`: 6 bytes, "<0x" + two hex digits
// parsed by Rust's u8::from_str_radix, which also takes "+N"), or -1.
int ByteTokenValue(absl::string_view t) {
  if (t.size() != 6 || !absl::StartsWith(t, "<0x") || t[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  if (t[3] == '+') return hex(t[4]);
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD.

// The GPT-2 byte -> code point map: printable Latin-1 bytes map to themselves, the other 68
// bytes to 256, 257, ... in byte order.
void ByteToCodePoint(uint32_t table[256]) {
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? b : next++;
  }
}

// Decodes one UTF-8 code point at `s[*i]`, advancing `*i`; returns -1 when malformed.
int32_t NextCodePoint(absl::string_view s, size_t* i) {
  const auto c = static_cast<unsigned char>(s[*i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || *i + len > s.size()) {
    ++*i;
    return -1;
  }
  int32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[*i + k]) & 0x3F);
  *i += len;
  return cp;
}

// Like NextCodePoint, but strict UTF-8 (continuation bytes, no overlong forms, surrogates or
// values past U+10FFFF): on a malformed sequence advances one byte and returns -1, so that
// byte alone goes to byte fallback.
int32_t NextValidCodePoint(absl::string_view s, size_t* i) {
  const size_t start = *i;
  const int32_t cp = NextCodePoint(s, i);
  const size_t len = *i - start;
  bool ok = cp >= 0;
  for (size_t k = 1; ok && k < len; ++k) {
    ok = (static_cast<unsigned char>(s[start + k]) & 0xC0) == 0x80;
  }
  ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) &&
       !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) && !(cp >= 0xD800 && cp <= 0xDFFF);
  if (ok) return cp;
  *i = start + 1;
  return -1;
}

// NFC of `text`; text that is ASCII, not valid UTF-8, or built without ICU is returned as is.
std::string Nfc(absl::string_view text) {
  bool ascii = true;
  for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(text);
#ifdef TESSERA_HAVE_ICU
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&err);
  if (U_FAILURE(err)) return std::string(text);
  std::u16string in(text.size(), u'\0'), out;
  int32_t len = 0;
  u_strFromUTF8(reinterpret_cast<UChar*>(in.data()), static_cast<int32_t>(in.size()), &len,
                text.data(), static_cast<int32_t>(text.size()), &err);
  if (U_FAILURE(err)) return std::string(text);
  in.resize(len);
  if (unorm2_isNormalized(nfc, reinterpret_cast<const UChar*>(in.data()), len, &err) &&
      U_SUCCESS(err)) {
    return std::string(text);
  }
  err = U_ZERO_ERROR;
  out.resize(3 * in.size() + 16);  // NFC output is at most 3x the input in UTF-16.
  const int32_t out_len = unorm2_normalize(nfc, reinterpret_cast<const UChar*>(in.data()), len,
                                           reinterpret_cast<UChar*>(out.data()),
                                           static_cast<int32_t>(out.size()), &err);
  if (U_FAILURE(err)) return std::string(text);
  std::string utf8(3 * out_len + 4, '\0');
  int32_t utf8_len = 0;
  u_strToUTF8(utf8.data(), static_cast<int32_t>(utf8.size()), &utf8_len,
              reinterpret_cast<const UChar*>(out.data()), out_len, &err);
  if (U_FAILURE(err)) return std::string(text);
  utf8.resize(utf8_len);
  return utf8;
#else
  return std::string(text);
#endif
}


// Wraps PCRE2 code; owns it.
struct Regex {
  pcre2_code* code = nullptr;
  Regex() = default;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

// Compiles `pattern` (UTF + UCP, JIT when available); the error names `what`.
absl::StatusOr<std::unique_ptr<Regex>> CompileRegex(const std::string& pattern,
                                                    const std::string& what) {
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  auto re = std::make_unique<Regex>();
  re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                           PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, nullptr);
  if (re->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(errcode, msg, sizeof(msg));
    return absl::InvalidArgumentError(absl::StrCat(what, " does not compile at offset ", erroff,
                                                   ": ", reinterpret_cast<const char*>(msg)));
  }
  pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // Falls back to the interpreter.
  return re;
}

// BPE with added tokens, in two flavours:
//  - byte-level: over a vocabulary of byte-level strings (GPT-2 byte<->unicode map), with
//    pre-tokenizer splits. Loaded from tokenizer.json or a tiktoken file (whose raw-byte tokens
//    are converted to the same byte-level spelling).
//  - char-level (tokenizer.json without ByteLevel; Llama/Mistral/Gemma style): symbols are
//    Unicode characters, unknown ones become <0xNN> byte tokens (byte_fallback) or <unk>;
//    normalizer steps (Prepend, Replace, Strip, NFC), an optional Metaspace pre-tokenizer and
//    a decoder chain (Replace, ByteFallback, Fuse, Strip, Metaspace), as `tokenizers` does.
class BpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromHfJson(const std::string& path);
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromTiktoken(
      const std::string& path, const std::string& pattern,
      const std::vector<std::pair<std::string, int32_t>>& specials, int num_reserved,
      bool kimi_chunking);

  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> IdToToken(int32_t id) const override {
    if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) return std::nullopt;
    return id_to_token_[id];
  }
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && id < vocab_size() && is_special_[id];
  }
  absl::string_view format() const override { return format_; }
  bool AppendTokenBytes(int32_t id, bool skip_special_tokens, DecodeState* state,
                        std::string* out) const override;
  void FinishTokenBytes(DecodeState* state, std::string* out) const override;

 protected:
  std::vector<int32_t> EncodeImpl(absl::string_view text, bool allow_special) const override;

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
    bool lstrip = false;       // Absorbs the whitespace before it.
    bool rstrip = false;       // Absorbs the whitespace after it.
    bool single_word = false;  // Only matches between non-word characters.
    bool normalized = false;   // Matched in the normalized text (after the normalizer).
  };
  // One `normalizer` step of tokenizer.json.
  struct NormStep {
    enum Kind { kNfc, kPrepend, kReplace, kReplaceRegex, kStrip } kind;
    std::string a, b;            // Prepend: a. Replace: pattern a -> content b.
    std::unique_ptr<Regex> re;   // kReplaceRegex.
    bool left = false, right = false;  // kStrip.
  };
  // One per-token `decoder` step (char-level), or a whole-text step after Fuse.
  struct DecodeStep {
    enum Kind { kReplace, kStrip, kMetaspace } kind;
    std::string a, b;  // Replace: a -> b. Strip: a = the character. Metaspace: a = replacement.
    int start = 0, stop = 0;  // Strip.
    bool prepend = true;      // Metaspace: prepend_scheme is not "never".
  };
  enum class PrependScheme { kAlways, kFirst, kNever };
  // A char-level pre-tokenizer step: `tokenizers`' Split (String or Regex pattern, any
  // behavior, invert), or the Metaspace step (see the ms_* members).
  struct PreStep {
    enum Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
    bool metaspace = false;
    std::string literal;        // String pattern ("" when `re` is set).
    std::unique_ptr<Regex> re;  // Regex pattern.
    Behavior behavior = kIsolated;
    bool invert = false;
  };
  // A piece of text during char-level pre-tokenization; `first`: starts at input offset 0.
  struct Piece {
    std::string text;
    bool first;
  };

  BpeTokenizer() = default;
  // Fills id_to_token_, is_special_, the byte alphabet and the added-token index from vocab_
  // and `added`. Errors name `path`.
  absl::Status Finish(const std::string& path, std::vector<AddedToken> added);
  // Splits `text` on the added tokens of `added` (indexed by first byte in `by_first_byte`):
  // calls on_text(segment, byte offset in text) for the text between matches (possibly empty)
  // and on_token(id) for each match.
  void SplitAdded(absl::string_view text, const std::vector<AddedToken>& added,
                  const std::vector<int> (&by_first_byte)[256], bool allow_special,
                  const std::function<void(absl::string_view, size_t)>& on_text,
                  const std::function<void(int32_t)>& on_token) const;
  // The tokenizer.json normalizer applied to `text`.
  std::string Normalize(absl::string_view text) const;
  // Char-level: Metaspace pre-tokenizer (if any) and BPE of normalized text; `first` when the
  // text starts at offset 0 of the input (prepend_scheme "first").
  void EncodeCharLevel(absl::string_view text, bool first, std::vector<int32_t>* out) const;
  // Applies one Split step to `piece`, appending the resulting pieces to `out`.
  void SplitPiece(const PreStep& step, Piece piece, std::vector<Piece>* out) const;
  // Char-level BPE of one word (chars -> ids, byte fallback / unk, merges), appended to `out`.
  void EncodeWord(absl::string_view word, std::vector<int32_t>* out) const;
  // Applies the merges to `sym` (symbol ids) in place: lowest rank first, leftmost on ties.
  void MergeSymbols(std::vector<int32_t>* sym) const;
  // Decoder helpers (char-level): text after Fuse (Strip / Replace), and the pending byte run.
  void EmitDecoded(std::string text, DecodeState* state, std::string* out) const;
  void FlushByteRun(DecodeState* state, std::string* out) const;
  // Appends the pre-tokenized pieces of `text` (no added tokens inside) to `pieces`.
  void PreTokenize(absl::string_view text, std::vector<absl::string_view>* pieces) const;
  // BPE of one pre-tokenized piece (raw bytes), appended to `out`.
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const;
  // Encode without Kimi's chunking.
  std::vector<int32_t> EncodeChunk(absl::string_view text, bool allow_special) const;

  std::string format_;
  absl::flat_hash_map<std::string, int32_t> vocab_;  // token string -> id (model + added).
  std::vector<std::string> id_to_token_;             // id -> token string ("" when unused).
  std::vector<std::string> id_to_bytes_;             // id -> decoded bytes.
  std::vector<bool> is_special_;                     // id -> special added token.
  // (left id << 32 | right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  int32_t byte_to_id_[256];
  std::string byte_level_[256];  // byte -> its byte-level spelling (UTF-8).
  std::vector<AddedToken> added_;  // Sorted by content length, longest first.
  std::vector<int> added_by_first_byte_[256];  // Indices into added_, longest first.
  // Added tokens with normalized: true under a non-empty normalizer: matched in the normalized
  // text, their content normalized too (as `tokenizers`' split_normalized pass).
  std::vector<AddedToken> norm_added_;
  std::vector<int> norm_added_by_first_byte_[256];
  std::vector<NormStep> norm_;  // tokenizer.json normalizer, in order.
  // Char-level mode (see the class comment).
  bool char_level_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  int32_t unk_id_ = -1;
  int32_t byte_token_id_[256];  // Id of "<0xNN>", -1 when the vocabulary lacks it.
  absl::flat_hash_map<int32_t, int32_t> char_to_id_;  // Code point -> id of a 1-char token.
  absl::flat_hash_map<std::string, int32_t> model_vocab_;  // model.vocab only.
  std::vector<PreStep> pre_steps_;  // Char-level pre-tokenizer (Split / Metaspace), in order.
  bool metaspace_ = false;  // Metaspace pre-tokenizer (one of pre_steps_).
  std::string ms_replacement_;
  PrependScheme ms_scheme_ = PrependScheme::kAlways;
  bool ms_split_ = true;
  bool has_decoder_ = true;
  std::vector<DecodeStep> dec_token_;  // Per-token steps before ByteFallback / Fuse.
  bool dec_byte_fallback_ = false;
  std::vector<DecodeStep> dec_text_;   // Whole-text steps after Fuse.
  std::vector<std::unique_ptr<Regex>> splits_;
  // Unicode \w and \s (added-token single_word / lstrip / rstrip), compiled on demand.
  std::unique_ptr<Regex> word_re_, space_re_;
  // A piece that is itself in the vocabulary is one token (tokenizers' ignore_merges; what
  // tiktoken always does).
  bool ignore_merges_ = false;
  // Kimi's tokenization_kimi.py encodes 400k-character chunks, each split so that no run of
  // whitespace / non-whitespace exceeds 25k characters, separately.
  bool kimi_chunking_ = false;

  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

absl::Status BpeTokenizer::Finish(const std::string& path, std::vector<AddedToken> added) {
  int32_t max_id = -1;
  for (const auto& [s, id] : vocab_) max_id = std::max(max_id, id);
  for (const AddedToken& t : added) max_id = std::max(max_id, t.id);
  id_to_token_.assign(max_id + 1, std::string());
  is_special_.assign(max_id + 1, false);
  for (const auto& [s, id] : vocab_) id_to_token_[id] = s;
  for (const AddedToken& t : added) {
    vocab_[t.content] = t.id;
    id_to_token_[t.id] = t.content;
    is_special_[t.id] = t.special;
  }
  std::stable_sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  added_ = std::move(added);
  for (size_t k = 0; k < added_.size(); ++k) {
    added_by_first_byte_[static_cast<unsigned char>(added_[k].content[0])].push_back(
        static_cast<int>(k));
  }
  if (char_level_) {
    for (int b = 0; b < 256; ++b) {
      auto it = model_vocab_.find(absl::StrFormat("<0x%02X>", b));
      byte_token_id_[b] = it == model_vocab_.end() ? -1 : it->second;
    }
    for (const auto& [tok, id] : model_vocab_) {
      size_t i = 0;
      const int32_t cp = tok.empty() ? -1 : NextCodePoint(tok, &i);
      if (cp >= 0 && i == tok.size()) char_to_id_[cp] = id;
    }
    return absl::OkStatus();
  }
  // Byte-level alphabet.
  uint32_t cps[256];
  ByteToCodePoint(cps);
  int byte_of_char[0x200];
  for (int& b : byte_of_char) b = -1;
  for (int b = 0; b < 256; ++b) {
    AppendUtf8(cps[b], &byte_level_[b]);
    auto it = vocab_.find(byte_level_[b]);
    if (it == vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": field 'model.vocab' lacks the byte-level token for byte ", b));
    }
    byte_to_id_[b] = it->second;
    byte_of_char[cps[b]] = b;
  }
  // Decoded bytes of every token (ByteLevel decoder): each char maps back to a byte; a token
  // with any other char (an added token) is its UTF-8 text, as `tokenizers` does.
  id_to_bytes_.assign(max_id + 1, std::string());
  for (int32_t id = 0; id <= max_id; ++id) {
    const std::string& tok = id_to_token_[id];
    std::string& bytes = id_to_bytes_[id];
    bool ok = true;
    for (size_t i = 0; i < tok.size();) {
      const int32_t cp = NextCodePoint(tok, &i);
      if (cp < 0 || cp >= 0x200 || byte_of_char[cp] < 0) {
        ok = false;
        break;
      }
      bytes.push_back(static_cast<char>(byte_of_char[cp]));
    }
    if (!ok) bytes = tok;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromHfJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::stringstream buf;
  buf << in.rdbuf();
  json j = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  auto err = [&](const std::string& field, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field '", field, "' ", what));
  };
  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  tok->format_ = "tokenizer.json";
  auto is_set = [](const json& o, const char* key) {
    return o.contains(key) && !o[key].is_null();
  };
  try {
    // Byte-level (a ByteLevel pre-tokenizer or decoder) or char-level (everything else).
    const json none;
    const json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : none;
    const json& dec = j.contains("decoder") ? j["decoder"] : none;
    std::vector<json> pre_steps;
    if (pre.is_object()) {
      if (pre.value("type", std::string()) == "Sequence") {
        if (!pre.contains("pretokenizers") || !pre["pretokenizers"].is_array()) {
          return err("pre_tokenizer.pretokenizers", "missing or not an array");
        }
        for (const json& s : pre["pretokenizers"]) pre_steps.push_back(s);
      } else {
        pre_steps.push_back(pre);
      }
    } else if (!pre.is_null()) {
      return err("pre_tokenizer", "is neither an object nor null");
    }
    bool byte_level = dec.is_object() && dec.value("type", std::string()) == "ByteLevel";
    for (const json& s : pre_steps) byte_level |= s.value("type", std::string()) == "ByteLevel";
    tok->char_level_ = !byte_level;

    // Model.
    if (!j.contains("model") || !j["model"].is_object()) return err("model", "missing");
    const json& model = j["model"];
    if (model.value("type", std::string("BPE")) != "BPE") {
      return err("model.type", absl::StrCat("'", model.value("type", std::string()),
                                            "' is not supported (BPE only)"));
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return err("model.vocab", "missing or not an object");
    }
    if (is_set(model, "dropout") &&
        (!model["dropout"].is_number() || model["dropout"].get<double>() != 0.0)) {
      return err("model.dropout", "is not supported (BPE dropout is random; use null)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (is_set(model, key) && model[key] != "") {
        return err(absl::StrCat("model.", key), "is not supported (use null)");
      }
    }
    tok->byte_fallback_ = model.value("byte_fallback", false);
    tok->fuse_unk_ = model.value("fuse_unk", false);
    tok->ignore_merges_ = model.value("ignore_merges", false);
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0) {
        return err("model.vocab", absl::StrCat("has a bad id for '", it.key(), "'"));
      }
      tok->vocab_[it.key()] = it.value().get<int32_t>();
    }
    if (tok->char_level_) {
      tok->model_vocab_ = tok->vocab_;
      if (is_set(model, "unk_token")) {
        const std::string unk = model["unk_token"].get<std::string>();
        auto it = tok->vocab_.find(unk);
        if (it == tok->vocab_.end()) {
          return err("model.unk_token", absl::StrCat("'", unk, "' is not in model.vocab"));
        }
        tok->unk_id_ = it->second;
      }
    }
    std::vector<AddedToken> added;
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        if (!a.contains("id") || !a.contains("content")) {
          return err("added_tokens", "entry without id/content");
        }
        const bool special = a.value("special", false);
        AddedToken t{a["content"].get<std::string>(), a["id"].get<int32_t>(), special,
                     a.value("lstrip", false), a.value("rstrip", false),
                     a.value("single_word", false), a.value("normalized", !special)};
        if (t.id < 0 || t.content.empty()) return err("added_tokens", "bad entry");
        if (t.lstrip || t.rstrip || t.single_word) {
          auto word = CompileRegex(R"(\w)", "added-token word class");
          auto space = CompileRegex(R"(\s)", "added-token space class");
          if (!word.ok() || !space.ok()) return err("added_tokens", "regex setup failed");
          tok->word_re_ = *std::move(word);
          tok->space_re_ = *std::move(space);
        }
        added.push_back(std::move(t));
      }
    }
    RETURN_IF_ERROR(tok->Finish(path, std::move(added)));

    // Merges.
    if (!model.contains("merges") || !model["merges"].is_array()) {
      return err("model.merges", "missing or not an array");
    }
    const json& merges = model["merges"];
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      std::string a, b;
      const json& m = merges[rank];
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) return err("model.merges", absl::StrCat("entry ", rank));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return err("model.merges", absl::StrCat("entry ", rank, " is malformed"));
      }
      auto ia = tok->vocab_.find(a), ib = tok->vocab_.find(b), im = tok->vocab_.find(a + b);
      if (ia == tok->vocab_.end() || ib == tok->vocab_.end() || im == tok->vocab_.end()) {
        return err("model.merges", absl::StrCat("entry ", rank, " uses unknown tokens"));
      }
      const uint64_t key = (static_cast<uint64_t>(ia->second) << 32) |
                           static_cast<uint32_t>(ib->second);
      tok->merges_.try_emplace(key, static_cast<int32_t>(rank), im->second);
    }

    // Normalizer: a step or a (nested) Sequence of steps.
    std::function<absl::Status(const json&, const std::string&)> add_norm =
        [&](const json& n, const std::string& field) -> absl::Status {
      if (n.is_null()) return absl::OkStatus();
      if (!n.is_object()) return err(field, "is neither an object nor null");
      const std::string type = n.value("type", std::string());
      NormStep step;
      if (type == "Sequence") {
        if (!n.contains("normalizers") || !n["normalizers"].is_array()) {
          return err(field + ".normalizers", "missing or not an array");
        }
        for (size_t k = 0; k < n["normalizers"].size(); ++k) {
          RETURN_IF_ERROR(add_norm(n["normalizers"][k], absl::StrCat(field, ".normalizers[", k,
                                                                     "]")));
        }
        return absl::OkStatus();
      } else if (type == "NFC") {
        step.kind = NormStep::kNfc;
      } else if (type == "Prepend") {
        step.kind = NormStep::kPrepend;
        step.a = n.value("prepend", std::string());
        if (step.a.empty()) return absl::OkStatus();
      } else if (type == "Replace") {
        const json& pat = n.contains("pattern") ? n["pattern"] : none;
        step.b = n.value("content", std::string());
        if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
          step.kind = NormStep::kReplace;
          step.a = pat["String"].get<std::string>();
          if (step.a.empty()) return err(field + ".pattern.String", "is empty");
        } else if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
          step.kind = NormStep::kReplaceRegex;
          auto re = CompileRegex(pat["Regex"].get<std::string>(),
                                 absl::StrCat(path, ": field '", field, ".pattern.Regex'"));
          if (!re.ok()) return re.status();
          step.re = *std::move(re);
        } else {
          return err(field + ".pattern", "needs a String or a Regex");
        }
      } else if (type == "Strip") {
        step.kind = NormStep::kStrip;
        step.left = n.value("strip_left", false);
        step.right = n.value("strip_right", false);
      } else {
        return err(field + ".type", absl::StrCat("'", type,
                                                 "' is not supported (NFC, Prepend, Replace, "
                                                 "Strip and Sequence are)"));
      }
      tok->norm_.push_back(std::move(step));
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(add_norm(j.contains("normalizer") ? j["normalizer"] : none, "normalizer"));
    if (!tok->norm_.empty()) {
      // normalized: true added tokens are matched after normalization, in normalized form.
      std::vector<AddedToken> raw;
      for (AddedToken& t : tok->added_) {
        if (!t.normalized) {
          raw.push_back(std::move(t));
          continue;
        }
        t.content = tok->Normalize(t.content);
        if (!t.content.empty()) tok->norm_added_.push_back(std::move(t));
      }
      tok->added_ = std::move(raw);
      for (auto* list : {&tok->added_, &tok->norm_added_}) {
        std::stable_sort(list->begin(), list->end(), [](const AddedToken& a, const AddedToken& b) {
          return a.content.size() > b.content.size();
        });
      }
      for (auto& v : tok->added_by_first_byte_) v.clear();
      for (size_t k = 0; k < tok->added_.size(); ++k) {
        tok->added_by_first_byte_[static_cast<unsigned char>(tok->added_[k].content[0])]
            .push_back(static_cast<int>(k));
      }
      for (size_t k = 0; k < tok->norm_added_.size(); ++k) {
        tok->norm_added_by_first_byte_[static_cast<unsigned char>(
                                           tok->norm_added_[k].content[0])]
            .push_back(static_cast<int>(k));
      }
    }

    // Pre-tokenizer.
    for (const json& s : pre_steps) {
      const std::string type = s.value("type", std::string());
      if (type == "ByteLevel") {
        if (s.value("use_regex", true) || s.value("add_prefix_space", false)) {
          return err("pre_tokenizer.ByteLevel",
                     "use_regex/add_prefix_space true is not supported");
        }
      } else if (type == "Split" && !tok->char_level_) {
        if (s.value("behavior", std::string()) != "Isolated" || s.value("invert", false)) {
          return err("pre_tokenizer.Split", "only behavior Isolated, invert false supported");
        }
        if (!s.contains("pattern") || !s["pattern"].contains("Regex")) {
          return err("pre_tokenizer.Split.pattern", "needs a Regex");
        }
        auto re = CompileRegex(s["pattern"]["Regex"].get<std::string>(),
                               absl::StrCat(path, ": field 'pre_tokenizer.Split.pattern'"));
        if (!re.ok()) return re.status();
        tok->splits_.push_back(*std::move(re));
      } else if (type == "Split" && tok->char_level_) {
        PreStep step;
        const json& pat = s.contains("pattern") ? s["pattern"] : none;
        if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
          step.literal = pat["String"].get<std::string>();
          if (step.literal.empty()) return err("pre_tokenizer.Split.pattern.String", "is empty");
        } else if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
          auto re = CompileRegex(pat["Regex"].get<std::string>(),
                                 absl::StrCat(path, ": field 'pre_tokenizer.Split.pattern'"));
          if (!re.ok()) return re.status();
          step.re = *std::move(re);
        } else {
          return err("pre_tokenizer.Split.pattern", "needs a String or a Regex");
        }
        const std::string behavior = s.value("behavior", std::string());
        if (behavior == "Removed") {
          step.behavior = PreStep::kRemoved;
        } else if (behavior == "Isolated") {
          step.behavior = PreStep::kIsolated;
        } else if (behavior == "MergedWithPrevious") {
          step.behavior = PreStep::kMergedWithPrevious;
        } else if (behavior == "MergedWithNext") {
          step.behavior = PreStep::kMergedWithNext;
        } else if (behavior == "Contiguous") {
          step.behavior = PreStep::kContiguous;
        } else {
          return err("pre_tokenizer.Split.behavior", absl::StrCat("'", behavior,
                                                                  "' is not supported"));
        }
        step.invert = s.value("invert", false);
        tok->pre_steps_.push_back(std::move(step));
      } else if (type == "Metaspace" && tok->char_level_ && !tok->metaspace_) {
        PreStep step;
        step.metaspace = true;
        tok->pre_steps_.push_back(std::move(step));
        tok->metaspace_ = true;
        tok->ms_replacement_ = s.value("replacement", std::string("\u2581"));
        size_t i = 0;
        if (tok->ms_replacement_.empty() ||
            (NextCodePoint(tok->ms_replacement_, &i), i != tok->ms_replacement_.size())) {
          return err("pre_tokenizer.replacement", "must be one character");
        }
        if (s.contains("prepend_scheme")) {
          const std::string scheme = s.value("prepend_scheme", std::string());
          if (scheme == "always") {
            tok->ms_scheme_ = PrependScheme::kAlways;
          } else if (scheme == "first") {
            tok->ms_scheme_ = PrependScheme::kFirst;
          } else if (scheme == "never") {
            tok->ms_scheme_ = PrependScheme::kNever;
          } else {
            return err("pre_tokenizer.prepend_scheme",
                       absl::StrCat("'", scheme, "' is not always, first or never"));
          }
        } else {  // Legacy files: add_prefix_space (default true) means "always".
          tok->ms_scheme_ = s.value("add_prefix_space", true) ? PrependScheme::kAlways
                                                              : PrependScheme::kNever;
        }
        tok->ms_split_ = s.value("split", true);
      } else {
        return err("pre_tokenizer.type",
                   absl::StrCat("'", type, "' is not supported with ",
                                tok->char_level_
                                    ? "a char-level model (Split and one Metaspace are)"
                                    : "ByteLevel (Split is)"));
      }
    }

    // Decoder.
    if (!tok->char_level_) {
      if (dec.is_object() && dec.value("type", std::string()) != "ByteLevel") {
        return err("decoder.type", "only ByteLevel is supported with a ByteLevel pre-tokenizer");
      }
    } else if (dec.is_null()) {
      tok->has_decoder_ = false;  // `tokenizers` joins the tokens with spaces.
    } else {
      std::vector<json> steps;
      if (dec.value("type", std::string()) == "Sequence") {
        if (!dec.contains("decoders") || !dec["decoders"].is_array()) {
          return err("decoder.decoders", "missing or not an array");
        }
        for (const json& d : dec["decoders"]) steps.push_back(d);
      } else {
        steps.push_back(dec);
      }
      // Accepted shape: per-token steps (Replace, Strip, Metaspace), then ByteFallback, then
      // Fuse, then whole-text steps (Strip without stop, one-character Replace).
      int phase = 0;  // 0: per token, 1: after ByteFallback, 2: after Fuse.
      bool text_strip = false;
      for (size_t k = 0; k < steps.size(); ++k) {
        const json& d = steps[k];
        const std::string field = absl::StrCat("decoder.decoders[", k, "]");
        const std::string type = d.value("type", std::string());
        DecodeStep step;
        if (type == "ByteFallback" && phase == 0) {
          tok->dec_byte_fallback_ = true;
          phase = 1;
          continue;
        } else if (type == "Fuse") {
          phase = 2;
          continue;
        } else if (type == "Replace") {
          step.kind = DecodeStep::kReplace;
          if (!d.contains("pattern") || !d["pattern"].contains("String")) {
            return err(field + ".pattern", "needs a String (Regex is not supported)");
          }
          step.a = d["pattern"]["String"].get<std::string>();
          step.b = d.value("content", std::string());
          size_t i = 0;
          if (step.a.empty()) return err(field + ".pattern.String", "is empty");
          NextCodePoint(step.a, &i);
          if (phase != 0 && i != step.a.size()) {
            return err(field, "Replace of more than one character after ByteFallback/Fuse is "
                              "not supported");
          }
        } else if (type == "Strip") {
          step.kind = DecodeStep::kStrip;
          step.a = d.value("content", std::string(" "));
          step.start = d.value("start", 0);
          step.stop = d.value("stop", 0);
          size_t i = 0;
          if (step.a.empty() || (NextCodePoint(step.a, &i), i != step.a.size())) {
            return err(field + ".content", "must be one character");
          }
          if (phase == 1) return err(field, "Strip between ByteFallback and Fuse is not supported");
          if (phase == 2 && (step.stop != 0 || text_strip)) {
            return err(field, "Strip after Fuse supports start only, once");
          }
          text_strip |= phase == 2;
        } else if (type == "Metaspace" && phase == 0) {
          step.kind = DecodeStep::kMetaspace;
          step.a = d.value("replacement", std::string("\u2581"));
          const std::string scheme = d.value("prepend_scheme", std::string());
          step.prepend = d.contains("prepend_scheme") ? scheme != "never"
                                                      : d.value("add_prefix_space", true);
        } else {
          return err(field + ".type",
                     absl::StrCat("'", type, "' is not supported here (Replace, Strip, Metaspace, "
                                             "ByteFallback, Fuse in that order are)"));
        }
        (phase == 0 ? tok->dec_token_ : tok->dec_text_).push_back(std::move(step));
      }
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  // Post-processor (what encode(add_special_tokens=True) adds, e.g. Llama/Mistral's BOS).
  if (j.contains("post_processor") && !j["post_processor"].is_null()) {
    ASSIGN_OR_RETURN(std::vector<PostStep> post,
                     ParsePostProcessor(path, j["post_processor"].dump(), tok->vocab_size()));
    tok->set_post_processor(std::move(post));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromTiktoken(
    const std::string& path, const std::string& pattern,
    const std::vector<std::pair<std::string, int32_t>>& specials, int num_reserved,
    bool kimi_chunking) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  tok->format_ = "tiktoken";
  tok->ignore_merges_ = true;
  tok->kimi_chunking_ = kimi_chunking;
  uint32_t cps[256];
  ByteToCodePoint(cps);
  std::vector<std::string> by_rank;  // rank -> raw bytes.
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty()) continue;
    const size_t sp = l.find(' ');
    std::string bytes;
    int32_t rank = -1;
    if (sp == absl::string_view::npos || !absl::Base64Unescape(l.substr(0, sp), &bytes) ||
        bytes.empty() || !absl::SimpleAtoi(l.substr(sp + 1), &rank) || rank < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no, ": expected 'base64(token) rank', got '", l.substr(0, 80), "'"));
    }
    std::string spelled;
    for (unsigned char c : bytes) AppendUtf8(cps[c], &spelled);
    if (!tok->vocab_.emplace(spelled, rank).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": duplicate token"));
    }
    if (static_cast<size_t>(rank) >= by_rank.size()) by_rank.resize(rank + 1);
    by_rank[rank] = std::move(bytes);
  }
  if (tok->vocab_.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));
  std::vector<AddedToken> added;
  for (const auto& [content, id] : specials) {
    if (content.empty() || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad special token '", content,
                                                     "' id ", id));
    }
    added.push_back({content, id, true});
  }
  const int32_t num_base = static_cast<int32_t>(tok->vocab_.size());
  for (int32_t id = num_base; id < num_base + num_reserved; ++id) {
    bool named = false;
    for (const auto& s : specials) named |= s.second == id;
    if (!named) added.push_back({absl::StrCat("<|reserved_token_", id, "|>"), id, true});
  }
  RETURN_IF_ERROR(tok->Finish(path, std::move(added)));
  // tiktoken merges the adjacent pair whose concatenation has the lowest rank: every split of a
  // token into two tokens is a merge of that token's rank.
  for (size_t rank = 0; rank < by_rank.size(); ++rank) {
    const std::string& t = by_rank[rank];
    if (t.size() < 2) continue;
    std::string left;
    for (size_t k = 1; k < t.size(); ++k) {
      left.clear();
      std::string right;
      for (size_t i = 0; i < k; ++i) AppendUtf8(cps[static_cast<unsigned char>(t[i])], &left);
      for (size_t i = k; i < t.size(); ++i) {
        AppendUtf8(cps[static_cast<unsigned char>(t[i])], &right);
      }
      auto ia = tok->vocab_.find(left), ib = tok->vocab_.find(right);
      if (ia == tok->vocab_.end() || ib == tok->vocab_.end()) continue;
      const uint64_t key = (static_cast<uint64_t>(ia->second) << 32) |
                           static_cast<uint32_t>(ib->second);
      tok->merges_.try_emplace(key, static_cast<int32_t>(rank), static_cast<int32_t>(rank));
    }
  }
  auto re = CompileRegex(pattern, absl::StrCat(path, ": the pre-tokenizer pattern"));
  if (!re.ok()) return re.status();
  tok->splits_.push_back(*std::move(re));
  return tok;
}

void BpeTokenizer::PreTokenize(absl::string_view text,
                               std::vector<absl::string_view>* pieces) const {
  std::vector<absl::string_view> cur{text}, next;
  for (const auto& re : splits_) {
    next.clear();
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re->code, nullptr);
    for (absl::string_view piece : cur) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t pos = 0, prev = 0;
      // PCRE2 validates the whole subject on every call unless told not to: check once.
      uint32_t options = 0;
      while (pos <= piece.size()) {
        const int rc = pcre2_match(re->code, subject, piece.size(), pos, options, md, nullptr);
        if (rc < 0) break;  // No more matches (or invalid UTF-8: the rest is one piece).
        options = PCRE2_NO_UTF_CHECK;
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t s = ov[0], e = ov[1];
        if (s > prev) next.push_back(piece.substr(prev, s - prev));
        if (e > s) {
          next.push_back(piece.substr(s, e - s));
          prev = pos = e;
        } else {
          // Empty match: nothing to emit; step over one code point.
          prev = s;
          pos = s + 1;
          while (pos < piece.size() && (static_cast<unsigned char>(piece[pos]) & 0xC0) == 0x80) {
            ++pos;
          }
        }
      }
      if (prev < piece.size()) next.push_back(piece.substr(prev));
    }
    pcre2_match_data_free(md);
    cur.swap(next);
  }
  for (absl::string_view p : cur) {
    if (!p.empty()) pieces->push_back(p);
  }
}

void BpeTokenizer::MergeSymbols(std::vector<int32_t>* symbols) const {
  // Symbols form a linked list; a min-heap holds candidate pairs ordered by (rank, position),
  // so the lowest-rank pair is merged first and the leftmost one on ties, as `tokenizers`
  // and tiktoken do. A popped pair is stale if either symbol changed since it was pushed.
  // O(n log n) in the number of symbols, so a long unsplit text (char-level files have no
  // pre-tokenizer) is never rescanned.
  std::vector<int32_t>& sym = *symbols;
  const int n = static_cast<int>(sym.size());
  if (n < 2) return;
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Cand {
    int32_t rank;
    int pos;
    int32_t left, right, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    const int32_t l = sym[i], r = sym[next[i]];
    auto it = merges_.find((static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(r));
    if (it != merges_.end()) heap.push({it->second.first, i, l, r, it->second.second});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int j = next[c.pos];
    if (sym[c.pos] != c.left || j < 0 || sym[j] != c.right) continue;  // Stale.
    sym[c.pos] = c.merged;
    sym[j] = -1;
    next[c.pos] = next[j];
    if (next[j] >= 0) prev[next[j]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  int k = 0;
  for (int i = 0; i >= 0; i = next[i]) sym[k++] = sym[i];
  sym.resize(k);
}

void BpeTokenizer::EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const {
  if (piece.size() == 1) {
    out->push_back(byte_to_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  if (ignore_merges_) {
    std::string spelled;
    for (unsigned char c : piece) spelled += byte_level_[c];
    auto it = vocab_.find(spelled);
    if (it != vocab_.end() && !is_special_[it->second]) ids.push_back(it->second);
  }
  if (ids.empty()) {
    ids.reserve(piece.size());
    for (unsigned char c : piece) ids.push_back(byte_to_id_[c]);
    MergeSymbols(&ids);
  }
  out->insert(out->end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() > (1u << 16)) cache_.clear();
  cache_.emplace(std::string(piece), std::move(ids));
}

void BpeTokenizer::EncodeWord(absl::string_view word, std::vector<int32_t>* out) const {
  constexpr size_t kMaxCached = 256;  // Long unsplit segments are not worth caching.
  const bool cacheable = word.size() <= kMaxCached;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  auto whole = ignore_merges_ ? model_vocab_.find(word) : model_vocab_.end();
  if (whole != model_vocab_.end()) {
    ids.push_back(whole->second);
  } else {
    // `tokenizers`' BPE::merge_word: each character is its token, else its <0xNN> byte tokens
    // (byte_fallback, when all exist), else <unk> (consecutive ones fused with fuse_unk), else
    // dropped (no unk_token). A pending <unk> is flushed before the next known character only,
    // not before byte tokens, exactly as there.
    ids.reserve(word.size());
    bool unk = false;
    for (size_t i = 0; i < word.size();) {
      const size_t start = i;
      const int32_t cp = NextValidCodePoint(word, &i);
      auto it = cp >= 0 ? char_to_id_.find(cp) : char_to_id_.end();
      if (it != char_to_id_.end()) {
        if (unk) ids.push_back(unk_id_);
        unk = false;
        ids.push_back(it->second);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (size_t b = start; b < i; ++b) {
          all &= byte_token_id_[static_cast<unsigned char>(word[b])] >= 0;
        }
        if (all) {
          for (size_t b = start; b < i; ++b) {
            ids.push_back(byte_token_id_[static_cast<unsigned char>(word[b])]);
          }
          continue;
        }
      }
      if (unk_id_ >= 0) {
        if (unk && !fuse_unk_) ids.push_back(unk_id_);
        unk = true;
      }
    }
    if (unk) ids.push_back(unk_id_);
    MergeSymbols(&ids);
  }
  out->insert(out->end(), ids.begin(), ids.end());
  if (!cacheable) return;
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() > (1u << 16)) cache_.clear();
  cache_.emplace(std::string(word), std::move(ids));
}

void BpeTokenizer::EncodeCharLevel(absl::string_view text, bool first,
                                   std::vector<int32_t>* out) const {
  if (text.empty()) return;
  if (pre_steps_.empty()) {  // No pre-tokenizer: the whole segment is one word.
    EncodeWord(text, out);
    return;
  }
  std::vector<Piece> cur, next;
  cur.push_back({std::string(text), first});
  for (const PreStep& step : pre_steps_) {
    next.clear();
    for (Piece& p : cur) {
      if (!step.metaspace) {
        SplitPiece(step, std::move(p), &next);
        continue;
      }
      // Metaspace: spaces become the replacement, which is prepended (always; first: only to
      // the piece at the start of the input) unless already there; split: each replacement
      // starts a new piece (`tokenizers`' MergedWithNext).
      std::string s = absl::StrReplaceAll(p.text, {{" ", ms_replacement_}});
      const bool prepend = ms_scheme_ == PrependScheme::kAlways ||
                           (ms_scheme_ == PrependScheme::kFirst && p.first);
      if (prepend && !absl::StartsWith(s, ms_replacement_)) s.insert(0, ms_replacement_);
      if (!ms_split_) {
        next.push_back({std::move(s), p.first});
        continue;
      }
      absl::string_view rest = s;
      bool at_start = p.first;
      while (!rest.empty()) {
        size_t cut = rest.find(ms_replacement_, absl::StartsWith(rest, ms_replacement_)
                                                    ? ms_replacement_.size()
                                                    : 0);
        if (cut == absl::string_view::npos) cut = rest.size();
        next.push_back({std::string(rest.substr(0, cut)), at_start});
        at_start = false;
        rest.remove_prefix(cut);
      }
    }
    cur.swap(next);
  }
  for (const Piece& p : cur) {
    if (!p.text.empty()) EncodeWord(p.text, out);
  }
}

void BpeTokenizer::SplitPiece(const PreStep& step, Piece piece, std::vector<Piece>* out) const {
  // Spans covering the piece, each a match of the pattern or not (as `tokenizers`'
  // find_matches), then grouped by the behavior; empty pieces are dropped.
  const std::string& t = piece.text;
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;
  size_t prev = 0;
  auto add_match = [&](size_t s, size_t e) {
    if (s > prev) spans.push_back({{prev, s}, false});
    spans.push_back({{s, e}, true});
    prev = e;
  };
  if (step.re == nullptr) {
    for (size_t pos = t.find(step.literal); pos != std::string::npos;
         pos = t.find(step.literal, pos + step.literal.size())) {
      add_match(pos, pos + step.literal.size());
    }
  } else {
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
        pcre2_match_data_create_from_pattern(step.re->code, nullptr), pcre2_match_data_free);
    size_t pos = 0;
    uint32_t options = 0;
    while (pos <= t.size()) {
      const int rc = pcre2_match(step.re->code, reinterpret_cast<PCRE2_SPTR>(t.data()),
                                 t.size(), pos, options, md.get(), nullptr);
      if (rc < 0) break;
      options = PCRE2_NO_UTF_CHECK;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      if (ov[1] > ov[0]) {
        add_match(ov[0], ov[1]);
        pos = ov[1];
      } else {  // Empty match: step over one character.
        pos = ov[0] + 1;
        while (pos < t.size() && (static_cast<unsigned char>(t[pos]) & 0xC0) == 0x80) ++pos;
      }
    }
  }
  if (prev < t.size()) spans.push_back({{prev, t.size()}, false});
  if (step.invert) {
    for (auto& sp : spans) sp.second = !sp.second;
  }
  std::vector<std::pair<size_t, size_t>> parts;
  bool previous_match = false;
  switch (step.behavior) {
    case PreStep::kRemoved:
      for (const auto& [range, is_match] : spans) {
        if (!is_match) parts.push_back(range);
      }
      break;
    case PreStep::kIsolated:
      for (const auto& [range, is_match] : spans) parts.push_back(range);
      break;
    case PreStep::kMergedWithPrevious:
      for (const auto& [range, is_match] : spans) {
        if (is_match && !previous_match && !parts.empty()) {
          parts.back().second = range.second;
        } else {
          parts.push_back(range);
        }
        previous_match = is_match;
      }
      break;
    case PreStep::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->second && !previous_match && !parts.empty()) {
          parts.back().first = it->first.first;
        } else {
          parts.push_back(it->first);
        }
        previous_match = it->second;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    case PreStep::kContiguous:
      for (size_t k = 0; k < spans.size(); ++k) {
        if (k > 0 && spans[k].second == previous_match) {
          parts.back().second = spans[k].first.second;
        } else {
          parts.push_back(spans[k].first);
        }
        previous_match = spans[k].second;
      }
      break;
  }
  for (const auto& [s, e] : parts) {
    if (e > s) out->push_back({t.substr(s, e - s), piece.first && s == 0});
  }
}

std::string BpeTokenizer::Normalize(absl::string_view text) const {
  std::string s(text);
  for (const NormStep& step : norm_) {
    switch (step.kind) {
      case NormStep::kNfc:
        s = Nfc(s);
        break;
      case NormStep::kPrepend:
        if (!s.empty()) s.insert(0, step.a);
        break;
      case NormStep::kReplace:
        s = absl::StrReplaceAll(s, {{step.a, step.b}});
        break;
      case NormStep::kReplaceRegex: {
        std::string out;
        std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
            pcre2_match_data_create_from_pattern(step.re->code, nullptr), pcre2_match_data_free);
        size_t pos = 0, copied = 0;
        uint32_t options = 0;
        while (pos <= s.size()) {
          const int rc = pcre2_match(step.re->code, reinterpret_cast<PCRE2_SPTR>(s.data()),
                                     s.size(), pos, options, md.get(), nullptr);
          if (rc < 0) break;
          options = PCRE2_NO_UTF_CHECK;
          const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
          if (ov[1] == ov[0]) {  // Empty match: replace nothing, step over one character.
            pos = ov[0] + 1;
            while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
            continue;
          }
          out.append(s, copied, ov[0] - copied);
          out += step.b;
          copied = pos = ov[1];
        }
        out.append(s, copied, std::string::npos);
        s = std::move(out);
        break;
      }
      case NormStep::kStrip: {
        size_t begin = 0, end = s.size();
        if (step.left) {
          while (begin < end) {
            size_t i = begin;
            if (!IsUnicodeWhitespace(NextCodePoint(s, &i))) break;
            begin = i;
          }
        }
        if (step.right) {
          while (end > begin) {
            size_t p = end - 1;
            while (p > begin && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
            size_t i = p;
            if (!IsUnicodeWhitespace(NextCodePoint(s, &i)) || i != end) break;
            end = p;
          }
        }
        s = s.substr(begin, end - begin);
        break;
      }
    }
  }
  return s;
}

// Python's str.isspace() for one code point.
bool IsPythonSpace(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Kimi's chunking (tokenization_kimi.py): 400000-character chunks, each cut so that no run of
// whitespace or of non-whitespace characters is longer than 25000 characters.
std::vector<absl::string_view> KimiSplit(absl::string_view text) {
  constexpr int kMaxChunkChars = 400000, kMaxRun = 25000;
  std::vector<absl::string_view> out;
  size_t chunk_start = 0, slice_start = 0;
  int chunk_chars = 0, run = 0;
  bool run_is_space = false;
  for (size_t i = 0; i < text.size();) {
    if (chunk_chars == kMaxChunkChars) {  // A new chunk starts a new slice.
      out.push_back(text.substr(slice_start, i - slice_start));
      chunk_start = slice_start = i;
      chunk_chars = 0;
    }
    size_t next = i;
    const int32_t cp = NextCodePoint(text, &next);
    const bool is_space = IsPythonSpace(cp);
    if (i == chunk_start) {
      run_is_space = is_space;
      run = 1;
    } else if (is_space != run_is_space) {
      run_is_space = is_space;
      run = 1;
    } else if (++run > kMaxRun) {
      out.push_back(text.substr(slice_start, i - slice_start));
      slice_start = i;
      run = 1;
    }
    ++chunk_chars;
    i = next;
  }
  out.push_back(text.substr(slice_start));
  return out;
}

std::vector<int32_t> BpeTokenizer::EncodeImpl(absl::string_view text, bool allow_special) const {
  if (!kimi_chunking_ || text.size() <= 25000) return EncodeChunk(text, allow_special);
  std::vector<int32_t> out;
  for (absl::string_view part : KimiSplit(text)) {
    const std::vector<int32_t> ids = EncodeChunk(part, allow_special);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

void BpeTokenizer::SplitAdded(absl::string_view text, const std::vector<AddedToken>& added,
                              const std::vector<int> (&by_first_byte)[256], bool allow_special,
                              const std::function<void(absl::string_view, size_t)>& on_text,
                              const std::function<void(int32_t)>& on_token) const {
  // Added tokens, as `tokenizers`' AddedVocabulary: at each position the longest token matches
  // (non-overlapping, left to right); a special one when specials are not allowed, or a
  // single_word one touching a word character, is dropped as a match and stays text; lstrip /
  // rstrip widen the match over adjacent whitespace (not into the previous match).
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(nullptr,
                                                                     pcre2_match_data_free);
  int valid = -1;  // Whether `text` is valid UTF-8 (checked once, when a flag needs it).
  auto valid_utf8 = [&] {
    if (valid < 0) valid = ToValidUtf8(text) == text;
    return valid == 1;
  };
  auto one_char_matches = [&](const Regex& re, size_t pos) {
    if (md == nullptr) md.reset(pcre2_match_data_create(1, nullptr));
    const int rc = pcre2_match(re.code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                               pos, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    return rc >= 0;
  };
  auto prev_char = [&](size_t pos) {  // Start of the code point before `pos`.
    size_t p = pos - 1;
    while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
    return p;
  };
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    for (const int k : by_first_byte[static_cast<unsigned char>(text[i])]) {
      const AddedToken& a = added[k];  // Longest first.
      if (i + a.content.size() <= text.size() &&
          text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t begin = i, stop = i + hit->content.size();
    if (hit->special && !allow_special) {
      i = stop;
      continue;
    }
    if (hit->single_word && valid_utf8()) {
      const bool word_before = begin > 0 && one_char_matches(*word_re_, prev_char(begin));
      const bool word_after = stop < text.size() && one_char_matches(*word_re_, stop);
      if (word_before || word_after) {
        i = stop;
        continue;
      }
    }
    if (hit->lstrip && valid_utf8()) {
      while (begin > start && one_char_matches(*space_re_, prev_char(begin))) {
        begin = prev_char(begin);
      }
    }
    if (hit->rstrip && valid_utf8()) {
      while (stop < text.size() && one_char_matches(*space_re_, stop)) {
        size_t next = stop + 1;
        while (next < text.size() && (static_cast<unsigned char>(text[next]) & 0xC0) == 0x80) {
          ++next;
        }
        stop = next;
      }
    }
    on_text(text.substr(start, begin - start), start);
    on_token(hit->id);
    i = stop;
    start = i;
  }
  on_text(text.substr(start), start);
}

std::vector<int32_t> BpeTokenizer::EncodeChunk(absl::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  std::vector<absl::string_view> pieces;
  // Normalized text (no added tokens inside) -> ids; `first`: it starts the input.
  auto encode_normalized = [&](absl::string_view t, bool first) {
    if (t.empty()) return;
    if (char_level_) {
      EncodeCharLevel(t, first, &out);
      return;
    }
    pieces.clear();
    PreTokenize(t, &pieces);
    for (absl::string_view p : pieces) EncodePiece(p, &out);
  };
  auto on_token = [&](int32_t id) { out.push_back(id); };
  // Added tokens are matched on the raw text; only the text between them is normalized, then
  // split on the normalized added tokens.
  SplitAdded(
      text, added_, added_by_first_byte_, allow_special,
      [&](absl::string_view segment, size_t offset) {
        if (segment.empty()) return;
        if (norm_.empty()) {
          encode_normalized(segment, offset == 0);
          return;
        }
        const std::string normalized = Normalize(segment);
        if (norm_added_.empty()) {
          encode_normalized(normalized, offset == 0);
          return;
        }
        SplitAdded(
            normalized, norm_added_, norm_added_by_first_byte_, allow_special,
            [&](absl::string_view part, size_t part_offset) {
              encode_normalized(part, offset == 0 && part_offset == 0);
            },
            on_token);
      },
      on_token);
  return out;
}

bool BpeTokenizer::AppendTokenBytes(int32_t id, bool skip_special_tokens, DecodeState* state,
                                    std::string* out) const {
  state->ends_byte_run = false;
  if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) return false;
  if (skip_special_tokens && is_special_[id]) return true;
  if (!char_level_) {
    out->append(id_to_bytes_[id]);
    state->at_start = false;
    return true;
  }
  // Char-level: the decoder chain of `tokenizers`, token by token. Per-token steps first
  // (Metaspace's first-token rule counts the tokens given to the decoder, after skipping).
  std::string text = id_to_token_[id];
  const bool first = state->num_tokens == 0;
  for (const DecodeStep& step : dec_token_) {
    switch (step.kind) {
      case DecodeStep::kReplace:
        text = absl::StrReplaceAll(text, {{step.a, step.b}});
        break;
      case DecodeStep::kMetaspace:
        text = absl::StrReplaceAll(
            text, {{step.a, first && step.prepend && !state->raw_bytes ? "" : " "}});
        break;
      case DecodeStep::kStrip: {
        absl::string_view v = text;
        for (int k = 0; k < step.start && absl::ConsumePrefix(&v, step.a); ++k) {
        }
        for (int k = 0; k < step.stop && absl::ConsumeSuffix(&v, step.a); ++k) {
        }
        text = std::string(v);
        break;
      }
    }
  }
  if (!has_decoder_ && !first && !state->raw_bytes) text.insert(0, " ");
  ++state->num_tokens;
  const int byte = dec_byte_fallback_ ? ByteTokenValue(text) : -1;
  if (state->raw_bytes) {
    if (byte >= 0) {
      out->push_back(static_cast<char>(byte));
    } else {
      out->append(text);
    }
    return true;
  }
  if (byte >= 0) {  // ByteFallback: the run is decoded as a whole when it ends.
    state->byte_run.push_back(static_cast<char>(byte));
    return true;
  }
  FlushByteRun(state, out);
  EmitDecoded(std::move(text), state, out);
  return true;
}

void BpeTokenizer::FlushByteRun(DecodeState* state, std::string* out) const {
  if (state->byte_run.empty()) return;
  // `tokenizers`' ByteFallback: a run that is not valid UTF-8 as a whole becomes one U+FFFD
  // per byte.
  std::string text;
  if (ToValidUtf8(state->byte_run) == state->byte_run) {
    text = std::move(state->byte_run);
  } else {
    for (size_t k = 0; k < state->byte_run.size(); ++k) text += kReplacementChar;
  }
  state->byte_run.clear();
  EmitDecoded(std::move(text), state, out);
}

void BpeTokenizer::EmitDecoded(std::string text, DecodeState* state, std::string* out) const {
  for (const DecodeStep& step : dec_text_) {
    if (step.kind == DecodeStep::kReplace) {
      text = absl::StrReplaceAll(text, {{step.a, step.b}});
    } else if (step.kind == DecodeStep::kStrip && state->at_start) {
      // Strip after Fuse: up to `start` leading characters of the whole text.
      absl::string_view v = text;
      while (state->num_stripped < step.start && absl::ConsumePrefix(&v, step.a)) {
        ++state->num_stripped;
      }
      if (!v.empty()) state->at_start = false;
      text = std::string(v);
    }
  }
  if (!text.empty()) state->at_start = false;
  out->append(text);
}

void BpeTokenizer::FinishTokenBytes(DecodeState* state, std::string* out) const {
  if (char_level_ && !state->raw_bytes) FlushByteRun(state, out);
}

}  // namespace

bool Tokenizer::AppliesNfc() {
#ifdef TESSERA_HAVE_ICU
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& tokenizer_json) {
  auto tok = BpeTokenizer::FromHfJson(tokenizer_json);
  if (!tok.ok()) return tok.status();
  return std::unique_ptr<Tokenizer>(std::move(*tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTiktoken(
    const std::string& path, const std::string& pattern,
    const std::vector<std::pair<std::string, int32_t>>& specials, int num_reserved,
    bool kimi_chunking) {
  auto tok = BpeTokenizer::FromTiktoken(path, pattern, specials, num_reserved, kimi_chunking);
  if (!tok.ok()) return tok.status();
  return std::unique_ptr<Tokenizer>(std::move(*tok));
}

// Kimi K2 (tokenization_kimi.py): Han runs are their own pieces and the letter classes exclude
// Han. Its `[\p{Lu}...&&[^\p{Han}]]` class intersections are written with a lookahead here
// (PCRE2 has no `&&`).
const char kKimiPattern[] =
    R"([\p{Han}]+|)"
    R"([^\r\n\p{L}\p{N}]?(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])*)"
    R"((?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"([^\r\n\p{L}\p{N}]?(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])+)"
    R"((?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"(\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|)"
    R"(\s+(?!\S)|)"
    R"(\s+)";

}  // namespace tessera
