// StreamingDetokenizer: turns generated token ids into text one token at a time, for streaming
// responses.
//
// Contract: the concatenation of every Push() result followed by Finish() equals
// tokenizer.Decode(all ids, skip_special_tokens), for every tokenizer format. Push never returns
// broken UTF-8: bytes of a character split across tokens (byte-level BPE pieces, SentencePiece
// <0x..> byte pieces, an emoji over 4 tokens) are held back until the character is complete,
// and replaced by U+FFFD as soon as they can no longer complete one. SentencePiece's leading
// "▁" of the first visible piece is decided per token (no look-ahead needed). Llama-style
// tokenizer.json (ByteFallback decoder): a run of <0xNN> byte tokens is held back until the
// run ends (the next other token, or Finish), because `tokenizers` replaces every byte of a
// run by U+FFFD when any of it is invalid; this costs one token of latency for such
// characters and is what makes the stream equal Decode. Work per Push is O(bytes of the token
// + held-back bytes): no re-decoding of earlier tokens. An id
// outside the vocabulary contributes nothing (Decode would reject it) and is counted in
// num_unknown_ids().
//
// Thread safety: not thread-safe (one instance per sequence); the Tokenizer must outlive it.
#pragma once

#include <cstdint>
#include <string>

#include "coordinator/text/tokenizer.h"

namespace tessera {

class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);

  // Appends one token; returns the newly completed text (empty while a UTF-8 sequence is
  // incomplete, or for a skipped special token). Never broken UTF-8.
  std::string Push(int32_t token_id);
  // Text still held back at the end (incomplete bytes as U+FFFD, like HF decode). The
  // detokenizer is reset to the start of a new sequence afterwards.
  std::string Finish();

  int64_t num_unknown_ids() const { return num_unknown_ids_; }

 private:
  const Tokenizer& tokenizer_;
  const bool skip_special_tokens_;
  const Tokenizer::Replacement replacement_;
  Tokenizer::DecodeState state_;
  std::string pending_;  // Bytes not yet returned: an incomplete UTF-8 sequence (<= 3 bytes).
  int64_t num_unknown_ids_ = 0;
};

}  // namespace tessera
