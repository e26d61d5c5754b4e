#include "coordinator/engine/llm_engine.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera {
namespace {

using Deliveries = std::vector<std::pair<OutputCallback, GenerateOutput>>;

const char* ReasonLabel(FinishReason reason, const absl::Status& status) {
  if (!status.ok()) return "error";
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kNone:
      break;
  }
  return "none";
}

std::vector<double> TokenCountBuckets(int64_t max_model_len) {
  // 1, 2, 5, 10, 20, 50, ... up to the context length (vLLM's build_1_2_5_buckets).
  std::vector<double> buckets;
  for (int64_t scale = 1;; scale *= 10) {
    for (int64_t m : {1, 2, 5}) {
      int64_t v = m * scale;
      if (v > std::max<int64_t>(max_model_len, 1)) return buckets;
      buckets.push_back(static_cast<double>(v));
    }
  }
}

absl::Status InvalidSampling(absl::string_view field, double value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampling.", field, "=", value, " is invalid: ", want));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlmEngine>> LlmEngine::Create(StepExecutor* executor,
                                                             LlmEngineOptions options) {
  if (executor == nullptr) return absl::InvalidArgumentError("LlmEngine: executor is null");
  if (options.vocab_size <= 0) {
    return absl::InvalidArgumentError("LlmEngine options: vocab_size must be > 0");
  }
  if (options.max_model_len <= 0) {
    return absl::InvalidArgumentError("LlmEngine options: max_model_len must be > 0");
  }
  if (options.max_num_batched_tokens <= 0) {
    return absl::InvalidArgumentError("LlmEngine options: max_num_batched_tokens must be > 0");
  }
  if (options.max_num_seqs <= 0) {
    return absl::InvalidArgumentError("LlmEngine options: max_num_seqs must be > 0");
  }
  for (int32_t id : options.eos_token_ids) {
    if (id < 0 || id >= options.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("LlmEngine options: eos_token_ids has ", id,
                                                     ", outside the vocabulary [0, ",
                                                     options.vocab_size, ")"));
    }
  }
  if (options.start_ready) {
    KvCapacity cap = executor->capacity();
    if (cap.num_blocks <= 0 || cap.block_size <= 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("LlmEngine: the executor reports no KV capacity (num_blocks=",
                       cap.num_blocks, ", block_size=", cap.block_size, ")"));
    }
  }
  std::unique_ptr<LlmEngine> engine(new LlmEngine(executor, std::move(options)));
  return engine;
}

LlmEngine::LlmEngine(StepExecutor* executor, LlmEngineOptions options)
    : executor_(executor), options_(std::move(options)) {
  if (options_.metrics == nullptr) {
    owned_metrics_ = std::make_unique<MetricsRegistry>();
    metrics_ = owned_metrics_.get();
  } else {
    metrics_ = options_.metrics;
  }
  seed_rng_.seed(options_.seed != 0 ? options_.seed : std::random_device{}());
  MetricsRegistry& m = *metrics_;
  // Labels as vLLM v1: model_name and engine (the replica's index).
  const std::vector<std::string> label = {"model_name", "engine"};
  GaugeFamily* running_family = m.AddGauge(
      "tessera:num_requests_running", "Number of requests in model execution batches.", label);
  engine_label_ = std::to_string(options_.engine_index >= 0 ? options_.engine_index
                                                            : running_family->num_children());
  const std::vector<std::string> model = {options_.model_name, engine_label_};
  num_running_ = m.AddGauge("tessera:num_requests_running",
                            "Number of requests in model execution batches.", label)
                     ->Labels(model);
  num_waiting_ = m.AddGauge("tessera:num_requests_waiting",
                            "Number of requests waiting to be processed.", label)
                     ->Labels(model);
  kv_usage_ = m.AddGauge("tessera:kv_cache_usage_perc",
                         "KV-cache usage. 1 means 100 percent usage.", label)
                  ->Labels(model);
  prefix_queries_ = m.AddCounter("tessera:prefix_cache_queries_total",
                                 "Prefix cache queries, in terms of number of queried tokens.",
                                 label)
                        ->Labels(model);
  prefix_hits_ = m.AddCounter("tessera:prefix_cache_hits_total",
                              "Prefix cache hits, in terms of number of cached tokens.", label)
                     ->Labels(model);
  prompt_tokens_ = m.AddCounter("tessera:prompt_tokens_total",
                                "Number of prefill tokens processed.", label)
                       ->Labels(model);
  generation_tokens_ = m.AddCounter("tessera:generation_tokens_total",
                                    "Number of generation tokens processed.", label)
                           ->Labels(model);
  preemptions_ = m.AddCounter("tessera:num_preemptions_total",
                              "Cumulative number of preemptions from the engine.", label)
                     ->Labels(model);
  success_ = m.AddCounter("tessera:request_success_total",
                          "Count of finished requests, by finished reason.",
                          {"model_name", "engine", "finished_reason"});
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    success_->Labels({options_.model_name, engine_label_, reason});
  }
  ttft_ = m.AddHistogram("tessera:time_to_first_token_seconds",
                         "Histogram of time to first token in seconds.",
                         {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                          2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0},
                         label)
              ->Labels(model);
  tpot_ = m.AddHistogram("tessera:time_per_output_token_seconds",
                         "Histogram of time per output token (inter-token latency) in seconds.",
                         {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                          5.0, 7.5, 10.0, 20.0, 40.0, 80.0},
                         label)
              ->Labels(model);
  e2e_ = m.AddHistogram("tessera:e2e_request_latency_seconds",
                        "Histogram of end to end request latency in seconds.",
                        {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                         50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0},
                        label)
             ->Labels(model);
  request_prompt_tokens_ =
      m.AddHistogram("tessera:request_prompt_tokens", "Number of prefill tokens processed.",
                     TokenCountBuckets(options_.max_model_len), label)
          ->Labels(model);
  request_generation_tokens_ =
      m.AddHistogram("tessera:request_generation_tokens",
                     "Number of generation tokens processed.",
                     TokenCountBuckets(options_.max_model_len), label)
          ->Labels(model);

  if (options_.start_ready) {
    capacity_ = executor_->capacity();
    SchedulerConfig config;
    config.max_num_batched_tokens = options_.max_num_batched_tokens;
    config.max_num_seqs = options_.max_num_seqs;
    config.num_blocks = capacity_.num_blocks;
    config.block_size = capacity_.block_size;
    config.enable_prefix_caching = options_.enable_prefix_caching;
    scheduler_ = std::make_unique<Scheduler>(config);
    ready_ = true;
    stats_.num_blocks = capacity_.num_blocks;
    stats_.num_free_blocks = capacity_.num_blocks;
  }
  thread_ = std::thread([this] { Loop(); });
}

LlmEngine::~LlmEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

int64_t LlmEngine::EffectiveMaxModelLen() const {
  int64_t len = options_.max_model_len;
  if (capacity_.num_blocks > 0) {
    len = std::min<int64_t>(len, int64_t{capacity_.num_blocks} * capacity_.block_size);
  }
  return len;
}

ModelInfo LlmEngine::model_info() const {
  ModelInfo info;
  info.name = options_.model_name;
  info.vocab_size = options_.vocab_size;
  info.eos_token_ids = options_.eos_token_ids;
  std::lock_guard<std::mutex> lock(mu_);
  info.max_model_len = EffectiveMaxModelLen();
  info.ready = ready_;
  return info;
}

absl::Status LlmEngine::Submit(GenerateRequest request, OutputCallback on_output) {
  if (!on_output) return absl::InvalidArgumentError("Submit: on_output callback is empty");
  const std::string rid = request.request_id.empty() ? "(unnamed)" : request.request_id;
  auto bad = [&rid](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat("request ", rid, ": ", parts...));
  };
  if (request.prompt_ids.empty()) return bad("prompt_ids is empty (at least one token needed)");
  for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
    int32_t id = request.prompt_ids[i];
    if (id < 0 || id >= options_.vocab_size) {
      return bad("prompt_ids[", i, "]=", id, " is outside the vocabulary [0, ",
                 options_.vocab_size, ")");
    }
  }
  const RequestSampling& s = request.sampling;
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return InvalidSampling("temperature", s.temperature, "must be >= 0");
  }
  if (s.top_k < 0) return InvalidSampling("top_k", s.top_k, "must be >= 0 (0 disables)");
  if (!(s.top_p > 0 && s.top_p <= 1)) return InvalidSampling("top_p", s.top_p, "must be in (0, 1]");
  if (!(s.min_p >= 0 && s.min_p <= 1)) {
    return InvalidSampling("min_p", s.min_p, "must be in [0, 1]");
  }
  if (!(s.repetition_penalty > 0 && std::isfinite(s.repetition_penalty))) {
    return InvalidSampling("repetition_penalty", s.repetition_penalty, "must be > 0");
  }
  if (!(s.presence_penalty >= -2 && s.presence_penalty <= 2)) {
    return InvalidSampling("presence_penalty", s.presence_penalty, "must be in [-2, 2]");
  }
  if (!(s.frequency_penalty >= -2 && s.frequency_penalty <= 2)) {
    return InvalidSampling("frequency_penalty", s.frequency_penalty, "must be in [-2, 2]");
  }
  if (s.max_tokens < 1) return InvalidSampling("max_tokens", s.max_tokens, "must be >= 1");
  if (s.min_tokens < 0 || s.min_tokens > s.max_tokens) {
    return InvalidSampling("min_tokens", s.min_tokens,
                           absl::StrCat("must be in [0, max_tokens = ", s.max_tokens, "]"));
  }
  if (s.logprobs < 0 || s.logprobs > 20) {
    return InvalidSampling("logprobs", s.logprobs, "must be in [0, 20]");
  }
  for (int32_t id : s.stop_token_ids) {
    if (id < 0 || id >= options_.vocab_size) {
      return bad("sampling.stop_token_ids has ", id, ", outside the vocabulary [0, ",
                 options_.vocab_size, ")");
    }
  }
  for (const std::string& stop : s.stop) {
    if (stop.empty()) return bad("sampling.stop has an empty string");
  }
  if (!s.stop.empty() && options_.tokenizer == nullptr) {
    return bad("sampling.stop needs text, but this engine has no tokenizer");
  }

  auto r = std::make_unique<EngineRequest>();
  r->prompt = std::move(request.prompt_ids);
  r->sampling = request.sampling;
  r->callback = std::move(on_output);
  r->arrival_time = EngineClock::now();
  r->usage.prompt_tokens = static_cast<int64_t>(r->prompt.size());
  const int64_t prompt_len = static_cast<int64_t>(r->prompt.size());

  std::lock_guard<std::mutex> lock(mu_);
  if (!ready_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", options_.model_name, " is not ready (its instance is starting or recovering); ",
        "retry later"));
  }
  const int64_t max_len = EffectiveMaxModelLen();
  if (prompt_len >= max_len) {
    return bad("the prompt has ", prompt_len, " tokens, but the context length is ", max_len,
               " (the prompt must leave room for at least one output token)");
  }
  if (prompt_len + s.max_tokens > max_len) {
    return bad("prompt (", prompt_len, " tokens) + max_tokens (", s.max_tokens,
               ") exceeds the context length ", max_len, "; lower sampling.max_tokens to at most ",
               max_len - prompt_len);
  }
  if (request.request_id.empty()) {
    do {
      request.request_id = absl::StrCat("req-", next_request_number_++);
    } while (live_ids_.contains(request.request_id));
  } else if (live_ids_.contains(request.request_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request ", request.request_id, " is already running; ids must be unique"));
  }
  r->id = request.request_id;
  r->seed = s.seed.has_value() ? *s.seed : seed_rng_();
  OutputProcessor::Config pc;
  pc.tokenizer = options_.tokenizer;
  pc.skip_special_tokens = request.skip_special_tokens;
  pc.eos_token_ids = options_.eos_token_ids;
  pc.ignore_eos = s.ignore_eos;
  pc.stop_token_ids = s.stop_token_ids;
  pc.stop = s.stop;
  pc.max_tokens = s.max_tokens;
  pc.min_tokens = s.min_tokens;
  if (s.min_tokens > 0) {
    if (!s.ignore_eos) r->min_tokens_banned_ids = options_.eos_token_ids;
    r->min_tokens_banned_ids.insert(r->min_tokens_banned_ids.end(), s.stop_token_ids.begin(),
                                    s.stop_token_ids.end());
  }
  pc.max_context = max_len;
  pc.prompt_len = prompt_len;
  r->processor = std::make_unique<OutputProcessor>(std::move(pc));
  live_ids_.insert(r->id);
  ++stats_.num_live_requests;
  incoming_.push_back(std::move(r));
  cv_.notify_all();
  return absl::OkStatus();
}

void LlmEngine::Abort(absl::string_view request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_ids_.contains(request_id)) return;
  aborts_.emplace_back(request_id);
  cv_.notify_all();
}

void LlmEngine::SetReady(bool ready) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ready_ == ready) return;
  ready_ = ready;
  ready_changed_ = true;
  cv_.notify_all();
}

LlmEngine::Stats LlmEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool LlmEngine::WaitIdle(double timeout_seconds) const {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                           [&] { return stats_.num_live_requests == 0; });
}

void LlmEngine::FinishRequest(EngineRequest* r, GenerateOutput out, Deliveries* deliveries) {
  std::unique_ptr<EngineRequest> owned = scheduler_->Finish(r);
  out.finished = true;
  const double e2e =
      std::chrono::duration<double>(EngineClock::now() - owned->arrival_time).count();
  e2e_->Observe(e2e);
  request_prompt_tokens_->Observe(static_cast<double>(owned->prompt.size()));
  request_generation_tokens_->Observe(static_cast<double>(owned->output.size()));
  success_->Labels({options_.model_name, engine_label_, ReasonLabel(out.finish_reason, out.status)})
      ->Increment();
  out.request_id = owned->id;
  out.usage = owned->usage;
  out.usage.completion_tokens = static_cast<int64_t>(owned->output.size());
  deliveries->emplace_back(std::move(owned->callback), std::move(out));
}

void LlmEngine::HandleFailure(const absl::Status& status, Deliveries* deliveries) {
  LOG(WARNING) << "model " << options_.model_name << ": step failed (" << status
               << "); requeueing requests that streamed nothing, failing the others, "
               << "waiting for the instance to come back";
  std::vector<std::unique_ptr<EngineRequest>> dropped = scheduler_->DropWorkerState();
  // Requeue in arrival order at the front of the waiting queue.
  for (auto it = dropped.rbegin(); it != dropped.rend(); ++it) {
    if ((*it)->output.empty()) scheduler_->Add(std::move(*it), /*front=*/true);
  }
  for (auto& r : dropped) {
    if (r == nullptr) continue;
    // Re-add so that FinishRequest() sees it, then end it with the executor's status.
    EngineRequest* raw = r.get();
    scheduler_->Add(std::move(r));
    GenerateOutput out;
    out.finish_reason = FinishReason::kAbort;
    out.status = absl::Status(status.code(),
                              absl::StrCat("request ", raw->id, " failed: ", status.message()));
    FinishRequest(raw, std::move(out), deliveries);
  }
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = false;
}

void LlmEngine::RunStep(Deliveries* deliveries) {
  ScheduleStats sched;
  v1::StepPlan plan = scheduler_->Schedule(&sched);
  if (sched.num_preempted > 0) preemptions_->Increment(sched.num_preempted);
  prefix_queries_->Increment(static_cast<double>(sched.prefix_queries));
  prefix_hits_->Increment(static_cast<double>(sched.prefix_hits));
  if (plan.new_seqs_size() == 0 && plan.cached_seqs_size() == 0 &&
      plan.finished_seq_ids_size() == 0) {
    return;
  }
  absl::StatusOr<v1::StepResult> result = executor_->Execute(plan);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.num_steps;
    stats_.num_preemptions += sched.num_preempted;
  }
  if (!result.ok()) {
    HandleFailure(result.status(), deliveries);
    return;
  }
  absl::StatusOr<std::vector<SampledOutput>> samples = scheduler_->ApplyResult(*result);
  if (!samples.ok()) {
    HandleFailure(samples.status(), deliveries);
    return;
  }
  const EngineClock::time_point now = EngineClock::now();
  for (const SampledOutput& s : *samples) {
    EngineRequest* r = s.request;
    const int32_t token = s.token->token_id();
    scheduler_->Accept(r, token);
    if (r->output.size() == 1) {
      ttft_->Observe(std::chrono::duration<double>(now - r->arrival_time).count());
      prompt_tokens_->Increment(static_cast<double>(r->prompt.size()));
    } else {
      tpot_->Observe(std::chrono::duration<double>(now - r->last_token_time).count());
    }
    r->last_token_time = now;
    generation_tokens_->Increment();
    ProcessedToken p = r->processor->Process(token, static_cast<int64_t>(r->output.size()));
    GenerateOutput out;
    out.request_id = r->id;
    out.token_ids.push_back(token);
    out.text = std::move(p.text);
    TokenLogprob lp;
    lp.token_id = token;
    lp.logprob = s.token->logprob();
    for (const v1::TopLogprob& top : s.token->top_logprobs()) {
      lp.top.emplace_back(top.token_id(), top.logprob());
    }
    out.logprobs.push_back(std::move(lp));
    if (p.finished) {
      out.finish_reason = p.finish_reason;
      out.stop_reason = std::move(p.stop_reason);
      out.stop_token_id = p.stop_token_id;
      FinishRequest(r, std::move(out), deliveries);
    } else {
      out.usage = r->usage;
      out.usage.completion_tokens = static_cast<int64_t>(r->output.size());
      deliveries->emplace_back(r->callback, std::move(out));
    }
  }
}

void LlmEngine::UpdateGauges() {
  if (scheduler_ == nullptr) return;
  num_running_->Set(scheduler_->num_running());
  num_waiting_->Set(scheduler_->num_waiting());
  kv_usage_->Set(scheduler_->block_manager().usage());
}

void LlmEngine::Loop() {
  Deliveries deliveries;
  std::deque<std::unique_ptr<EngineRequest>> parked;  // arrived before any capacity was known
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] {
      return stop_ || !incoming_.empty() || !aborts_.empty() || ready_changed_ ||
             (ready_ && has_work_);
    });
    if (stop_) break;
    std::deque<std::unique_ptr<EngineRequest>> incoming = std::move(incoming_);
    incoming_.clear();
    std::vector<std::string> aborts = std::move(aborts_);
    aborts_.clear();
    const bool ready = ready_;
    const bool became_ready = ready_changed_ && ready_;
    ready_changed_ = false;
    lock.unlock();

    if (became_ready) {
      KvCapacity cap = executor_->capacity();
      if (cap.num_blocks <= 0 || cap.block_size <= 0) {
        LOG(ERROR) << "model " << options_.model_name << ": SetReady(true) but the executor "
                   << "reports no KV capacity; staying not ready";
        std::lock_guard<std::mutex> guard(mu_);
        ready_ = false;
        lock.lock();
        continue;
      }
      if (scheduler_ == nullptr) {
        SchedulerConfig config;
        config.max_num_batched_tokens = options_.max_num_batched_tokens;
        config.max_num_seqs = options_.max_num_seqs;
        config.num_blocks = cap.num_blocks;
        config.block_size = cap.block_size;
        config.enable_prefix_caching = options_.enable_prefix_caching;
        scheduler_ = std::make_unique<Scheduler>(config);
      } else {
        // The instance is back with empty per-sequence state: requests still marked running
        // (SetReady(false) without a failed step) resume by recompute, keeping their outputs.
        std::vector<std::unique_ptr<EngineRequest>> running = scheduler_->DropWorkerState();
        for (auto it = running.rbegin(); it != running.rend(); ++it) {
          scheduler_->Add(std::move(*it), /*front=*/true);
        }
        scheduler_->Reconfigure(cap.num_blocks, cap.block_size);
      }
      std::lock_guard<std::mutex> guard(mu_);
      capacity_ = cap;
      stats_.num_blocks = cap.num_blocks;
    }
    for (auto& r : incoming) parked.push_back(std::move(r));
    if (scheduler_ != nullptr) {
      while (!parked.empty()) {
        scheduler_->Add(std::move(parked.front()));
        parked.pop_front();
      }
    }
    for (const std::string& id : aborts) {
      GenerateOutput out;
      out.finish_reason = FinishReason::kAbort;
      if (scheduler_ != nullptr) {
        if (EngineRequest* r = scheduler_->Find(id)) FinishRequest(r, std::move(out), &deliveries);
        continue;
      }
      for (auto it = parked.begin(); it != parked.end(); ++it) {
        if ((*it)->id == id) {
          out.request_id = id;
          out.finished = true;
          out.usage = (*it)->usage;
          success_->Labels({options_.model_name, engine_label_, "abort"})->Increment();
          deliveries.emplace_back(std::move((*it)->callback), std::move(out));
          parked.erase(it);
          break;
        }
      }
    }
    bool stalled = false;
    if (ready && scheduler_ != nullptr &&
        (scheduler_->HasWork() || scheduler_->HasPendingReleases())) {
      const int64_t steps_before = stats().num_steps;
      RunStep(&deliveries);
      stalled = stats().num_steps == steps_before;
    }
    UpdateGauges();
    std::vector<std::string> done;
    for (auto& [callback, out] : deliveries) {
      if (out.finished) done.push_back(out.request_id);
      callback(std::move(out));
    }
    deliveries.clear();

    lock.lock();
    for (const std::string& id : done) {
      live_ids_.erase(id);
      --stats_.num_live_requests;
    }
    if (scheduler_ != nullptr) {
      stats_.num_running = scheduler_->num_running();
      stats_.num_waiting = scheduler_->num_waiting();
      stats_.num_free_blocks = scheduler_->block_manager().num_free_blocks();
      has_work_ = !stalled && (scheduler_->HasWork() || scheduler_->HasPendingReleases());
    }
    if (stats_.num_live_requests == 0) idle_cv_.notify_all();
  }
  // Shutdown: end every live request.
  lock.unlock();
  std::vector<EngineRequest*> live;
  if (scheduler_ != nullptr) {
    for (auto& r : incoming_) scheduler_->Add(std::move(r));
    incoming_.clear();
    for (auto& r : parked) scheduler_->Add(std::move(r));
    parked.clear();
    // Collect ids first: FinishRequest mutates the scheduler.
    std::vector<std::string> ids;
    {
      std::lock_guard<std::mutex> guard(mu_);
      ids.assign(live_ids_.begin(), live_ids_.end());
    }
    for (const std::string& id : ids) {
      if (EngineRequest* r = scheduler_->Find(id)) {
        GenerateOutput out;
        out.finish_reason = FinishReason::kAbort;
        out.status = absl::CancelledError(absl::StrCat("request ", id, ": the engine shut down"));
        FinishRequest(r, std::move(out), &deliveries);
      }
    }
  }
  for (auto& r : parked) {  // never scheduled: the instance was never ready
    GenerateOutput out;
    out.request_id = r->id;
    out.finished = true;
    out.finish_reason = FinishReason::kAbort;
    out.status = absl::CancelledError(absl::StrCat("request ", r->id, ": the engine shut down"));
    out.usage = r->usage;
    deliveries.emplace_back(std::move(r->callback), std::move(out));
  }
  for (auto& [callback, out] : deliveries) callback(std::move(out));
}

}  // namespace tessera
