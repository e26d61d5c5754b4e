// Helpers for the engine tests: collect every request's output stream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/engine/engine.h"

namespace tessera::testing {

struct Stream {
  std::vector<int32_t> tokens;  // concatenated token deltas
  std::string text;             // concatenated text deltas
  std::vector<TokenLogprob> logprobs;
  int num_outputs = 0;
  int outputs_after_finish = 0;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;
  int32_t stop_token_id = -1;
  absl::Status status;
  Usage usage;
};

class Collector {
 public:
  OutputCallback For(const std::string& id) {
    return [this, id](GenerateOutput out) {
      std::lock_guard<std::mutex> lock(mu_);
      Stream& s = streams_[id];
      if (s.finished) ++s.outputs_after_finish;
      ++s.num_outputs;
      s.tokens.insert(s.tokens.end(), out.token_ids.begin(), out.token_ids.end());
      s.text += out.text;
      for (auto& lp : out.logprobs) s.logprobs.push_back(lp);
      s.usage = out.usage;
      if (out.finished) {
        s.finished = true;
        s.finish_reason = out.finish_reason;
        s.stop_reason = out.stop_reason;
        s.stop_token_id = out.stop_token_id;
        s.status = out.status;
        cv_.notify_all();
      }
    };
  }
  Stream Get(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_[id];
  }
  // Waits (bounded) until `id` finished.
  bool WaitFinished(const std::string& id, double seconds = 30) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(seconds),
                        [&] { return streams_[id].finished; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Stream> streams_;
};

// Polls `pred` every millisecond for at most `seconds`.
template <typename Pred>
bool PollUntil(Pred pred, double seconds = 10) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

}  // namespace tessera::testing
