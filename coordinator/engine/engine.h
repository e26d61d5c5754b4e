// Engine: the one interface the front ends (gRPC Generation service, OpenAI HTTP API, batch jobs)
// use to run requests on a model instance. The implementation (coordinator/engine) owns the
// scheduler, the KV block manager, detokenization and stop conditions; front ends own parsing,
// tokenization of prompts, chat templates and response formatting.
//
// Contract:
// - Submit() validates the request (errors are INVALID_ARGUMENT naming the field: empty prompt,
//   token id outside the vocabulary, prompt + max_tokens beyond the context, bad sampling
//   values; FAILED_PRECONDITION / UNAVAILABLE when the instance is not serving) and on success
//   takes ownership; `on_output` is then called one or more times, the last time with
//   finished == true, and never again afterwards.
// - Outputs are deltas: each carries the tokens and text produced since the previous call. Text
//   is valid UTF-8 (a multi-byte character split across tokens is held back until complete), and
//   stop strings are never emitted (text up to the stop string is).
// - Abort() ends a live request (client gone): its final output has finish_reason kAbort, its KV
//   blocks are freed on every worker. Unknown ids are ignored.
// - A request that fails (its worker died) ends with a non-OK status: UNAVAILABLE.
//
// Thread safety: all methods may be called from any thread. Callbacks run on the engine's thread;
// they must be quick and must not call back into the engine synchronously except Abort().
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "coordinator/engine/sampling_proto.h"

namespace tessera {

struct GenerateRequest {
  std::string request_id;           // unique among live requests; empty: the engine assigns one
  std::vector<int32_t> prompt_ids;  // tokenized prompt (after the chat template)
  RequestSampling sampling;         // max_tokens, stops, penalties, seed, logprobs, ignore_eos
  bool skip_special_tokens = true;  // text deltas leave special tokens out
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // the top-n alternatives, best first
};

enum class FinishReason { kNone, kStop, kLength, kAbort };

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
};

struct GenerateOutput {
  std::string request_id;
  std::vector<int32_t> token_ids;     // new tokens since the previous output
  std::string text;                   // new text since the previous output
  std::vector<TokenLogprob> logprobs; // one per new token when sampling.logprobs > 0 was asked
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;            // the matched stop string, when one ended the request
  int32_t stop_token_id = -1;         // the stop_token_ids entry that ended it (EOS: -1)
  absl::Status status;                // non-OK when the request failed
  Usage usage;                        // cumulative; complete when finished
};

using OutputCallback = std::function<void(GenerateOutput)>;

struct ModelInfo {
  std::string name;                  // served model name (the model directory's name by default)
  int64_t max_model_len = 0;         // context length (prompt + output)
  int32_t vocab_size = 0;
  std::vector<int32_t> eos_token_ids;
  bool ready = false;                // every worker of the instance is up and loaded
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual absl::Status Submit(GenerateRequest request, OutputCallback on_output) = 0;
  virtual void Abort(absl::string_view request_id) = 0;
  virtual ModelInfo model_info() const = 0;
};

}  // namespace tessera
