#include "coordinator/engine/output_processor.h"

#include <algorithm>

#include "kernels/base/logging.h"

namespace tessera {
namespace {

// Length of the UTF-8 sequence a lead byte starts (0 for a continuation or invalid byte).
int Utf8Length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return c >= 0xC2 ? 2 : 0;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return c <= 0xF4 ? 4 : 0;
  return 0;
}

// Whether `s` ends inside a UTF-8 sequence that more bytes could still complete.
bool EndsIncomplete(const std::string& s) {
  int n = static_cast<int>(s.size());
  for (int back = 1; back <= 3 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    int len = Utf8Length(c);
    return len > back;
  }
  return false;
}

// Replaces invalid UTF-8 with U+FFFD so that emitted text is always valid.
std::string SanitizeUtf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = Utf8Length(c);
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    }
    if (ok && len == 3) {
      unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
    } else if (ok && len == 4) {
      unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace

WindowDetokenizer::WindowDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string WindowDetokenizer::DecodeRange(size_t begin, size_t end) const {
  absl::StatusOr<std::string> text = tokenizer_.Decode(
      absl::MakeConstSpan(ids_).subspan(begin, end - begin), skip_special_tokens_);
  // Ids were validated against the vocabulary; an unknown sampled id decodes to nothing.
  return text.ok() ? *std::move(text) : std::string();
}

std::string WindowDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  std::string prefix = DecodeRange(prefix_offset_, read_offset_);
  std::string full = DecodeRange(prefix_offset_, ids_.size());
  if (full.size() <= prefix.size() || EndsIncomplete(full)) return "";
  std::string delta = full.substr(prefix.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return SanitizeUtf8(delta);
}

std::string WindowDetokenizer::Finish() {
  std::string prefix = DecodeRange(prefix_offset_, read_offset_);
  std::string full = DecodeRange(prefix_offset_, ids_.size());
  prefix_offset_ = read_offset_ = ids_.size();
  if (full.size() <= prefix.size()) return "";
  return SanitizeUtf8(full.substr(prefix.size()));
}

OutputProcessor::OutputProcessor(Config config) : config_(std::move(config)) {
  if (config_.tokenizer != nullptr) {
    detok_ = std::make_unique<WindowDetokenizer>(*config_.tokenizer, config_.skip_special_tokens);
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
  bool stop_token =
      (!config_.ignore_eos && std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(),
                                        token) != config_.eos_token_ids.end()) ||
      std::find(config_.stop_token_ids.begin(), config_.stop_token_ids.end(), token) !=
          config_.stop_token_ids.end();
  if (stop_token) {
    out.finished = true;
    out.finish_reason = FinishReason::kStop;
  } else if (detok_ != nullptr) {
    pending_ += detok_->Push(token);
    if (ScanStops(&out)) return out;
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
