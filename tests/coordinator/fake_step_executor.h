// FakeStepExecutor: a deterministic StepExecutor for engine tests that behaves like a worker and
// checks every plan against the step protocol (proto/tessera/v1/step.proto).
//
// It keeps per-sequence state exactly as a worker would (context, block table, num_computed,
// number of outputs) and a fake KV cache: computing position p of a sequence writes
// (token, p) into slot p % block_size of block table[p / block_size]. Its "model" samples
// token = f(context read back from the KV cache, seed, sample index), so outputs do not depend
// on batching, chunking, preemption or prefix-cache reuse — unless the engine breaks the cache
// (a wrong prefix hit, a block shared while written), which then changes the outputs and is
// recorded as a violation. Other violations: unknown / duplicate sequences, block tables too short,
// more tokens scheduled than the context holds, the token budget or sequence cap exceeded.
//
// Thread safety: Execute() on the engine thread; the accessors lock, so tests may poll them.
#pragma once

#include <cstdint>
#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "worker/step_executor.h"

namespace tessera::testing {

// The fake model: token for a context (all context tokens), seed and sample index.
using FakeModel = std::function<int32_t(const std::vector<int32_t>& context, uint64_t seed,
                                        int64_t sample_index)>;

inline uint64_t FakeMix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 31;
  return h;
}

// Default model: a hash of the whole context, the seed and the sample index, modulo `vocab`.
inline FakeModel HashModel(int32_t vocab) {
  return [vocab](const std::vector<int32_t>& context, uint64_t seed, int64_t index) {
    uint64_t h = FakeMix(seed, static_cast<uint64_t>(index));
    for (int32_t t : context) h = FakeMix(h, static_cast<uint32_t>(t));
    return static_cast<int32_t>(h % static_cast<uint64_t>(vocab));
  };
}

// What the model generates for `prompt` alone, stopping at max_tokens or a stop token.
inline std::vector<int32_t> ReferenceOutput(const FakeModel& model, std::vector<int32_t> prompt,
                                            uint64_t seed, int max_tokens,
                                            const std::vector<int32_t>& stop_ids = {}) {
  std::vector<int32_t> out;
  for (int k = 0; k < max_tokens; ++k) {
    int32_t t = model(prompt, seed, k);
    out.push_back(t);
    prompt.push_back(t);
    bool stop = false;
    for (int32_t s : stop_ids) stop |= s == t;
    if (stop) break;
  }
  return out;
}

class FakeStepExecutor : public StepExecutor {
 public:
  FakeStepExecutor(int num_blocks, int block_size, FakeModel model,
                   int max_batched_tokens = std::numeric_limits<int>::max(),
                   int max_seqs = std::numeric_limits<int>::max())
      : capacity_{num_blocks, block_size}, model_(std::move(model)),
        max_batched_tokens_(max_batched_tokens), max_seqs_(max_seqs),
        kv_(static_cast<size_t>(num_blocks) * block_size, {-1, -1}) {}

  KvCapacity capacity() const override { return capacity_; }

  absl::StatusOr<v1::StepResult> Execute(const v1::StepPlan& plan) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++num_steps_;
    if (fail_at_step_ == num_steps_) {
      seqs_.clear();  // the instance died: every sequence and the cache are gone
      std::fill(kv_.begin(), kv_.end(), std::pair<int32_t, int32_t>{-1, -1});
      return absl::UnavailableError("fake worker died");
    }
    const int bs = capacity_.block_size;
    for (uint64_t id : plan.finished_seq_ids()) seqs_.erase(id);
    int total = 0;
    std::vector<uint64_t> order;
    for (const v1::NewSeq& n : plan.new_seqs()) {
      if (seqs_.count(n.seq_id())) Violation("new seq ", n.seq_id(), " already exists");
      Seq& s = seqs_[n.seq_id()];
      s.tokens.assign(n.token_ids().begin(), n.token_ids().end());
      s.num_outputs = n.num_output_tokens();
      s.num_computed = n.num_computed_tokens();
      s.blocks.assign(n.block_ids().begin(), n.block_ids().end());
      s.seed = n.sampling().seed();
      s.num_top = n.sampling().num_top_logprobs();
      s.scheduled = n.num_scheduled_tokens();
      if (s.num_computed % bs != 0) Violation("seq ", n.seq_id(), " hit is not whole blocks");
      if (s.num_computed >= static_cast<int64_t>(s.tokens.size())) {
        Violation("seq ", n.seq_id(), " hit covers the whole context");
      }
      // A prefix-cache hit must hold exactly this context's KV.
      for (int64_t p = 0; p < s.num_computed && p / bs < static_cast<int64_t>(s.blocks.size());
           ++p) {
        auto kv = kv_[Slot(s, p)];
        if (kv.first != s.tokens[p] || kv.second != p) {
          Violation("seq ", n.seq_id(), " prefix hit at position ", p, " holds wrong KV");
          break;
        }
      }
      order.push_back(n.seq_id());
    }
    for (const v1::CachedSeq& c : plan.cached_seqs()) {
      auto it = seqs_.find(c.seq_id());
      if (it == seqs_.end()) {
        Violation("cached seq ", c.seq_id(), " is unknown");
        continue;
      }
      Seq& s = it->second;
      for (int32_t t : c.append_token_ids()) {
        s.tokens.push_back(t);
        ++s.num_outputs;
      }
      s.blocks.insert(s.blocks.end(), c.new_block_ids().begin(), c.new_block_ids().end());
      s.scheduled = c.num_scheduled_tokens();
      order.push_back(c.seq_id());
    }
    if (static_cast<int>(seqs_.size()) > max_seqs_) {
      Violation("step ", plan.step_id(), ": ", seqs_.size(), " live seqs > cap ", max_seqs_);
    }
    max_live_seqs_ = std::max<int>(max_live_seqs_, static_cast<int>(seqs_.size()));
    // Block ownership: a block in two live tables must be a shared, already computed full block.
    std::map<int32_t, std::vector<std::pair<uint64_t, size_t>>> owners;
    for (auto& [id, s] : seqs_) {
      for (size_t i = 0; i < s.blocks.size(); ++i) owners[s.blocks[i]].push_back({id, i});
    }
    for (auto& [block, list] : owners) {
      if (list.size() < 2) continue;
      for (auto& [id, index] : list) {
        const Seq& s = seqs_[id];
        if (static_cast<int64_t>((index + 1) * bs) > s.num_computed) {
          Violation("block ", block, " is shared but seq ", id, " still writes it");
        }
      }
    }
    v1::StepResult result;
    result.set_step_id(plan.step_id());
    for (uint64_t id : order) {
      Seq& s = seqs_[id];
      const int64_t len = static_cast<int64_t>(s.tokens.size());
      if (s.scheduled < 1) Violation("seq ", id, " scheduled ", s.scheduled, " tokens");
      if (s.num_computed + s.scheduled > len) {
        Violation("seq ", id, " schedules past its context");
        s.scheduled = static_cast<int>(len - s.num_computed);
      }
      if (static_cast<int64_t>(s.blocks.size()) * bs < s.num_computed + s.scheduled) {
        Violation("seq ", id, " block table too short");
        continue;
      }
      total += s.scheduled;
      for (int64_t p = s.num_computed; p < s.num_computed + s.scheduled; ++p) {
        kv_[Slot(s, p)] = {s.tokens[p], static_cast<int32_t>(p)};
      }
      s.num_computed += s.scheduled;
      s.scheduled = 0;
      if (s.num_computed == len) {
        std::vector<int32_t> context(len);
        for (int64_t p = 0; p < len; ++p) {
          auto kv = kv_[Slot(s, p)];
          if (kv.second != p) Violation("seq ", id, " reads stale KV at ", p);
          context[p] = kv.first;
        }
        v1::SampledToken* t = result.add_sampled();
        t->set_seq_id(id);
        int32_t token = model_(context, s.seed, s.num_outputs);
        t->set_token_id(token);
        t->set_logprob(-0.125f * static_cast<float>(token % 8));
        for (int k = 0; k < s.num_top; ++k) {
          v1::TopLogprob* top = t->add_top_logprobs();
          top->set_token_id(token + k);
          top->set_logprob(-0.5f * k);
        }
      }
    }
    if (total > max_batched_tokens_) {
      Violation("step ", plan.step_id(), " schedules ", total, " tokens > budget ",
                max_batched_tokens_);
    }
    if (plan.new_seqs_size() + plan.cached_seqs_size() > 0) ++num_compute_steps_;
    return result;
  }

  // Makes the step with this 1-based number fail with UNAVAILABLE (0: never).
  void FailAtStep(int64_t step) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_at_step_ = step;
  }
  // The instance restarted: every sequence is gone (the KV contents stay, as on a real restart
  // they would be garbage; the engine must not hit them: it resets its prefix cache).
  void Restart() {
    std::lock_guard<std::mutex> lock(mu_);
    seqs_.clear();
    std::fill(kv_.begin(), kv_.end(), std::pair<int32_t, int32_t>{-1, -1});
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }
  int num_live_seqs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(seqs_.size());
  }
  int max_live_seqs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_live_seqs_;
  }
  int64_t num_steps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return num_steps_;
  }

 private:
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t num_outputs = 0;
    int64_t num_computed = 0;
    std::vector<int32_t> blocks;
    uint64_t seed = 0;
    int num_top = 0;
    int scheduled = 0;
  };
  size_t Slot(const Seq& s, int64_t p) const {
    const int bs = capacity_.block_size;
    return static_cast<size_t>(s.blocks[p / bs]) * bs + p % bs;
  }
  template <typename... Args>
  void Violation(const Args&... args) {
    violations_.push_back(absl::StrCat(args...));
  }

  const KvCapacity capacity_;
  const FakeModel model_;
  const int max_batched_tokens_;
  const int max_seqs_;
  mutable std::mutex mu_;
  std::map<uint64_t, Seq> seqs_;
  std::vector<std::pair<int32_t, int32_t>> kv_;  // (token, position) per slot
  std::vector<std::string> violations_;
  int64_t num_steps_ = 0;
  int64_t num_compute_steps_ = 0;
  int64_t fail_at_step_ = 0;
  int max_live_seqs_ = 0;
};

}  // namespace tessera::testing
