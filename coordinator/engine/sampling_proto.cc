#include "coordinator/engine/sampling_proto.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::StatusOr<RequestSampling> FromProto(const v1::SamplingParams& p) {
  RequestSampling s;
  auto bad = [](absl::string_view field, auto value, absl::string_view want) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling parameter ", field, "=", value, " is invalid: ", want));
  };
  if (!std::isfinite(p.temperature()) || p.temperature() < 0) {
    return bad("temperature", p.temperature(), "must be >= 0");
  }
  s.temperature = p.temperature();
  if (p.top_k() < -1) return bad("top_k", p.top_k(), "must be -1, 0 (disabled) or positive");
  s.top_k = p.top_k() < 0 ? 0 : p.top_k();
  s.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  if (!(s.top_p > 0 && s.top_p <= 1)) return bad("top_p", p.top_p(), "must be in (0, 1]");
  if (!(p.min_p() >= 0 && p.min_p() <= 1)) return bad("min_p", p.min_p(), "must be in [0, 1]");
  s.min_p = p.min_p();
  s.repetition_penalty = p.repetition_penalty() == 0 ? 1.0f : p.repetition_penalty();
  if (!(s.repetition_penalty > 0 && std::isfinite(s.repetition_penalty))) {
    return bad("repetition_penalty", p.repetition_penalty(), "must be > 0");
  }
  if (!(p.presence_penalty() >= -2 && p.presence_penalty() <= 2)) {
    return bad("presence_penalty", p.presence_penalty(), "must be in [-2, 2]");
  }
  if (!(p.frequency_penalty() >= -2 && p.frequency_penalty() <= 2)) {
    return bad("frequency_penalty", p.frequency_penalty(), "must be in [-2, 2]");
  }
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  if (p.has_seed()) s.seed = p.seed();
  if (p.max_tokens() < 0) return bad("max_tokens", p.max_tokens(), "must be >= 0");
  if (p.max_tokens() > 0) s.max_tokens = p.max_tokens();
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  for (int32_t id : s.stop_token_ids) {
    if (id < 0) return bad("stop_token_ids", id, "token ids are >= 0");
  }
  s.stop.assign(p.stop().begin(), p.stop().end());
  for (const std::string& stop : s.stop) {
    if (stop.empty()) return bad("stop", "\"\"", "stop strings must not be empty");
  }
  if (p.logprobs() < 0 || p.logprobs() > 20) return bad("logprobs", p.logprobs(), "must be 0..20");
  s.logprobs = p.logprobs();
  s.ignore_eos = p.ignore_eos();
  if (p.min_tokens() < 0) return bad("min_tokens", p.min_tokens(), "must be >= 0");
  if (p.max_tokens() > 0 && p.min_tokens() > p.max_tokens()) {
    return bad("min_tokens", p.min_tokens(), "must be <= max_tokens");
  }
  s.min_tokens = p.min_tokens();
  return s;
}

v1::SamplingParams ToProto(const RequestSampling& s) {
  v1::SamplingParams p;
  p.set_temperature(s.temperature);
  p.set_top_k(s.top_k);
  p.set_top_p(s.top_p);
  p.set_min_p(s.min_p);
  p.set_repetition_penalty(s.repetition_penalty);
  p.set_presence_penalty(s.presence_penalty);
  p.set_frequency_penalty(s.frequency_penalty);
  if (s.seed) p.set_seed(*s.seed);
  p.set_max_tokens(s.max_tokens);
  for (int32_t id : s.stop_token_ids) p.add_stop_token_ids(id);
  for (const std::string& stop : s.stop) p.add_stop(stop);
  p.set_logprobs(s.logprobs);
  p.set_ignore_eos(s.ignore_eos);
  p.set_min_tokens(s.min_tokens);
  return p;
}

}  // namespace tessera
