#include "coordinator/api/http_server.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <openssl/crypto.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/base/status.h"
#include "coordinator/text/chat_template.h"
#include "kernels/base/logging.h"

namespace tessera::api {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

class SessionBase;

// State shared by the server and its sessions; sessions hold it so the io_context outlives every
// socket, whichever side is destroyed last.
struct Core {
  Core(Engine& engine, const Tokenizer& tokenizer, HttpServerOptions opts)
      : options(std::move(opts)), service(engine, tokenizer, options.service) {}

  HttpServerOptions options;
  OpenAiService service;
  net::io_context ioc;
  std::optional<ssl::context> tls;
  std::atomic<int64_t> busy_sessions{0};  // sessions with a request being answered
  std::atomic<bool> draining{false};

  std::mutex mu;
  bool stopped = false;  // guarded by mu: Post() drops work once set
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;  // guarded by mu
};

class SessionBase : public ResponseSink, public std::enable_shared_from_this<SessionBase> {
 public:
  virtual void Start() = 0;
  // Closes the connection from another thread (shutdown).
  virtual void CloseSoon() = 0;
};

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

template <bool kTls>
class Session final : public SessionBase {
 public:
  using Stream = std::conditional_t<kTls, ssl::stream<tcp::socket>, tcp::socket>;

  Session(std::shared_ptr<Core> core, tcp::socket socket)
      : core_(std::move(core)), stream_(MakeStream(std::move(socket))),
        timer_(stream_.get_executor()) {}

  ~Session() override {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->sessions.erase(this);
  }

  void Start() override {
    net::dispatch(stream_.get_executor(), [self = Self()] { self->Begin(); });
  }

  void CloseSoon() override {
    net::post(stream_.get_executor(), [self = Self()] { self->Close(); });
  }

  // ResponseSink.
  void Post(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (core_->stopped) return;
    net::post(stream_.get_executor(), [self = Self(), fn = std::move(fn)] { fn(); });
  }

  void Respond(int status, absl::string_view content_type, std::string body) override {
    core_->service.CountResponse(status);
    if (closed_) return;
    http::response<http::string_body> res{static_cast<http::status>(status), version_};
    res.set(http::field::server, "tessera");
    if (!content_type.empty()) {
      res.set(http::field::content_type, beast::string_view(content_type.data(),
                                                            content_type.size()));
    }
    if (status == 401) res.set(http::field::www_authenticate, "Bearer");
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream os;
    os << res;
    on_close_.clear();
    QueueWrite(os.str());
    FinishResponse();
  }

  void StartStream(int status, absl::string_view content_type) override {
    core_->service.CountResponse(status);
    if (closed_) return;
    http::response<http::empty_body> res{static_cast<http::status>(status), version_};
    res.set(http::field::server, "tessera");
    res.set(http::field::content_type,
            beast::string_view(content_type.data(), content_type.size()));
    res.set(http::field::cache_control, "no-cache");
    // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
    chunked_ = version_ >= 11;
    if (chunked_) {
      res.chunked(true);
    } else {
      keep_alive_ = false;
    }
    res.keep_alive(keep_alive_);
    std::ostringstream os;
    os << res.base();
    QueueWrite(os.str());
  }

  void Write(std::string data) override {
    if (closed_ || data.empty()) return;
    if (!chunked_) return QueueWrite(std::move(data));
    char size[24];
    std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    std::string framed;
    framed.reserve(data.size() + 32);
    framed += size;
    framed += data;
    framed += "\r\n";
    QueueWrite(std::move(framed));
  }

  void EndStream() override {
    if (closed_) return;
    if (chunked_) QueueWrite("0\r\n\r\n");
    on_close_.clear();
    FinishResponse();
  }

  void OnClose(std::function<void()> fn) override {
    if (closed_) {
      fn();
      return;
    }
    on_close_.push_back(std::move(fn));
  }

 private:
  std::shared_ptr<Session> Self() {
    return std::static_pointer_cast<Session>(shared_from_this());
  }

  Stream MakeStream(tcp::socket socket) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *core_->tls);
    } else {
      return socket;
    }
  }

  tcp::socket& Socket() {
    if constexpr (kTls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  void Begin() {
    if constexpr (kTls) {
      ArmIdle();
      stream_.async_handshake(ssl::stream_base::server,
                              [self = Self()](const beast::error_code& ec) {
                                if (ec) {
                                  VLOG(1) << "http: TLS handshake failed: " << ec.message();
                                  return self->Close();
                                }
                                self->DoRead();
                              });
    } else {
      DoRead();
    }
  }

  void ArmIdle() {
    const uint64_t gen = ++idle_gen_;
    timer_.expires_after(absl::ToChronoNanoseconds(core_->options.idle_timeout));
    timer_.async_wait([self = Self(), gen](const beast::error_code& ec) {
      if (ec || gen != self->idle_gen_ || self->busy_ || self->closed_) return;
      VLOG(1) << "http: closing idle connection";
      self->Close();
    });
  }

  void CancelIdle() {
    ++idle_gen_;
    timer_.cancel();
  }

  void DoRead() {
    if (closed_) return;
    reading_ = true;
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(core_->options.max_body_bytes));
    parser_->header_limit(static_cast<uint32_t>(core_->options.max_header_bytes));
    if (!busy_) ArmIdle();
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = Self()](const beast::error_code& ec, size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(const beast::error_code& ec) {
    if (closed_) return;
    if (ec) return OnReadError(ec);
    auto& req = parser_->get();
    auto expect = req[http::field::expect];
    if (!busy_ && absl::EqualsIgnoreCase(absl::string_view(expect.data(), expect.size()),
                                         "100-continue")) {
      QueueWrite("HTTP/1.1 100 Continue\r\n\r\n");
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = Self()](const beast::error_code& ec2, size_t) { self->OnRead(ec2); });
  }

  void OnRead(const beast::error_code& ec) {
    if (closed_) return;
    reading_ = false;
    if (ec) return OnReadError(ec);
    if (!busy_) CancelIdle();
    http::request<http::string_body> req = parser_->release();
    parser_.reset();
    if (busy_) {
      pending_ = std::move(req);  // pipelined: answered after the current response
      return;
    }
    HandleRequest(std::move(req));
  }

  void OnReadError(const beast::error_code& ec) {
    reading_ = false;
    int status = 0;
    std::string message;
    if (ec == http::error::body_limit) {
      status = 413;
      message = absl::StrCat("the request body is larger than ", core_->options.max_body_bytes,
                             " bytes");
    } else if (ec == http::error::header_limit) {
      status = 431;
      message = absl::StrCat("the request header is larger than ",
                             core_->options.max_header_bytes, " bytes");
    } else if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message) {
      status = 400;
      message = absl::StrCat("malformed HTTP request: ", ec.message());
    }
    if (status == 0 || busy_) {
      // The client went away (or broke the protocol mid-response): abort its work.
      return Close();
    }
    busy_ = true;
    core_->busy_sessions.fetch_add(1);
    keep_alive_ = false;
    ApiError err;
    err.status = status;
    err.message = std::move(message);
    RespondError(*this, err);
  }

  void HandleRequest(http::request<http::string_body> req) {
    busy_ = true;
    core_->busy_sessions.fetch_add(1);
    keep_alive_ = req.keep_alive() && !core_->draining.load();
    version_ = req.version();
    chunked_ = false;
    absl::string_view target(req.target().data(), req.target().size());
    absl::string_view path = target.substr(0, target.find('?'));
    absl::string_view method(req.method_string().data(), req.method_string().size());
    VLOG(1) << "http: " << method << " " << path;
    if (!core_->options.api_keys.empty() && absl::StartsWith(path, "/v1")) {
      auto auth = req[http::field::authorization];
      absl::string_view header(auth.data(), auth.size());
      bool ok = false;
      if (absl::StartsWithIgnoreCase(header, "bearer ")) {
        absl::string_view key = absl::StripAsciiWhitespace(header.substr(7));
        for (const std::string& k : core_->options.api_keys) ok |= ConstantTimeEquals(key, k);
      }
      if (!ok) {
        ApiError err;
        err.status = 401;
        err.message = header.empty() ? "missing API key: send 'Authorization: Bearer <key>'"
                                     : "incorrect API key provided";
        err.code = "invalid_api_key";
        RespondError(*this, err);
        ReadAhead();
        return;
      }
    }
    core_->service.Handle(method, path, req.body(), shared_from_this());
    ReadAhead();
  }

  // While a response is in progress, keep one read outstanding: it notices a client that
  // disconnects (the engine requests are aborted) and picks up a pipelined request.
  void ReadAhead() {
    if (!closed_ && !reading_ && keep_alive_ && !pending_ && busy_) DoRead();
  }

  void QueueWrite(std::string data) {
    out_pending_ += data;
    if (!writing_) StartWrite();
  }

  void StartWrite() {
    writing_ = true;
    out_inflight_.swap(out_pending_);
    out_pending_.clear();
    net::async_write(stream_, net::buffer(out_inflight_),
                     [self = Self()](const beast::error_code& ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(const beast::error_code& ec) {
    writing_ = false;
    if (closed_) return;
    if (ec) {
      VLOG(1) << "http: write failed: " << ec.message();
      return Close();
    }
    if (!out_pending_.empty()) return StartWrite();
    if (response_done_) AfterResponse();
  }

  void FinishResponse() {
    response_done_ = true;
    if (!writing_ && out_pending_.empty()) AfterResponse();
  }

  void AfterResponse() {
    response_done_ = false;
    if (busy_) {
      busy_ = false;
      core_->busy_sessions.fetch_sub(1);
    }
    if (!keep_alive_) {
      beast::error_code ec;
      Socket().shutdown(tcp::socket::shutdown_send, ec);
      return Close();
    }
    if (pending_) {
      http::request<http::string_body> req = std::move(*pending_);
      pending_.reset();
      HandleRequest(std::move(req));
      return;
    }
    if (!reading_) {
      DoRead();
    } else {
      ArmIdle();
    }
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    if (busy_) {
      busy_ = false;
      core_->busy_sessions.fetch_sub(1);
    }
    CancelIdle();
    std::vector<std::function<void()>> callbacks;
    callbacks.swap(on_close_);
    for (auto& fn : callbacks) fn();
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_both, ec);
    Socket().close(ec);
  }

  std::shared_ptr<Core> core_;  // first member: destroyed last (owns the io_context)
  Stream stream_;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::request<http::string_body>> pending_;
  std::string out_pending_;
  std::string out_inflight_;
  std::vector<std::function<void()>> on_close_;
  uint64_t idle_gen_ = 0;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool chunked_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool busy_ = false;           // a request is being answered
  bool response_done_ = false;  // the answer is complete once the writes drain
  bool closed_ = false;
};

}  // namespace

class HttpServer::Impl {
 public:
  Impl(Engine& engine, const Tokenizer& tokenizer, HttpServerOptions options)
      : core_(std::make_shared<Core>(engine, tokenizer, std::move(options))),
        acceptor_(net::make_strand(core_->ioc)),
        retry_timer_(acceptor_.get_executor()) {}

  ~Impl() { Shutdown(absl::ZeroDuration()); }

  absl::Status Start() {
    const HttpServerOptions& o = core_->options;
    if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
      return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
    }
    if (!o.tls_cert_file.empty()) {
      core_->tls.emplace(ssl::context::tls_server);
      ssl::context& ctx = *core_->tls;
      ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                      ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
      beast::error_code ec;
      ctx.use_certificate_chain_file(o.tls_cert_file, ec);
      if (ec) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot load the TLS certificate chain ", o.tls_cert_file, ": ", ec.message()));
      }
      ctx.use_private_key_file(o.tls_key_file, ssl::context::pem, ec);
      if (ec) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot load the TLS private key ", o.tls_key_file, ": ", ec.message()));
      }
    }
    beast::error_code ec;
    net::ip::address address = net::ip::make_address(o.host, ec);
    if (ec) {
      tcp::resolver resolver(core_->ioc);
      auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
      if (ec || results.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot resolve the HTTP host '", o.host, "': ", ec.message()));
      }
      address = results.begin()->endpoint().address();
    }
    tcp::endpoint endpoint(address, static_cast<unsigned short>(o.port));
    std::string where = absl::StrCat(o.host, ":", o.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(o.backlog, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen for HTTP on ", where, ": ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    work_.emplace(net::make_work_guard(core_->ioc));
    DoAccept();
    const int threads = std::max(1, o.num_io_threads);
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] { core_->ioc.run(); });
    }
    started_ = true;
    LOG(INFO) << "OpenAI-compatible HTTP API on " << (core_->tls ? "https" : "http") << "://"
              << o.host << ":" << port_ << " (" << threads << " io threads)";
    return absl::OkStatus();
  }

  void Shutdown(absl::Duration drain_timeout) {
    if (!started_ || shut_) return;
    shut_ = true;
    core_->draining = true;
    core_->service.set_draining(true);
    net::post(acceptor_.get_executor(), [this] {
      beast::error_code ec;
      acceptor_.close(ec);
      retry_timer_.cancel();
    });
    // Let requests in progress finish.
    const absl::Time deadline = absl::Now() + drain_timeout;
    while (absl::Now() < deadline && (core_->busy_sessions.load() > 0 ||
                                      core_->service.live_engine_requests() > 0)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    // Close every connection: what is still running is aborted through the close callbacks.
    std::vector<std::shared_ptr<SessionBase>> sessions;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      for (auto& [ptr, weak] : core_->sessions) {
        if (auto s = weak.lock()) sessions.push_back(std::move(s));
      }
    }
    for (auto& s : sessions) s->CloseSoon();
    sessions.clear();
    const absl::Time abort_deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < abort_deadline && core_->service.live_engine_requests() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (core_->service.live_engine_requests() > 0) {
      LOG(WARNING) << "http: " << core_->service.live_engine_requests()
                   << " engine requests did not finish after Abort()";
    }
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      core_->stopped = true;
    }
    work_.reset();
    // Threads return once the last handlers ran; a straggler is stopped.
    const absl::Time join_deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < join_deadline && !core_->ioc.stopped()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    core_->ioc.stop();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  int port() const { return port_; }
  bool tls() const { return core_->tls.has_value(); }
  OpenAiService& service() { return core_->service; }

 private:
  void DoAccept() {
    acceptor_.async_accept(net::make_strand(core_->ioc),
                           [this](const beast::error_code& ec, tcp::socket socket) {
                             OnAccept(ec, std::move(socket));
                           });
  }

  void OnAccept(const beast::error_code& ec, tcp::socket socket) {
    if (!acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors (EMFILE) and the like: back off instead of spinning.
      LOG(WARNING) << "http: accept failed: " << ec.message();
      retry_timer_.expires_after(std::chrono::milliseconds(50));
      retry_timer_.async_wait([this](const beast::error_code& wait_ec) {
        if (!wait_ec && acceptor_.is_open()) DoAccept();
      });
      return;
    }
    beast::error_code opt_ec;
    socket.set_option(tcp::no_delay(true), opt_ec);
    std::shared_ptr<SessionBase> session;
    if (core_->tls) {
      session = std::make_shared<Session<true>>(core_, std::move(socket));
    } else {
      session = std::make_shared<Session<false>>(core_, std::move(socket));
    }
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      core_->sessions[session.get()] = session;
    }
    session->Start();
    DoAccept();
  }

  std::shared_ptr<Core> core_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  bool started_ = false;
  bool shut_ = false;
};

HttpServer::HttpServer(Engine& engine, const Tokenizer& tokenizer, HttpServerOptions options)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(options))) {}

HttpServer::~HttpServer() = default;

absl::Status HttpServer::Start() { return impl_->Start(); }
int HttpServer::port() const { return impl_->port(); }
bool HttpServer::tls() const { return impl_->tls(); }
void HttpServer::Shutdown(absl::Duration drain_timeout) { impl_->Shutdown(drain_timeout); }
OpenAiService& HttpServer::service() { return impl_->service(); }

void AddHttpApiFlags(FlagParser* parser, HttpApiFlags* flags) {
  parser->AddString("api-key", &flags->api_keys,
                    "API keys required on /v1/* as 'Authorization: Bearer KEY' (comma-separated; "
                    "default $TESSERA_API_KEY; empty: no authentication)");
  parser->AddString("tls-cert", &flags->tls_cert, "PEM certificate chain: serve HTTPS");
  parser->AddString("tls-key", &flags->tls_key, "PEM private key of --tls-cert");
  parser->AddInt("http-threads", &flags->io_threads, "io threads of the HTTP API");
  parser->AddString("output-format", &flags->output_format,
                    "reasoning/tool-call format of chat output: auto, qwen3 (hermes), "
                    "deepseek_v3, deepseek_v31, kimi_k2, glm45, gpt_oss, mistral, plain");
  parser->AddString("chat-template", &flags->chat_template,
                    "Jinja chat template file overriding the model's");
  parser->AddInt("max-request-bytes", &flags->max_body_bytes, "largest HTTP request body");
}

namespace {

// The stand-in for a model without a tokenizer: ids in [0, vocab_size) have no text. Text
// prompts never reach it (token_ids_only rejects them first).
class NoTextTokenizer final : public Tokenizer {
 public:
  explicit NoTextTokenizer(int32_t vocab_size) : vocab_size_(vocab_size) {}
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> TokenToId(absl::string_view) const override { return std::nullopt; }
  std::optional<std::string> IdToToken(int32_t) const override { return std::nullopt; }
  bool IsSpecial(int32_t) const override { return false; }
  absl::string_view format() const override { return "none"; }
  bool AppendTokenBytes(int32_t id, bool, DecodeState*, std::string*) const override {
    return id >= 0 && id < vocab_size_;
  }

 private:
  std::vector<int32_t> EncodeImpl(absl::string_view, bool) const override { return {}; }
  const int32_t vocab_size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpApi(const HttpApiFlags& flags,
                                                         const HttpApiContext& context) {
  if (context.engine == nullptr) return absl::InvalidArgumentError("StartHttpApi: no engine");
  std::unique_ptr<Tokenizer> stand_in;
  if (context.tokenizer == nullptr) {
    if (context.vocab_size <= 0) {
      return absl::InvalidArgumentError("StartHttpApi: no tokenizer and no vocab_size");
    }
    stand_in = std::make_unique<NoTextTokenizer>(context.vocab_size);
  }
  HttpServerOptions o;
  o.host = context.host;
  o.port = context.port;
  o.num_io_threads = flags.io_threads;
  o.tls_cert_file = flags.tls_cert;
  o.tls_key_file = flags.tls_key;
  o.max_body_bytes = flags.max_body_bytes;
  std::string keys = flags.api_keys;
  if (keys.empty()) {
    if (const char* env = std::getenv("TESSERA_API_KEY")) keys = env;
  }
  for (absl::string_view k : absl::StrSplit(keys, ',', absl::SkipWhitespace())) {
    o.api_keys.emplace_back(absl::StripAsciiWhitespace(k));
  }
  o.service.served_model_names = {context.served_model_name};
  o.service.metrics_text = context.metrics_text;
  if (stand_in != nullptr) {
    o.service.token_ids_only = true;
    o.service.no_tokenizer_reason =
        absl::StrCat("none in ", context.model_dir, "; add tokenizer.json to serve text");
    LOG(WARNING) << "http: no tokenizer in " << context.model_dir
                 << ": /v1/completions takes token-id prompts only and answers without text; "
                    "chat answers 400";
    auto server =
        std::make_unique<HttpServer>(*context.engine, *stand_in, std::move(o));
    server->Own(std::move(stand_in));
    RETURN_IF_ERROR(server->Start());
    return server;
  }

  // Chat template: --chat-template, else the model's (special tokens from the model either way).
  auto loaded = std::make_shared<LoadedChatTemplate>();
  absl::StatusOr<LoadedChatTemplate> from_model = LoadChatTemplate(context.model_dir);
  if (from_model.ok()) *loaded = *std::move(from_model);
  if (!flags.chat_template.empty()) {
    std::ifstream in(flags.chat_template);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("--chat-template ", flags.chat_template, ": cannot read the file"));
    }
    std::stringstream source;
    source << in.rdbuf();
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(source.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--chat-template ", flags.chat_template, ": ", parsed.status().message()));
    }
    loaded->templates.clear();
    loaded->templates.emplace_back("default", *std::move(parsed));
  }
  std::string template_source;
  if (const ChatTemplate* t = loaded->Select(false)) {
    template_source = t->source();
    o.service.render_chat = MakeChatRenderer(loaded);
  } else {
    LOG(WARNING) << "http: " << context.model_dir << " has no chat template"
                 << (from_model.ok() ? "" : absl::StrCat(" (", from_model.status().message(), ")"))
                 << "; /v1/chat/completions answers 400 (pass --chat-template FILE)";
  }
  if (flags.output_format == "auto") {
    absl::StatusOr<OutputFormat> format = OutputFormatFor(context.model_type, template_source);
    o.service.output_format = format.ok() ? *format : OutputFormat::kPlain;
  } else {
    ASSIGN_OR_RETURN(o.service.output_format, ParseOutputFormat(flags.output_format));
  }
  LOG(INFO) << "http: chat output format " << OutputFormatName(o.service.output_format);
  auto server = std::make_unique<HttpServer>(*context.engine, *context.tokenizer, std::move(o));
  RETURN_IF_ERROR(server->Start());
  return server;
}

}  // namespace tessera::api
