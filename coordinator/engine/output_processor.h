// OutputProcessor: turns one request's accepted tokens into text deltas and decides when the
// request stops (docs/engine.md, "Stop handling").
//
// Per token, in vLLM's order: an EOS id (unless ignore_eos) or a stop_token_id ends the request
// with finish reason stop and contributes no text; otherwise the token's text is detokenized
// incrementally by coordinator/text's StreamingDetokenizer (a multi-byte UTF-8 character split
// across tokens is held back until complete) and stop strings are searched in the text not yet
// emitted, across token boundaries. A match ends the request (finish reason stop, stop_reason =
// the stop string) and only the text before it is emitted. Text that could still become the
// start of a stop string is held back until it cannot. Then max_tokens and the context length end it with finish reason length, flushing the
// held text. Without a tokenizer there is no text (and stop strings cannot match).
//
// Thread safety: not thread safe; one per request, used on the engine thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/engine/engine.h"
#include "coordinator/text/detokenizer.h"
#include "coordinator/text/tokenizer.h"

namespace tessera {

struct ProcessedToken {
  std::string text;               // text to emit for this token (may be empty)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;        // the matched stop string
  int32_t stop_token_id = -1;     // the stop_token_ids entry that ended it (not EOS), else -1
};

class OutputProcessor {
 public:
  struct Config {
    const Tokenizer* tokenizer = nullptr;  // may be null: no text
    bool skip_special_tokens = true;
    std::vector<int32_t> eos_token_ids;  // ignored when ignore_eos
    bool ignore_eos = false;
    int min_tokens = 0;  // before this many outputs: no stop ids, no stop-string matching
    std::vector<int32_t> stop_token_ids;
    std::vector<std::string> stop;
    int64_t max_tokens = 0;         // outputs allowed
    int64_t max_context = 0;        // prompt + outputs allowed (max_model_len)
    int64_t prompt_len = 0;
  };
  explicit OutputProcessor(Config config);
  ~OutputProcessor();

  // Processes the `num_outputs`-th output token (1-based count including this one).
  ProcessedToken Process(int32_t token, int64_t num_outputs);

 private:
  // Searches stop strings in pending_ (text not yet emitted); moves what is safe to `out`.
  bool ScanStops(ProcessedToken* out);

  Config config_;
  std::unique_ptr<StreamingDetokenizer> detok_;
  std::string pending_;  // decoded text not yet emitted (possible start of a stop string)
  size_t max_stop_len_ = 0;
};

}  // namespace tessera
