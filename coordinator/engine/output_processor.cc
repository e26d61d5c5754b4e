#include "coordinator/engine/output_processor.h"

#include <algorithm>

#include "kernels/base/logging.h"

namespace tessera {
OutputProcessor::OutputProcessor(Config config) : config_(std::move(config)) {
  if (config_.tokenizer != nullptr) {
    detok_ = std::make_unique<StreamingDetokenizer>(*config_.tokenizer,
                                                    config_.skip_special_tokens);
  }
  for (const std::string& s : config_.stop) max_stop_len_ = std::max(max_stop_len_, s.size());
}

OutputProcessor::~OutputProcessor() = default;

bool OutputProcessor::ScanStops(ProcessedToken* out) {
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const std::string& s : config_.stop) {
    size_t pos = pending_.find(s);
    if (pos != std::string::npos && (best == std::string::npos || pos < best)) {
      best = pos;
      best_stop = &s;
    }
  }
  if (best_stop != nullptr) {
    out->text += pending_.substr(0, best);
    pending_.clear();
    out->finished = true;
    out->finish_reason = FinishReason::kStop;
    out->stop_reason = *best_stop;
    return true;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : config_.stop) {
    size_t max_k = std::min(s.size() - 1, pending_.size());
    for (size_t k = max_k; k > hold; --k) {
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  out->text += pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return false;
}

ProcessedToken OutputProcessor::Process(int32_t token, int64_t num_outputs) {
  ProcessedToken out;
  // Before min_tokens the workers never sample EOS / stop ids; stop strings are not matched.
  const bool below_min = num_outputs < config_.min_tokens;
  const bool eos = !config_.ignore_eos &&
                   std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(), token) !=
                       config_.eos_token_ids.end();
  const bool listed = std::find(config_.stop_token_ids.begin(), config_.stop_token_ids.end(),
                                token) != config_.stop_token_ids.end();
  if (!below_min && (eos || listed)) {
    out.finished = true;
    out.finish_reason = FinishReason::kStop;
    // As vLLM: stop_reason is the stop token id that ended the request, none for EOS.
    if (listed && !eos) out.stop_token_id = token;
  } else if (detok_ != nullptr) {
    pending_ += detok_->Push(token);
    if (below_min) {
      out.text += pending_;
      pending_.clear();
    } else if (ScanStops(&out)) {
      return out;
    }
  }
  if (!out.finished && (num_outputs >= config_.max_tokens ||
                        config_.prompt_len + num_outputs >= config_.max_context)) {
    out.finished = true;
    out.finish_reason = FinishReason::kLength;
  }
  if (out.finished && detok_ != nullptr) {
    // Flush: the incomplete tail (now final) and the held-back text, still stop-checked.
    pending_ += detok_->Finish();
    ProcessedToken tail;
    if (ScanStops(&tail)) {
      out.finish_reason = FinishReason::kStop;
      out.stop_reason = tail.stop_reason;
    }
    out.text += tail.text + pending_;
    pending_.clear();
  }
  return out;
}

}  // namespace tessera
