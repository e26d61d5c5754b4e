// GenerationService: the public gRPC API (proto/tessera/v1/generation.proto) over the Engine
// interface and the model's Tokenizer.
//
// Contract:
// - Generate validates before anything reaches the engine; errors are INVALID_ARGUMENT naming the
//   field: model (unknown name), prompt / prompt_token_ids (neither or both, empty, longer than
//   the context, token id outside the vocabulary), sampling.* (via FromProto). The engine's own
//   Submit() errors are returned as they are (UNAVAILABLE when no instance is ready).
// - Responses stream the engine's output deltas in order; the last carries finish_reason, stop
//   reason and usage. A request that fails in the engine (a worker died) ends the stream with the
//   engine's status (UNAVAILABLE) after the tokens already produced.
// - Client cancellation (or deadline) aborts the request in the engine (its KV blocks are freed)
//   and ends the stream with CANCELLED.
// - sampling.max_tokens 0 means up to the context length.
// Uses the gRPC callback API: no thread is held per stream, so thousands of streams may be open.
//
// Thread safety: the service is immutable after construction; reactors synchronise with the
// engine thread internally. `engine` and `tokenizer` must outlive the server.
#pragma once

#include <atomic>
#include <string>

#include "coordinator/engine/engine.h"
#include "coordinator/text/tokenizer.h"
#include "tessera/v1/generation.grpc.pb.h"

namespace tessera {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  // `model_name`: the served model name requests must use ("" in a request = this one).
  GenerationService(Engine* engine, const Tokenizer* tokenizer, std::string model_name);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;

  // Checks the request and converts it for Engine::Submit (public for tests).
  absl::StatusOr<GenerateRequest> Prepare(const v1::GenerateRequest& request);

 private:
  absl::Status CheckModel(const std::string& model) const;

  Engine* const engine_;
  const Tokenizer* const tokenizer_;
  const std::string model_name_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace tessera
