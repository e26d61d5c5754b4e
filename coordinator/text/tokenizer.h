// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (`tokenizers` semantics).
//
// Supported (what the Qwen2/Qwen3, DeepSeek-V3 and gpt-oss files use): model BPE with the GPT-2
// byte<->unicode map, merges as "a b" strings or [a, b] pairs (rank = index); pre_tokenizer
// Sequence of Split (regex, behavior Isolated, invert false; compiled with PCRE2 UTF+UCP, JIT
// when available) and ByteLevel (use_regex false, add_prefix_space false); added_tokens matched
// first (leftmost, longest), special ones only when allowed; decoder ByteLevel.
// NFC normalizer via ICU when built with it (AppliesNfc()); otherwise a no-op.
// Not implemented (docs/text.md): added-token lstrip/rstrip/single_word/normalized flags, BPE
// dropout, other normalizers/pre-tokenizers/models.
//
// Thread safety: a loaded Tokenizer is immutable except for an internal piece cache guarded by
// a mutex; Encode/Decode may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tessera {

class Tokenizer {
 public:
  // Loads `tokenizer_json`; errors name the file and the field at fault.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (UTF-8). Special added tokens are recognised only if `allow_special`;
  // otherwise they are tokenized as ordinary text.
  std::vector<int32_t> Encode(absl::string_view text, bool allow_special = true) const;
  // Text of `ids`; error for an id outside the vocabulary. Bytes are returned as decoded (a
  // partial UTF-8 sequence at the end is kept, not replaced).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;
  // One past the largest id (model vocab and added tokens).
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Whether this build applies an NFC normalizer (needs ICU; without it NFC is a no-op, which
  // is exact only for already-NFC text).
  static bool AppliesNfc();

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  struct Regex;  // PCRE2 code + match data.

  Tokenizer();
  // Appends the pre-tokenized pieces of `text` (no added tokens inside) to `pieces`.
  void PreTokenize(absl::string_view text, std::vector<absl::string_view>* pieces) const;
  // BPE of one pre-tokenized piece (raw bytes), appended to `out`.
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;  // token string -> id (model + added).
  std::vector<std::string> id_to_token_;             // id -> token string ("" when unused).
  std::vector<bool> is_special_;                     // id -> special added token.
  // (left id << 32 | right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  int32_t byte_to_id_[256];
  int byte_of_char_[0x200];  // byte-level char code point -> byte, -1 if none.
  std::vector<AddedToken> added_;  // Sorted by content length, longest first.
  std::vector<int> added_by_first_byte_[256];  // Indices into added_, longest first.
  std::vector<std::unique_ptr<Regex>> splits_;
  bool nfc_ = false;

  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace tessera
