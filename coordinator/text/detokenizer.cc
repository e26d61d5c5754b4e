// Streaming detokenizer (see detokenizer.h).
#include "coordinator/text/detokenizer.h"

namespace tessera {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      replacement_(tokenizer.replacement()) {}

std::string StreamingDetokenizer::Push(int32_t token_id) {
  std::string out;
  const size_t before = pending_.size();
  if (!tokenizer_.AppendTokenBytes(token_id, skip_special_tokens_, &state_, &pending_)) {
    ++num_unknown_ids_;
    return out;
  }
  size_t start = 0;
  if (state_.ends_byte_run && before > 0) {
    // The held-back bytes can no longer be completed: replace them now.
    AppendValidUtf8(absl::string_view(pending_).substr(0, before), /*final=*/true, replacement_,
                    &out);
    start = before;
  }
  const size_t used = AppendValidUtf8(absl::string_view(pending_).substr(start),
                                      /*final=*/false, replacement_, &out);
  pending_.erase(0, start + used);
  return out;
}

std::string StreamingDetokenizer::Finish() {
  std::string out;
  tokenizer_.FinishTokenBytes(&state_, &pending_);
  AppendValidUtf8(pending_, /*final=*/true, replacement_, &out);
  pending_.clear();
  state_ = Tokenizer::DecodeState();
  return out;
}

}  // namespace tessera
