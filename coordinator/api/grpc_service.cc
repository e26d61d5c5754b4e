#include "coordinator/api/grpc_service.h"

#include <memory>
#include <mutex>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"

namespace tessera {
namespace {

grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kAbort: return v1::FINISH_REASON_ABORT;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// One Generate stream. Lives until OnDone(); the engine's callback reaches it through a shared
// Link that OnDone() clears, so outputs that arrive afterwards are dropped safely.
class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  struct Link {
    std::recursive_mutex mu;
    GenerateReactor* reactor = nullptr;
  };

  GenerateReactor(Engine* engine, std::string request_id, bool want_logprobs)
      : engine_(engine),
        request_id_(std::move(request_id)),
        want_logprobs_(want_logprobs),
        link_(std::make_shared<Link>()) {
    link_->reactor = this;
  }

  // Ends the stream at once (validation failure).
  void Fail(const absl::Status& st) {
    std::lock_guard<std::recursive_mutex> lock(link_->mu);
    finish_called_ = true;
    Finish(ToGrpc(st));
  }

  void Start(GenerateRequest request) {
    std::shared_ptr<Link> link = link_;
    absl::Status st = engine_->Submit(std::move(request), [link](GenerateOutput out) {
      std::lock_guard<std::recursive_mutex> lock(link->mu);
      if (link->reactor != nullptr) link->reactor->Push(std::move(out));
    });
    if (!st.ok()) Fail(st);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(link_->mu);
    writing_ = false;
    if (!ok) {
      if (!finish_called_) {
        finish_called_ = true;
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      }
      return;
    }
    MaybeWrite();
  }

  void OnCancel() override {
    bool abort = false;
    {
      std::lock_guard<std::recursive_mutex> lock(link_->mu);
      abort = !final_queued_;
      cancelled_ = true;
      if (!finish_called_ && !writing_) {
        finish_called_ = true;
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
      }
    }
    if (abort) engine_->Abort(request_id_);
  }

  void OnDone() override {
    {
      std::lock_guard<std::recursive_mutex> lock(link_->mu);
      link_->reactor = nullptr;
    }
    delete this;
  }

 private:
  void Push(GenerateOutput out) {
    v1::GenerateResponse r;
    r.set_request_id(out.request_id.empty() ? request_id_ : out.request_id);
    r.mutable_token_ids()->Add(out.token_ids.begin(), out.token_ids.end());
    r.set_text(std::move(out.text));
    if (want_logprobs_) {
      for (const TokenLogprob& lp : out.logprobs) {
        v1::TokenLogprobs* p = r.add_logprobs();
        p->set_token_id(lp.token_id);
        p->set_logprob(lp.logprob);
        for (const auto& [id, value] : lp.top) {
          v1::TopLogprob* t = p->add_top_logprobs();
          t->set_token_id(id);
          t->set_logprob(value);
        }
      }
    }
    if (out.finished) {
      final_queued_ = true;
      final_status_ = ToGrpc(out.status);
      if (out.status.ok()) {
        r.set_finish_reason(ToProto(out.finish_reason));
        r.set_stop_reason(out.stop_reason);
        if (out.stop_token_id >= 0) r.set_stop_token_id(out.stop_token_id);
        r.mutable_usage()->set_prompt_tokens(out.usage.prompt_tokens);
        r.mutable_usage()->set_completion_tokens(out.usage.completion_tokens);
        r.mutable_usage()->set_cached_prompt_tokens(out.usage.cached_prompt_tokens);
      } else if (r.token_ids().empty() && r.text().empty()) {
        MaybeWrite();
        return;  // nothing to deliver before the error
      }
    }
    queue_.push_back(std::move(r));
    MaybeWrite();
  }

  // Called with link_->mu held.
  void MaybeWrite() {
    if (writing_ || finish_called_) return;
    if (!queue_.empty() && !cancelled_) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (final_queued_ || cancelled_) {
      finish_called_ = true;
      Finish(cancelled_ ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client")
                        : final_status_);
    }
  }

  Engine* const engine_;
  const std::string request_id_;
  const bool want_logprobs_;
  std::shared_ptr<Link> link_;
  // Under link_->mu.
  std::deque<v1::GenerateResponse> queue_;
  v1::GenerateResponse current_;
  bool writing_ = false;
  bool final_queued_ = false;
  bool finish_called_ = false;
  bool cancelled_ = false;
  grpc::Status final_status_;
};

}  // namespace

GenerationService::GenerationService(Engine* engine, const Tokenizer* tokenizer,
                                     std::string model_name)
    : engine_(engine), tokenizer_(tokenizer), model_name_(std::move(model_name)) {}

absl::Status GenerationService::CheckModel(const std::string& model) const {
  if (model.empty() || model == model_name_) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("model: unknown model '", model,
                                                 "'; this server serves '", model_name_, "'"));
}

absl::StatusOr<GenerateRequest> GenerationService::Prepare(const v1::GenerateRequest& request) {
  RETURN_IF_ERROR(CheckModel(request.model()));
  const ModelInfo info = engine_->model_info();
  GenerateRequest out;
  const bool has_text = !request.prompt().empty();
  const bool has_ids = request.prompt_token_ids_size() > 0;
  if (has_text && has_ids) {
    return absl::InvalidArgumentError("prompt: give either prompt or prompt_token_ids, not both");
  }
  if (!has_text && !has_ids) {
    return absl::InvalidArgumentError("prompt: empty; give prompt text or prompt_token_ids");
  }
  if (has_text) {
    if (tokenizer_ == nullptr) {
      return absl::InvalidArgumentError(
          "prompt: this model has no tokenizer.json; send prompt_token_ids instead");
    }
    out.prompt_ids = tokenizer_->Encode(
        request.prompt(), /*allow_special=*/true,
        /*add_special_tokens=*/!request.has_add_special_tokens() ||
            request.add_special_tokens());
    if (out.prompt_ids.empty()) {
      return absl::InvalidArgumentError("prompt: the text has no tokens");
    }
  } else {
    out.prompt_ids.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
    for (int i = 0; i < static_cast<int>(out.prompt_ids.size()); ++i) {
      const int32_t id = out.prompt_ids[i];
      if (id < 0 || (info.vocab_size > 0 && id >= info.vocab_size)) {
        return absl::InvalidArgumentError(absl::StrCat("prompt_token_ids[", i, "]: ", id,
                                                       " is outside the vocabulary [0, ",
                                                       info.vocab_size, ")"));
      }
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(out.prompt_ids.size());
  if (info.max_model_len > 0 && prompt_len >= info.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(has_text ? "prompt" : "prompt_token_ids", ": ", prompt_len,
                     " tokens leave no room for output within the context length ",
                     info.max_model_len));
  }
  ASSIGN_OR_RETURN(out.sampling, FromProto(request.sampling()));
  if (request.sampling().max_tokens() == 0 && info.max_model_len > 0) {
    out.sampling.max_tokens = static_cast<int>(info.max_model_len - prompt_len);
  } else if (info.max_model_len > 0 && prompt_len + out.sampling.max_tokens > info.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.max_tokens: ", out.sampling.max_tokens, " + ", prompt_len,
        " prompt tokens exceed the context length ", info.max_model_len));
  }
  if (request.logprobs() && out.sampling.logprobs == 0) {
    // The engine returns logprobs when logprobs > 0; ask for the sampled one plus one top entry.
    out.sampling.logprobs = 1;
  }
  out.request_id = request.request_id().empty() ? absl::StrCat("grpc-", next_id_.fetch_add(1))
                                                : request.request_id();
  out.skip_special_tokens =
      request.has_skip_special_tokens() ? request.skip_special_tokens() : true;
  return out;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext*, const v1::GenerateRequest* request) {
  absl::StatusOr<GenerateRequest> prepared = Prepare(*request);
  const bool want_logprobs = request->logprobs() || request->sampling().logprobs() > 0;
  auto* reactor = new GenerateReactor(
      engine_, prepared.ok() ? prepared->request_id : request->request_id(), want_logprobs);
  if (!prepared.ok()) {
    reactor->Fail(prepared.status());
  } else {
    reactor->Start(std::move(*prepared));
  }
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status st = CheckModel(request->model());
  if (st.ok() && tokenizer_ == nullptr) {
    st = absl::FailedPreconditionError("this model has no tokenizer.json");
  }
  if (st.ok()) {
    std::vector<int32_t> ids = tokenizer_->Encode(
        request->text(), !request->skip_special_tokens(),
        request->has_add_special_tokens() && request->add_special_tokens());
    response->mutable_token_ids()->Add(ids.begin(), ids.end());
    response->set_count(static_cast<int64_t>(ids.size()));
    response->set_max_model_len(engine_->model_info().max_model_len);
  }
  reactor->Finish(ToGrpc(st));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status st = CheckModel(request->model());
  if (st.ok() && tokenizer_ == nullptr) {
    st = absl::FailedPreconditionError("this model has no tokenizer.json");
  }
  if (st.ok()) {
    std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
    absl::StatusOr<std::string> text = tokenizer_->Decode(ids, request->skip_special_tokens());
    if (text.ok()) {
      response->set_text(std::move(*text));
    } else {
      st = absl::InvalidArgumentError(absl::StrCat("token_ids: ", text.status().message()));
    }
  }
  reactor->Finish(ToGrpc(st));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest* request,
                                                          v1::GetModelInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status st = CheckModel(request->model());
  if (st.ok()) {
    const ModelInfo info = engine_->model_info();
    response->set_name(model_name_);
    response->set_max_model_len(info.max_model_len);
    response->set_vocab_size(info.vocab_size);
    response->mutable_eos_token_ids()->Add(info.eos_token_ids.begin(), info.eos_token_ids.end());
    response->set_ready(info.ready);
  }
  reactor->Finish(ToGrpc(st));
  return reactor;
}

}  // namespace tessera
