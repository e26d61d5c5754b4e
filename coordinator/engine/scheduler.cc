#include "coordinator/engine/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera {

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config),
      blocks_(std::make_unique<KvBlockManager>(config.num_blocks, config.block_size,
                                               config.enable_prefix_caching)) {
  CHECK_GT(config_.max_num_batched_tokens, 0);
  CHECK_GT(config_.max_num_seqs, 0);
}

void Scheduler::Add(std::unique_ptr<EngineRequest> request, bool front) {
  EngineRequest* raw = request.get();
  CHECK(!requests_.contains(raw->id)) << "duplicate request " << raw->id;
  requests_[raw->id] = std::move(request);
  if (front) {
    waiting_.push_front(raw);
  } else {
    waiting_.push_back(raw);
  }
}

EngineRequest* Scheduler::Find(absl::string_view request_id) const {
  auto it = requests_.find(request_id);
  return it == requests_.end() ? nullptr : it->second.get();
}

void Scheduler::Preempt(EngineRequest* r) {
  blocks_->Free(r->blocks);
  r->blocks.clear();
  r->num_computed = 0;
  r->num_registered_blocks = 0;
  r->last_block_hash = KvBlockManager::kRootHash;
  r->pending_append.clear();
  pending_finished_.push_back(r->seq_id);
  by_seq_.erase(r->seq_id);
  r->seq_id = 0;
  waiting_.push_front(r);
}

v1::StepPlan Scheduler::Schedule(ScheduleStats* stats) {
  v1::StepPlan plan;
  plan.set_step_id(next_step_id_++);
  scheduled_.clear();
  int budget = config_.max_num_batched_tokens;
  const int bs = config_.block_size;

  // 1. Running requests, in admission order; preempt from the back when blocks run out.
  bool preempted = false;
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    EngineRequest* r = running_[i];
    int64_t num_new = std::min<int64_t>(r->context_len() - r->num_computed, budget);
    CHECK_GT(num_new, 0) << "request " << r->id << " has nothing to compute";
    int need = BlocksFor(r->num_computed + num_new) - static_cast<int>(r->blocks.size());
    need = std::max(need, 0);
    bool self_preempted = false;
    while (!blocks_->CanAllocate({}, need)) {
      EngineRequest* victim = running_.back();
      running_.pop_back();
      Preempt(victim);
      preempted = true;
      ++stats->num_preempted;
      if (victim == r) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;
    size_t old_blocks = r->blocks.size();
    CHECK(blocks_->Allocate({}, need, &r->blocks));
    v1::CachedSeq* seq = plan.add_cached_seqs();
    seq->set_seq_id(r->seq_id);
    for (int32_t t : r->pending_append) seq->add_append_token_ids(t);
    r->pending_append.clear();
    seq->set_num_scheduled_tokens(static_cast<int32_t>(num_new));
    for (size_t b = old_blocks; b < r->blocks.size(); ++b) seq->add_new_block_ids(r->blocks[b]);
    r->num_scheduled = static_cast<int>(num_new);
    scheduled_.push_back(r);
    budget -= static_cast<int>(num_new);
    ++i;
  }

  // 2. Waiting requests, FCFS, unless this step had to preempt.
  while (!preempted && !waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    EngineRequest* r = waiting_.front();
    std::vector<int32_t> context = r->prompt;
    context.insert(context.end(), r->output.begin(), r->output.end());
    const int64_t len = static_cast<int64_t>(context.size());
    std::vector<int32_t> hits =
        blocks_->FindCachedPrefix(context, static_cast<int>((len - 1) / bs));
    const int64_t num_cached = static_cast<int64_t>(hits.size()) * bs;
    const int64_t num_new = std::min<int64_t>(len - num_cached, budget);
    const int need = BlocksFor(num_cached + num_new) - static_cast<int>(hits.size());
    std::vector<int32_t> table;
    if (!blocks_->Allocate(hits, need, &table)) break;  // FCFS: nobody overtakes it
    waiting_.pop_front();
    if (blocks_->prefix_caching()) {
      stats->prefix_queries += len;
      stats->prefix_hits += num_cached;
    }
    r->blocks = std::move(table);
    r->num_computed = num_cached;
    r->num_registered_blocks = static_cast<int>(hits.size());
    r->last_block_hash = KvBlockManager::kRootHash;
    for (size_t b = 0; b < hits.size(); ++b) {
      r->last_block_hash = KvBlockManager::HashBlock(
          r->last_block_hash, absl::MakeConstSpan(context).subspan(b * bs, bs));
    }
    if (!r->scheduled_once) {
      r->scheduled_once = true;
      r->usage.cached_prompt_tokens =
          std::min<int64_t>(num_cached, static_cast<int64_t>(r->prompt.size()));
    }
    r->seq_id = next_seq_id_++;
    by_seq_[r->seq_id] = r;
    r->pending_append.clear();

    v1::NewSeq* seq = plan.add_new_seqs();
    seq->set_seq_id(r->seq_id);
    seq->mutable_token_ids()->Add(context.begin(), context.end());
    seq->set_num_output_tokens(static_cast<int64_t>(r->output.size()));
    seq->set_num_computed_tokens(num_cached);
    seq->set_num_scheduled_tokens(static_cast<int32_t>(num_new));
    seq->mutable_block_ids()->Add(r->blocks.begin(), r->blocks.end());
    v1::SeqSampling* s = seq->mutable_sampling();
    s->set_temperature(r->sampling.temperature);
    s->set_top_k(r->sampling.top_k);
    s->set_top_p(r->sampling.top_p);
    s->set_min_p(r->sampling.min_p);
    s->set_repetition_penalty(r->sampling.repetition_penalty);
    s->set_presence_penalty(r->sampling.presence_penalty);
    s->set_frequency_penalty(r->sampling.frequency_penalty);
    s->set_seed(r->seed);
    s->set_num_top_logprobs(r->sampling.logprobs);
    if (r->sampling.min_tokens > static_cast<int>(r->output.size())) {
      s->set_min_tokens(r->sampling.min_tokens);
      s->mutable_min_tokens_banned_ids()->Add(r->min_tokens_banned_ids.begin(),
                                              r->min_tokens_banned_ids.end());
    }

    r->num_scheduled = static_cast<int>(num_new);
    scheduled_.push_back(r);
    running_.push_back(r);
    budget -= static_cast<int>(num_new);
  }

  for (uint64_t id : pending_finished_) plan.add_finished_seq_ids(id);
  pending_finished_.clear();
  stats->num_scheduled_tokens = config_.max_num_batched_tokens - budget;
  return plan;
}

absl::StatusOr<std::vector<SampledOutput>> Scheduler::ApplyResult(const v1::StepResult& result) {
  const int bs = config_.block_size;
  int expected = 0;
  for (EngineRequest* r : scheduled_) {
    r->num_computed += r->num_scheduled;
    r->num_scheduled = 0;
    CHECK_LE(r->num_computed, r->context_len());
    if (r->num_computed == r->context_len()) ++expected;
    // Register the newly completed full blocks: their KV now exists on every worker.
    const int64_t full = r->num_computed / bs;
    while (r->num_registered_blocks < full) {
      const int b = r->num_registered_blocks;
      std::vector<int32_t> tokens(bs);
      for (int k = 0; k < bs; ++k) tokens[k] = r->context_token(int64_t{b} * bs + k);
      r->last_block_hash = blocks_->CacheBlock(r->blocks[b], r->last_block_hash, tokens);
      ++r->num_registered_blocks;
    }
  }
  scheduled_.clear();
  std::vector<SampledOutput> out;
  for (const v1::SampledToken& t : result.sampled()) {
    auto it = by_seq_.find(t.seq_id());
    if (it == by_seq_.end() || it->second->num_computed != it->second->context_len()) {
      return absl::InternalError(absl::StrCat("step ", result.step_id(), ": the executor sampled ",
                                              "seq ", t.seq_id(), ", which was not due to sample"));
    }
    out.push_back({it->second, &t});
  }
  if (static_cast<int>(out.size()) != expected) {
    return absl::InternalError(absl::StrCat("step ", result.step_id(), ": the executor returned ",
                                            out.size(), " samples, the plan expected ", expected));
  }
  return out;
}

void Scheduler::Accept(EngineRequest* r, int32_t token) {
  r->output.push_back(token);
  r->pending_append.push_back(token);
}

std::unique_ptr<EngineRequest> Scheduler::Finish(EngineRequest* r) {
  auto it = requests_.find(r->id);
  CHECK(it != requests_.end());
  std::unique_ptr<EngineRequest> owned = std::move(it->second);
  requests_.erase(it);
  auto wit = std::find(waiting_.begin(), waiting_.end(), r);
  if (wit != waiting_.end()) waiting_.erase(wit);
  auto rit = std::find(running_.begin(), running_.end(), r);
  if (rit != running_.end()) running_.erase(rit);
  auto sit = std::find(scheduled_.begin(), scheduled_.end(), r);
  if (sit != scheduled_.end()) scheduled_.erase(sit);
  blocks_->Free(r->blocks);
  r->blocks.clear();
  if (r->seq_id != 0) {
    pending_finished_.push_back(r->seq_id);
    by_seq_.erase(r->seq_id);
    r->seq_id = 0;
  }
  return owned;
}

std::vector<std::unique_ptr<EngineRequest>> Scheduler::DropWorkerState() {
  std::vector<std::unique_ptr<EngineRequest>> dropped;
  for (EngineRequest* r : running_) {
    r->blocks.clear();
    r->num_computed = 0;
    r->num_registered_blocks = 0;
    r->last_block_hash = KvBlockManager::kRootHash;
    r->pending_append.clear();
    r->seq_id = 0;
    auto it = requests_.find(r->id);
    dropped.push_back(std::move(it->second));
    requests_.erase(it);
  }
  running_.clear();
  scheduled_.clear();
  by_seq_.clear();
  pending_finished_.clear();
  blocks_->Reset();
  return dropped;
}

void Scheduler::Reconfigure(int num_blocks, int block_size) {
  CHECK(running_.empty());
  config_.num_blocks = num_blocks;
  config_.block_size = block_size;
  blocks_ = std::make_unique<KvBlockManager>(num_blocks, block_size,
                                             config_.enable_prefix_caching);
  pending_finished_.clear();
}

}  // namespace tessera
