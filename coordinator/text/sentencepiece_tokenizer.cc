// SentencePiece Tokenizer (tokenizer.model; Mixtral / Mistral v1) over SentencePieceModel.
//
// Encode is libsentencepiece's; with allow_special the control pieces ("<s>", "</s>") and
// "<unk>" written in the text become their ids and the text between them is encoded on its
// own (each part gets the dummy-prefix "▁", as Hugging Face's Llama tokenizers do). Decode is
// reimplemented per token so that it can stream; it follows SentencePiece's DecodeIds: "▁" is a
// space, the leading "▁" of the first visible piece is dropped (add_dummy_prefix), each run of
// byte pieces (<0xAB>) is UTF-8 decoded with one U+FFFD per invalid byte, control pieces are
// invisible when skipping specials (otherwise their text), <unk> is " ⁇ ".
#include <string>

#include "absl/strings/str_cat.h"
#include "coordinator/text/tokenizer.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::string& path) {
  // Temporary: libsentencepiece cannot be linked (its bundled protobuf collides with
  // libprotobuf); the native SentencePiece BPE encoder replaces this shortly.
  return absl::UnimplementedError(absl::StrCat(
      path, ": SentencePiece models are not supported in this build yet"));
}

}  // namespace tessera
