// Conversion of the wire SamplingParams (proto) to the engine's validated form.
//
// Proto3 zero defaults mean "unset": top_p 0 -> 1, repetition_penalty 0 -> 1. Every field is
// range-checked with an error naming it. Pure functions, thread safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tessera/v1/common.pb.h"

namespace tessera {

struct RequestSampling {
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;
  int max_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
  int logprobs = 0;
  bool ignore_eos = false;
  int min_tokens = 0;  // no EOS / stop token / stop string before this many outputs
};

absl::StatusOr<RequestSampling> FromProto(const v1::SamplingParams& proto);
v1::SamplingParams ToProto(const RequestSampling& sampling);

}  // namespace tessera
