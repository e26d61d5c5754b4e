// HttpServer: the OpenAI-compatible HTTP/1.1 API (openai_serving.h) on Boost.Beast / Asio.
//
// A small fixed pool of io threads runs every connection asynchronously (no thread per
// connection); each connection is a strand, so its handlers never run concurrently. Keep-alive
// and pipelining (answered in order), chunked Server-Sent Events for streaming, optional TLS
// (one certificate chain + key, PEM), optional API keys (`Authorization: Bearer KEY` on /v1/*;
// /health and /metrics stay open, as in vLLM), limits on header and body size and an idle
// timeout. A client that disconnects mid-request aborts its engine requests.
//
// Shutdown(): stops accepting, answers new requests 503, lets running requests finish for up to
// `drain_timeout`, then aborts what is left, waits for the engine's final outputs and joins the
// io threads. The destructor calls Shutdown(0) when it was not called.
//
// Thread safety: Start() and Shutdown() from one controlling thread; port() and the accessors
// from any thread. The Engine and Tokenizer must outlive the server.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "coordinator/api/openai_serving.h"
#include "coordinator/engine/engine.h"
#include "coordinator/text/tokenizer.h"
#include "kernels/base/flags.h"

namespace tessera::api {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;                   // 0: pick a free port (see HttpServer::port())
  int num_io_threads = 2;
  std::vector<std::string> api_keys; // empty: no authentication
  std::string tls_cert_file;         // PEM certificate chain; with tls_key_file enables TLS
  std::string tls_key_file;          // PEM private key
  int64_t max_body_bytes = 32 << 20; // larger bodies answer 413
  int64_t max_header_bytes = 64 << 10;  // larger headers answer 431
  absl::Duration idle_timeout = absl::Seconds(120);  // idle keep-alive / slow request header
  int backlog = 1024;
  // Served model names, chat template and output parsing (openai_serving.h).
  OpenAiServiceOptions service;
};

class HttpServer {
 public:
  HttpServer(Engine& engine, const Tokenizer& tokenizer, HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, loads the TLS files and starts the io threads. Errors name the address or file.
  absl::Status Start();
  // The bound port (after Start()).
  int port() const;
  bool tls() const;
  // Graceful shutdown (see the file comment). Idempotent.
  void Shutdown(absl::Duration drain_timeout = absl::Seconds(30));

  OpenAiService& service();

  // Keeps `tokenizer` alive as long as the server (StartHttpApi's stand-in tokenizer).
  void Own(std::unique_ptr<Tokenizer> tokenizer) { owned_tokenizer_ = std::move(tokenizer); }

 private:
  class Impl;
  std::unique_ptr<Tokenizer> owned_tokenizer_;  // destroyed after impl_
  std::unique_ptr<Impl> impl_;
};

// --- Starting the API from `tessera serve` flags. ---

struct HttpApiFlags {
  std::string api_keys;       // --api-key: comma-separated; empty: $TESSERA_API_KEY, else none
  std::string tls_cert;       // --tls-cert
  std::string tls_key;        // --tls-key
  int io_threads = 2;         // --http-threads
  std::string output_format = "auto";  // --output-format: auto (from the chat template and
                                       // model_type) or a name output_parser.h accepts
  std::string chat_template;  // --chat-template: a .jinja file overriding the model's
  int64_t max_body_bytes = 32 << 20;
};
// Registers the flags above on `parser` (they must outlive parsing).
void AddHttpApiFlags(FlagParser* parser, HttpApiFlags* flags);

struct HttpApiContext {
  std::string host;
  int port = 0;
  std::string model_dir;          // chat template (tokenizer_config.json, chat_template.jinja)
  std::string model_type;         // config.json model_type (output format detection)
  std::string served_model_name;
  Engine* engine = nullptr;       // must outlive the server
  // Must outlive the server. Null: the API serves token-id completions only (see
  // OpenAiServiceOptions::token_ids_only) with `vocab_size` ids.
  const Tokenizer* tokenizer = nullptr;
  int32_t vocab_size = 0;
  std::function<std::string()> metrics_text;  // the engine's registry, appended to /metrics
};
// Loads the chat template, picks the output format and starts the server. A model without a
// chat template still serves /v1/completions (chat answers 400, logged at start); one without a
// tokenizer serves token-id completions only (logged at start).
absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpApi(const HttpApiFlags& flags,
                                                         const HttpApiContext& context);

}  // namespace tessera::api
