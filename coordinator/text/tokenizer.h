// Tokenizer: the one interface every front end (engine, HTTP API, chat templates, `tessera
// tokenize`) uses to turn text into token ids and back, whatever the model ships:
//   - tokenizer.json (Hugging Face `tokenizers`): byte-level BPE (Qwen2/3, DeepSeek-V3, gpt-oss,
//     GLM, MiniMax) and char-level BPE with byte_fallback, Prepend/Replace normalizers,
//     Metaspace and ByteFallback/Fuse/Strip decoders (Llama/Mistral/Mixtral-style);
//     bpe_tokenizer.cc.
//   - tiktoken.model ("base64(token) rank" lines; Kimi K2), specials from tokenizer_config.json's
//     added_tokens_decoder; tiktoken_tokenizer.cc.
//   - tokenizer.model (SentencePiece; Mixtral/Mistral v1) via libsentencepiece;
//     sentencepiece_tokenizer.cc.
// LoadTokenizer(dir) picks one (in that order of preference) and reads bos/eos from
// tokenizer_config.json. Decode follows the reference libraries: invalid or incomplete UTF-8 in
// the decoded bytes becomes U+FFFD (one per maximal invalid subpart, like Rust's
// from_utf8_lossy and Python's errors="replace"; SentencePiece: one per invalid byte), so
// Decode always returns valid UTF-8. StreamingDetokenizer (detokenizer.h) produces the same
// text incrementally from the DecodeState/AppendTokenBytes primitive below.
//
// Thread safety: a loaded Tokenizer is immutable (internal caches are synchronised); every
// const method may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tessera {

class Tokenizer {
 public:
  // Per-sequence decoding state (SentencePiece/Metaspace drop the leading space of the first
  // visible piece).
  struct DecodeState {
    bool at_start = true;
    // Output of AppendTokenBytes: an incomplete UTF-8 sequence before this token's bytes can
    // no longer be completed (SentencePiece decodes each run of byte pieces on its own).
    bool ends_byte_run = false;
    // Input: return each token's own raw bytes (logprobs), without the cross-token decoder
    // steps (tokenizer.json ByteFallback runs, Strip, Metaspace's first-token rule).
    bool raw_bytes = false;
    // tokenizer.json decoders: tokens passed to the decoder so far, leading characters
    // already stripped (Strip after Fuse), and the pending run of <0xNN> byte tokens, which
    // ByteFallback turns into text as a whole once it ends (FinishTokenBytes at the end).
    int64_t num_tokens = 0;
    int32_t num_stripped = 0;
    std::string byte_run;
  };
  // How invalid UTF-8 in the decoded bytes is replaced by U+FFFD.
  enum class Replacement { kMaximalSubpart, kPerByte };

  // Loads a Hugging Face tokenizer.json (the byte-level / byte-fallback BPE implementation).
  // Errors name the file and the field at fault. Prefer LoadTokenizer, which also reads
  // tokenizer_config.json (bos/eos) and handles the other formats.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json);
  // Whether this build applies an NFC normalizer (needs ICU; without it NFC is a no-op, which
  // is exact only for already-NFC text).
  static bool AppliesNfc();

  virtual ~Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // One step of the post-processor, which `add_special_tokens` applies as Hugging Face
  // `tokenizers` 0.22 does: the ids are a list of segments (encodings), one at first; a
  // template replaces them with one segment per template item, using `single` for one segment
  // and `pair` for two (segment A = 0, B = 1); Bert gives segment 0 cls..sep and every other
  // one ..sep, Roberta cls..sep and sep..sep; the segments are concatenated at the end. (So
  // a template after a template sees a pair, as in `tokenizers`.)
  struct PostStep {
    enum Kind { kTemplate, kBert, kRoberta };
    struct Item {
      int sequence = -1;          // 0: segment A, 1: segment B, -1: `ids`.
      std::vector<int32_t> ids;   // Special-token ids.
    };
    Kind kind = kTemplate;
    std::vector<Item> single, pair;  // kTemplate.
    int32_t cls = 0, sep = 0;        // kBert, kRoberta.
  };

  // Token ids of `text` (UTF-8; invalid bytes are encoded as bytes where the format can).
  // Special tokens are recognised only if `allow_special`; otherwise they are tokenized as
  // ordinary text. With `add_special_tokens` the post-processor is applied (tokenizer.json's
  // `post_processor`, e.g. Llama/Mistral's BOS; SentencePiece: BOS when tokenizer_config.json's
  // add_bos_token is not false, EOS when add_eos_token; tiktoken: nothing), as `tokenizers`'
  // encode(text, add_special_tokens=True) and vLLM's completion prompts do; without it (the
  // default; chat prompts, whose template renders BOS) nothing is added.
  std::vector<int32_t> Encode(absl::string_view text, bool allow_special = true,
                              bool add_special_tokens = false) const {
    std::vector<int32_t> ids = EncodeImpl(text, allow_special);
    if (add_special_tokens) ApplyPostProcessor(&ids);
    return ids;
  }
  // Applies the post-processor (see Encode) to already encoded `ids` in place.
  void ApplyPostProcessor(std::vector<int32_t>* ids) const;
  // The post-processor's steps (empty: Encode's add_special_tokens adds nothing).
  const std::vector<PostStep>& post_processor() const { return post_processor_; }
  void set_post_processor(std::vector<PostStep> steps) { post_processor_ = std::move(steps); }
  // Text of `ids` (always valid UTF-8, see above); error for an id outside the vocabulary.
  // With `skip_special_tokens`, special tokens (IsSpecial) contribute nothing.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;
  // One past the largest id (model vocab and added tokens).
  virtual int32_t vocab_size() const = 0;
  // Id of a vocabulary entry or added/special token spelled as stored in the vocabulary (e.g.
  // "Ġthe" for byte-level BPE, "▁the" for SentencePiece, "<|im_end|>"); nullopt if none.
  virtual std::optional<int32_t> TokenToId(absl::string_view token) const = 0;
  // The vocabulary spelling of `id` (inverse of TokenToId; tiktoken: the raw bytes, which may
  // be invalid UTF-8); nullopt for an id that is unused or out of range.
  virtual std::optional<std::string> IdToToken(int32_t id) const = 0;
  // Whether `id` is a special token (added tokens marked special, SentencePiece control tokens,
  // tiktoken specials); false for unknown ids.
  virtual bool IsSpecial(int32_t id) const = 0;
  // BOS / EOS ids when known (tokenizer_config.json bos_token / eos_token, or the model file).
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  void set_bos_id(std::optional<int32_t> id) { bos_id_ = id; }
  void set_eos_id(std::optional<int32_t> id) { eos_id_ = id; }
  // "tokenizer.json", "tiktoken" or "sentencepiece".
  virtual absl::string_view format() const = 0;

  // Decoding primitive shared by Decode and StreamingDetokenizer: appends the bytes that token
  // `id` contributes to the decoded text to `out` (possibly an incomplete UTF-8 sequence,
  // nothing for a skipped special token) and updates `state`. Returns false for an unknown id.
  // Decode(ids) == ToValidUtf8 of the concatenated bytes (then FinishTokenBytes), with
  // replacement(), where an incomplete sequence is also replaced where
  // `state->ends_byte_run` says so.
  virtual bool AppendTokenBytes(int32_t id, bool skip_special_tokens, DecodeState* state,
                                std::string* out) const = 0;
  // Appends what is still held in `state` at the end of the sequence (tokenizer.json: a run of
  // byte tokens that was not closed by a later token). Decode and StreamingDetokenizer::Finish
  // call it once after the last AppendTokenBytes.
  virtual void FinishTokenBytes(DecodeState* /*state*/, std::string* /*out*/) const {}
  virtual Replacement replacement() const { return Replacement::kMaximalSubpart; }

 protected:
  Tokenizer() = default;
  virtual std::vector<int32_t> EncodeImpl(absl::string_view text, bool allow_special) const = 0;

 private:
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::vector<PostStep> post_processor_;
};

// Parses a tokenizer.json `post_processor` value as Hugging Face `tokenizers` 0.22 applies it
// to a single sequence (see Tokenizer::PostStep): null and ByteLevel add nothing;
// TemplateProcessing (`single` and `pair`: SpecialToken items resolved through
// `special_tokens`' ids, Sequence A / B); BertProcessing / RobertaProcessing (cls, sep);
// Sequence (its processors in order). Anything else, a special token missing from
// special_tokens, an id outside [0, vocab_size), or a chain on which `tokenizers` would panic
// (a template given more than two segments, `single` using B) is an error naming `path`, the
// field and the type.
absl::StatusOr<std::vector<Tokenizer::PostStep>> ParsePostProcessor(
    const std::string& path, const std::string& post_processor_json, int32_t vocab_size);

// Loads the tokenizer of a model directory: tokenizer.json, else tiktoken.model, else
// tokenizer.model (SentencePiece); bos/eos (and tiktoken specials) from tokenizer_config.json
// when present. `model_dir` may also name one of those files directly.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// Tiktoken BPE file ("base64(token) rank" per line) with `pattern` (PCRE2 syntax) as the
// pre-tokenizer and `specials` (content, id); ids in [number of ranks, + `num_reserved`) that
// `specials` leaves out become "<|reserved_token_ID|>" (as Kimi's tokenizer does).
// `kimi_chunking`: encode as Kimi's tokenization_kimi.py does, in 400000-character chunks each
// cut where a run of whitespace or non-whitespace characters exceeds 25000 characters.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTiktoken(
    const std::string& path, const std::string& pattern,
    const std::vector<std::pair<std::string, int32_t>>& specials, int num_reserved = 0,
    bool kimi_chunking = false);
// The pre-tokenizer pattern of Kimi K2's tokenization_kimi.py (tiktoken.model without a
// pattern of its own gets this one).
extern const char kKimiPattern[];
// SentencePiece model file (tokenizer.model).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& path);

// UTF-8 helpers (coordinator/text/utf8.cc).
// Appends the valid UTF-8 prefix of `bytes` to `out`, replacing invalid sequences by U+FFFD;
// an incomplete sequence at the end is replaced too when `final`, otherwise left unconsumed.
// Returns the number of bytes of `bytes` consumed.
size_t AppendValidUtf8(absl::string_view bytes, bool final, Tokenizer::Replacement replacement,
                       std::string* out);
inline std::string ToValidUtf8(absl::string_view bytes,
                               Tokenizer::Replacement replacement =
                                   Tokenizer::Replacement::kMaximalSubpart) {
  std::string out;
  AppendValidUtf8(bytes, /*final=*/true, replacement, &out);
  return out;
}

}  // namespace tessera
