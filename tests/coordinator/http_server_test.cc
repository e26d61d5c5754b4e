// HttpServer over raw sockets against a scripted Engine: framing, keep-alive, errors, auth,
// disconnects, 1,000 concurrent streams and TLS.
#include "coordinator/api/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <sstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace tessera::api {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

// A deterministic Engine: every request streams `pieces` (one output per piece, the piece's
// tokens from the real tokenizer) and finishes with `finish`. With hold(), requests wait until
// Release(). Outputs are delivered on the engine's own thread, as the contract says.
class ScriptedEngine : public Engine {
 public:
  explicit ScriptedEngine(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {
    thread_ = std::thread([this] { Run(); });
  }
  ~ScriptedEngine() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  absl::Status Submit(GenerateRequest request, OutputCallback on_output) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (request.prompt_ids.empty()) return absl::InvalidArgumentError("prompt_ids is empty");
    submitted_.push_back(request);
    live_[request.request_id] = Live{request, std::move(on_output)};
    if (!hold_) tasks_.push_back({request.request_id, false});
    cv_.notify_all();
    return absl::OkStatus();
  }

  void Abort(absl::string_view request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_.emplace_back(request_id);
    tasks_.push_back({std::string(request_id), true});
    cv_.notify_all();
  }

  ModelInfo model_info() const override {
    std::lock_guard<std::mutex> lock(mu_);
    ModelInfo info;
    info.name = "tiny";
    info.max_model_len = max_model_len_;
    info.vocab_size = tokenizer_.vocab_size();
    info.ready = ready_;
    return info;
  }

  void set_pieces(std::vector<std::string> pieces) {
    std::lock_guard<std::mutex> lock(mu_);
    pieces_ = std::move(pieces);
  }
  void set_ready(bool ready) {
    std::lock_guard<std::mutex> lock(mu_);
    ready_ = ready;
  }
  void set_finish(FinishReason finish, std::string stop_reason = "", int32_t stop_token_id = -1) {
    std::lock_guard<std::mutex> lock(mu_);
    finish_ = finish;
    stop_reason_ = std::move(stop_reason);
    stop_token_id_ = stop_token_id;
  }
  void hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  // Runs every held request.
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = false;
    for (auto& [id, live] : live_) tasks_.push_back({id, false});
    cv_.notify_all();
  }
  std::vector<GenerateRequest> submitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }
  std::vector<std::string> aborted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return aborted_;
  }
  size_t live() const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.size();
  }
  // Waits (bounded) until `pred` holds.
  bool WaitFor(const std::function<bool()>& pred, int seconds = 20) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pred();
  }

 private:
  struct Live {
    GenerateRequest request;
    OutputCallback callback;
  };
  struct Task {
    std::string id;
    bool abort;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
      if (stop_) return;
      Task task = tasks_.front();
      tasks_.pop_front();
      auto it = live_.find(task.id);
      if (it == live_.end()) continue;
      Live live = std::move(it->second);
      live_.erase(it);
      std::vector<GenerateOutput> outputs;
      if (task.abort) {
        GenerateOutput out;
        out.request_id = task.id;
        out.finished = true;
        out.finish_reason = FinishReason::kAbort;
        outputs.push_back(out);
      } else {
        outputs = Script(live.request);
      }
      lock.unlock();
      for (GenerateOutput& out : outputs) live.callback(std::move(out));
      lock.lock();
    }
  }

  std::vector<GenerateOutput> Script(const GenerateRequest& req) {
    std::vector<GenerateOutput> outputs;
    int64_t completion = 0;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      GenerateOutput out;
      out.request_id = req.request_id;
      out.text = pieces_[i];
      out.token_ids = tokenizer_.Encode(pieces_[i], false);
      if (req.sampling.logprobs > 0) {
        for (int32_t id : out.token_ids) {
          TokenLogprob lp;
          lp.token_id = id;
          lp.logprob = -0.25f;
          for (int k = 0; k < req.sampling.logprobs; ++k) lp.top.push_back({id + k, -0.25f - k});
          out.logprobs.push_back(lp);
        }
      }
      completion += static_cast<int64_t>(out.token_ids.size());
      out.usage.prompt_tokens = static_cast<int64_t>(req.prompt_ids.size());
      out.usage.completion_tokens = completion;
      if (i + 1 == pieces_.size()) {
        out.finished = true;
        out.finish_reason = finish_;
        out.stop_reason = stop_reason_;
        out.stop_token_id = stop_token_id_;
        out.usage.cached_prompt_tokens = 2;
      }
      outputs.push_back(std::move(out));
    }
    return outputs;
  }

  const Tokenizer& tokenizer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  std::map<std::string, Live> live_;
  std::vector<GenerateRequest> submitted_;
  std::vector<std::string> aborted_;
  std::vector<std::string> pieces_ = {"Hello", ",", " world"};
  FinishReason finish_ = FinishReason::kStop;
  std::string stop_reason_;
  int32_t stop_token_id_ = -1;
  int64_t max_model_len_ = 64;
  bool ready_ = true;
  bool hold_ = false;
  bool stop_ = false;
  std::thread thread_;
};

// --- A minimal blocking HTTP/1.1 client over a raw socket. ---

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  bool chunked = false;
};

class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{20, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { Close(); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool connected() const { return connected_; }

  void Send(absl::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(n);
    }
  }
  void Post(absl::string_view path, absl::string_view body, absl::string_view extra = "") {
    Send(absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n",
                      extra, "Content-Length: ", body.size(), "\r\n\r\n", body));
  }
  void Get(absl::string_view path, absl::string_view extra = "") {
    Send(absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: test\r\n", extra, "\r\n"));
  }

  // Reads until `needle` is in the raw buffer (false on EOF / timeout).
  bool ReadUntil(absl::string_view needle) {
    while (!absl::StrContains(buf_, needle)) {
      if (!Fill()) return false;
    }
    return true;
  }
  // True when the server closed the connection (EOF) within the receive timeout.
  bool SeesEof() {
    char c;
    ssize_t n = recv(fd_, &c, 1, 0);
    return n == 0;
  }

  // Reads one complete response.
  Response Read() {
    Response r;
    if (!ReadUntil("\r\n\r\n")) return r;
    size_t end = buf_.find("\r\n\r\n");
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    std::vector<std::string> lines = absl::StrSplit(head, "\r\n");
    std::vector<std::string> status_line = absl::StrSplit(lines[0], ' ');
    if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &r.status)) return r;
    for (size_t i = 1; i < lines.size(); ++i) {
      size_t colon = lines[i].find(':');
      std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
      r.headers[name] = std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    }
    if (r.status / 100 == 1) return r;  // interim response: no body
    if (r.headers["transfer-encoding"] == "chunked") {
      r.chunked = true;
      while (true) {
        if (!ReadUntil("\r\n")) return r;
        size_t eol = buf_.find("\r\n");
        size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
        while (buf_.size() < eol + 2 + size + 2) {
          if (!Fill()) return r;
        }
        r.body += buf_.substr(eol + 2, size);
        buf_.erase(0, eol + 2 + size + 2);
        if (size == 0) break;
      }
    } else if (r.headers.count("content-length")) {
      size_t len = std::stoul(r.headers["content-length"]);
      while (buf_.size() < len) {
        if (!Fill()) return r;
      }
      r.body = buf_.substr(0, len);
      buf_.erase(0, len);
    } else {
      while (Fill()) {
      }
      r.body = buf_;
      buf_.clear();
    }
    return r;
  }

 private:
  bool Fill() {
    char tmp[65536];
    ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, n);
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

json ErrorOf(const Response& r) {
  json j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"] : json();
}

// The events of an SSE body ("data: X\n\n" each); empty when the framing is off.
std::vector<std::string> SseEvents(const std::string& body) {
  std::vector<std::string> events;
  size_t pos = 0;
  while (pos < body.size()) {
    if (body.compare(pos, 6, "data: ") != 0) return {};
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) return {};
    events.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  return events;
}

const Tokenizer& Qwen3() {
  static const Tokenizer* tokenizer = [] {
    auto t = Tokenizer::FromFile(testing::TestDataDir() + "/tokenizers/qwen3/tokenizer.json");
    CHECK(t.ok()) << t.status();
    return t->release();
  }();
  return *tokenizer;
}

// A stand-in chat template: ChatML, the shape of Qwen's template.
absl::StatusOr<std::string> RenderChatMl(const nlohmann::ordered_json& messages,
                                         const nlohmann::ordered_json& tools,
                                         bool add_generation_prompt, bool,
                                         const nlohmann::ordered_json&) {
  std::string out;
  if (!tools.is_null()) out += "<|im_start|>system\ntools: " + tools.dump() + "<|im_end|>\n";
  for (const auto& m : messages) {
    if (m["role"] == "bad") return absl::InvalidArgumentError("roles must alternate");
    out += absl::StrCat("<|im_start|>", m["role"].get<std::string>(), "\n",
                        m["content"].is_string() ? m["content"].get<std::string>() : "",
                        "<|im_end|>\n");
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() : engine_(Qwen3()) {}

  void StartServer(HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    options.service.served_model_names = {"tiny", "tiny-alias"};
    options.service.render_chat = RenderChatMl;
    server_ = std::make_unique<HttpServer>(engine_, Qwen3(), std::move(options));
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  Response PostOnce(absl::string_view path, absl::string_view body,
                    absl::string_view extra = "") {
    Client c(server_->port());
    c.Post(path, body, extra);
    return c.Read();
  }

  ScriptedEngine engine_;
  std::unique_ptr<HttpServer> server_;
};

constexpr char kChat[] = R"({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]})";

TEST_F(HttpServerTest, ChatCompletionReturnsMessageAndUsage) {
  StartServer();
  Response r = PostOnce("/v1/chat/completions", kChat);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  json j = json::parse(r.body);
  EXPECT_TRUE(absl::StartsWith(j["id"].get<std::string>(), "chatcmpl-"));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello, world");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  const int64_t prompt = static_cast<int64_t>(engine_.submitted()[0].prompt_ids.size());
  EXPECT_EQ(prompt, static_cast<int64_t>(
                        Qwen3().Encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
                            .size()));
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt);
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], prompt + 3);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  // max_tokens unset: the rest of the context.
  EXPECT_EQ(engine_.submitted()[0].sampling.max_tokens, 64 - prompt);
}

TEST_F(HttpServerTest, ChatStreamSseFramingIsByteExact) {
  StartServer();
  Client c(server_->port());
  c.Post("/v1/chat/completions",
         R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})");
  Response r = c.Read();
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(r.chunked);
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.headers["cache-control"], "no-cache");
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 5u) << r.body;
  json first = json::parse(events[0]);
  std::string head = absl::StrCat(R"({"id":")", first["id"].get<std::string>(),
                                  R"(","object":"chat.completion.chunk","created":)",
                                  first["created"].get<int64_t>(), R"(,"model":"tiny",)");
  std::string expected =
      absl::StrCat("data: ", head,
                   R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
                   R"("logprobs":null,"finish_reason":null}]})",
                   "\n\n", "data: ", head,
                   R"("choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,)"
                   R"("finish_reason":null}]})",
                   "\n\n", "data: ", head,
                   R"("choices":[{"index":0,"delta":{"content":","},"logprobs":null,)"
                   R"("finish_reason":null}]})",
                   "\n\n", "data: ", head,
                   R"("choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,)"
                   R"("finish_reason":"stop","stop_reason":null}]})",
                   "\n\n", "data: [DONE]\n\n");
  EXPECT_EQ(r.body, expected);
}

TEST_F(HttpServerTest, StopReasonIsTheStopStringOrTheStopTokenId) {
  StartServer();
  engine_.set_finish(FinishReason::kStop, "", 151645);
  Response by_id = PostOnce("/v1/completions", R"({"prompt": "Say hi", "max_tokens": 5})");
  ASSERT_EQ(by_id.status, 200) << by_id.body;
  json c = json::parse(by_id.body)["choices"][0];
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_EQ(c["stop_reason"], 151645);
  engine_.set_finish(FinishReason::kStop, "STOP");
  Response by_text = PostOnce("/v1/chat/completions",
                              R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_EQ(by_text.status, 200) << by_text.body;
  EXPECT_EQ(json::parse(by_text.body)["choices"][0]["stop_reason"], "STOP");
}

TEST_F(HttpServerTest, CompletionStreamEndsWithUsageChunkThenDone) {
  StartServer();
  Response r = PostOnce("/v1/completions",
                        R"({"prompt": "Say hi", "max_tokens": 5, "stream": true,)"
                        R"( "stream_options": {"include_usage": true}})");
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 5u) << r.body;
  for (int i = 0; i < 3; ++i) {
    json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_TRUE(chunk["usage"].is_null());
  }
  EXPECT_EQ(json::parse(events[0])["choices"][0]["text"], "Hello");
  json usage_chunk = json::parse(events[3]);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 3);
  EXPECT_EQ(usage_chunk["usage"]["prompt_tokens"], Qwen3().Encode("Say hi").size());
  EXPECT_EQ(events[4], "[DONE]");
  EXPECT_EQ(engine_.submitted()[0].sampling.max_tokens, 5);
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  Client c(server_->port());
  for (int i = 0; i < 3; ++i) {
    c.Post("/v1/completions",
           absl::StrCat(R"({"prompt": "x", "stream": )", i == 1 ? "true" : "false", "}"));
    Response r = c.Read();
    ASSERT_EQ(r.status, 200) << i;
    EXPECT_NE(r.headers["connection"], "close");
  }
  c.Get("/v1/models");
  EXPECT_EQ(c.Read().status, 200);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  Client c(server_->port());
  std::string body = R"({"prompt": "x", "stream": true})";
  std::string one = absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: ",
                                 body.size(), "\r\n\r\n", body);
  c.Send(absl::StrCat(one, "GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n"));
  Response first = c.Read();
  Response second = c.Read();
  EXPECT_EQ(first.status, 200);
  EXPECT_THAT(first.body, HasSubstr("[DONE]"));
  EXPECT_EQ(second.status, 200);
  EXPECT_THAT(second.body, HasSubstr(R"("object":"list")"));
}

TEST_F(HttpServerTest, IdleConnectionIsClosedAfterTheTimeout) {
  HttpServerOptions options;
  options.idle_timeout = absl::Milliseconds(200);
  StartServer(options);
  Client c(server_->port());
  c.Get("/health");
  EXPECT_EQ(c.Read().status, 200);
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.SeesEof());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(HttpServerTest, Expect100ContinueGetsAnInterimResponse) {
  StartServer();
  Client c(server_->port());
  std::string body = R"({"prompt": "x"})";
  c.Send(absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                      "Content-Length: ", body.size(), "\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 100);
  c.Send(body);
  Response r = c.Read();
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(HttpServerTest, MalformedJsonIs400) {
  StartServer();
  Response r = PostOnce("/v1/chat/completions", "{\"messages\": [");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r)["type"], "invalid_request_error");
  EXPECT_THAT(ErrorOf(r)["message"].get<std::string>(), HasSubstr("not valid JSON"));
}

TEST_F(HttpServerTest, WrongTypeNamesTheParameter) {
  StartServer();
  Response r = PostOnce("/v1/chat/completions",
                        R"({"messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r)["param"], "temperature");
  EXPECT_THAT(ErrorOf(r)["message"].get<std::string>(), HasSubstr("'temperature' must be a number"));
}

TEST_F(HttpServerTest, InvalidUtf8Is400) {
  StartServer();
  Response r = PostOnce("/v1/completions", "{\"prompt\": \"\xff\xfe\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(ErrorOf(r)["message"].get<std::string>(), HasSubstr("UTF-8"));
}

TEST_F(HttpServerTest, MaxTokensBeyondContextSaysBothNumbers) {
  StartServer();
  Response r = PostOnce("/v1/completions", R"({"prompt": "Say hi", "max_tokens": 100})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r)["param"], "max_tokens");
  std::string msg = ErrorOf(r)["message"];
  EXPECT_THAT(msg, HasSubstr("maximum context length is 64 tokens"));
  EXPECT_THAT(msg, HasSubstr(absl::StrCat("has ", Qwen3().Encode("Say hi").size(), " input")));
}

TEST_F(HttpServerTest, PromptLongerThanContextIs400) {
  StartServer();
  std::string prompt;
  for (int i = 0; i < 80; ++i) prompt += " hello";
  Response r = PostOnce("/v1/completions", json{{"prompt", prompt}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(ErrorOf(r)["message"].get<std::string>(),
              HasSubstr("maximum context length is 64 tokens. However, your request has 80"));
  EXPECT_TRUE(engine_.submitted().empty());
}

TEST_F(HttpServerTest, TooManyStopSequencesIs400) {
  StartServer();
  json body = {{"prompt", "x"}, {"stop", json::array()}};
  for (int i = 0; i <= kMaxStopSequences; ++i) body["stop"].push_back(absl::StrCat("s", i));
  Response r = PostOnce("/v1/completions", body.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r)["param"], "stop");
}

TEST_F(HttpServerTest, ZeroMaxTokensIs400) {
  StartServer();
  Response r = PostOnce("/v1/completions", R"({"prompt": "x", "max_tokens": 0})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorOf(r)["param"], "max_tokens");
}

TEST_F(HttpServerTest, UnknownModelIs404) {
  StartServer();
  Response r = PostOnce("/v1/completions", R"({"model": "gpt-9", "prompt": "x"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorOf(r)["code"], "model_not_found");
  EXPECT_EQ(PostOnce("/v1/completions", R"({"model": "tiny-alias", "prompt": "x"})").status, 200);
}

TEST_F(HttpServerTest, UnknownPathIs404AndWrongMethodIs405) {
  StartServer();
  Client c(server_->port());
  c.Get("/v1/nothing");
  Response r = c.Read();
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(ErrorOf(r).is_object());
  c.Get("/v1/chat/completions");
  EXPECT_EQ(c.Read().status, 405);
}

TEST_F(HttpServerTest, BodyOverTheLimitIs413) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  StartServer(options);
  Response r = PostOnce("/v1/completions", std::string(2000, ' '));
  EXPECT_EQ(r.status, 413);
}

TEST_F(HttpServerTest, NotReadyIs503) {
  engine_.set_ready(false);
  StartServer();
  Client c(server_->port());
  c.Get("/health");
  EXPECT_EQ(c.Read().status, 503);
  c.Post("/v1/completions", R"({"prompt": "x"})");
  EXPECT_EQ(c.Read().status, 503);
  engine_.set_ready(true);
  c.Get("/health");
  EXPECT_EQ(c.Read().status, 200);
}

TEST_F(HttpServerTest, ApiKeyIsRequiredOnV1Only) {
  HttpServerOptions options;
  options.api_keys = {"sk-good"};
  StartServer(options);
  Response missing = PostOnce("/v1/completions", R"({"prompt": "x"})");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(ErrorOf(missing)["code"], "invalid_api_key");
  EXPECT_EQ(PostOnce("/v1/completions", R"({"prompt": "x"})", "Authorization: Bearer sk-bad\r\n")
                .status,
            401);
  EXPECT_EQ(PostOnce("/v1/completions", R"({"prompt": "x"})", "Authorization: Bearer sk-good\r\n")
                .status,
            200);
  Client c(server_->port());
  c.Get("/health");
  EXPECT_EQ(c.Read().status, 200);
  EXPECT_TRUE(engine_.submitted().size() == 1u);
}

TEST_F(HttpServerTest, ClientDisconnectMidStreamAbortsTheEngineRequest) {
  engine_.hold();
  StartServer();
  {
    Client c(server_->port());
    c.Post("/v1/chat/completions",
           R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})");
    ASSERT_TRUE(c.ReadUntil("\"role\":\"assistant\""));
  }  // closes the socket
  ASSERT_TRUE(engine_.WaitFor([&] { return engine_.aborted().size() == 1; }));
  EXPECT_EQ(engine_.aborted()[0], engine_.submitted()[0].request_id);
  EXPECT_TRUE(engine_.WaitFor([&] { return server_->service().live_engine_requests() == 0; }));
}

TEST_F(HttpServerTest, NChoicesUseSeedPlusIndex) {
  StartServer();
  Response r = PostOnce("/v1/chat/completions",
                        R"({"messages": [{"role": "user", "content": "Hi"}], "n": 3, "seed": 7,)"
                        R"( "temperature": 0.5, "top_k": 4, "stop": "END"})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 3u);
  std::vector<GenerateRequest> sub = engine_.submitted();
  ASSERT_EQ(sub.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(*sub[i].sampling.seed, 7u + i);
    EXPECT_FLOAT_EQ(sub[i].sampling.temperature, 0.5f);
    EXPECT_EQ(sub[i].sampling.top_k, 4);
    EXPECT_EQ(sub[i].sampling.stop, std::vector<std::string>{"END"});
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 9);
}

TEST_F(HttpServerTest, CompletionAcceptsPromptListsAndTokenIds) {
  StartServer();
  Response r = PostOnce("/v1/completions", R"({"prompt": [[9707, 11], [1879]], "n": 2})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 4u);
  std::vector<GenerateRequest> sub = engine_.submitted();
  ASSERT_EQ(sub.size(), 4u);
  EXPECT_EQ(sub[0].prompt_ids, (std::vector<int32_t>{9707, 11}));
  EXPECT_EQ(sub[2].prompt_ids, (std::vector<int32_t>{1879}));
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  Response strings = PostOnce("/v1/completions", R"({"prompt": ["a", "b"], "echo": true})");
  ASSERT_EQ(strings.status, 200);
  EXPECT_EQ(json::parse(strings.body)["choices"][1]["text"], "bHello, world");
}

TEST_F(HttpServerTest, ChatLogprobsHaveTokensBytesAndTopAlternatives) {
  StartServer();
  Response r = PostOnce("/v1/chat/completions",
                        R"({"messages": [{"role": "user", "content": "Hi"}], "logprobs": true,)"
                        R"( "top_logprobs": 2})");
  ASSERT_EQ(r.status, 200) << r.body;
  json content = json::parse(r.body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 3u);
  EXPECT_EQ(content[0]["token"], "Hello");
  EXPECT_EQ(content[0]["bytes"], json::array({72, 101, 108, 108, 111}));
  EXPECT_DOUBLE_EQ(content[0]["logprob"].get<double>(), -0.25);
  ASSERT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][0]["token"], "Hello");
  EXPECT_EQ(engine_.submitted()[0].sampling.logprobs, 2);
}

TEST_F(HttpServerTest, CompletionLogprobsUseTheLegacyFormat) {
  StartServer();
  Response r = PostOnce("/v1/completions", R"({"prompt": "x", "logprobs": 1})");
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = json::parse(r.body)["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json::array({"Hello", ",", " world"}));
  EXPECT_EQ(lp["text_offset"], json::array({0, 5, 6}));
  EXPECT_EQ(lp["token_logprobs"].size(), 3u);
  EXPECT_TRUE(lp["top_logprobs"][0].contains("Hello"));
}

TEST_F(HttpServerTest, ChatTemplateErrorIs400) {
  StartServer();
  Response r = PostOnce("/v1/chat/completions", R"({"messages": [{"role": "bad", "content": ""}]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(ErrorOf(r)["message"].get<std::string>(), HasSubstr("roles must alternate"));
}

TEST_F(HttpServerTest, ContentPartsAreJoinedAndImagesRejected) {
  StartServer();
  Response ok = PostOnce("/v1/chat/completions",
                         R"({"messages": [{"role": "user", "content": [{"type": "text",)"
                         R"( "text": "a"}, {"type": "text", "text": "b"}]}]})");
  ASSERT_EQ(ok.status, 200);
  EXPECT_EQ(engine_.submitted()[0].prompt_ids,
            Qwen3().Encode("<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\n"));
  Response image = PostOnce("/v1/chat/completions",
                            R"({"messages": [{"role": "user", "content": [{"type": "image_url",)"
                            R"( "image_url": {"url": "x"}}]}]})");
  EXPECT_EQ(image.status, 400);
  EXPECT_EQ(ErrorOf(image)["param"], "messages[0].content[0]");
}

constexpr char kToolChat[] =
    R"({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [{"type":)"
    R"( "function", "function": {"name": "get_weather", "parameters": {"type": "object",)"
    R"( "properties": {"city": {"type": "string"}}}}}])";

TEST_F(HttpServerTest, ToolCallsAreParsedWithFinishReasonToolCalls) {
  engine_.set_pieces({"<think>need", " weather</think>", "Let me check.<tool_call>\n{\"name\":",
                      " \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"});
  HttpServerOptions options;
  options.service.output_format = OutputFormat::kQwen3;
  StartServer(options);
  Response r = PostOnce("/v1/chat/completions", absl::StrCat(kToolChat, "}"));
  ASSERT_EQ(r.status, 200) << r.body;
  json choice = json::parse(r.body)["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["reasoning_content"], "need weather");
  EXPECT_EQ(choice["message"]["content"], "Let me check.");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  json call = choice["message"]["tool_calls"][0];
  EXPECT_TRUE(absl::StartsWith(call["id"].get<std::string>(), "call_"));
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()),
            json::parse(R"({"city": "Paris"})"));
  EXPECT_FALSE(engine_.submitted()[0].skip_special_tokens);
  // The template saw the tools (keys in the client's order).
  EXPECT_EQ(engine_.submitted()[0].prompt_ids,
            Qwen3().Encode(absl::StrCat(
                "<|im_start|>system\ntools: ",
                R"([{"type":"function","function":{"name":"get_weather","parameters":{"type":)",
                R"("object","properties":{"city":{"type":"string"}}}}}])",
                "<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n"
                "<|im_start|>assistant\n")));
}

TEST_F(HttpServerTest, StreamedToolCallDeltaCarriesIdNameAndArguments) {
  engine_.set_pieces({"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"});
  HttpServerOptions options;
  options.service.output_format = OutputFormat::kQwen3;
  StartServer(options);
  Response r = PostOnce("/v1/chat/completions", absl::StrCat(kToolChat, R"(, "stream": true})"));
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 3u) << r.body;
  json choice = json::parse(events[1])["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  json call = choice["delta"]["tool_calls"][0];
  EXPECT_EQ(call["index"], 0);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"], "{}");
}

TEST_F(HttpServerTest, ToolChoiceNoneLeavesToolsOut) {
  engine_.set_pieces({"<tool_call>x</tool_call>"});
  HttpServerOptions options;
  options.service.output_format = OutputFormat::kQwen3;
  StartServer(options);
  Response r =
      PostOnce("/v1/chat/completions", absl::StrCat(kToolChat, R"(, "tool_choice": "none"})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json choice = json::parse(r.body)["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "stop");
  EXPECT_EQ(choice["message"]["content"], "<tool_call>x</tool_call>");
  EXPECT_EQ(engine_.submitted()[0].prompt_ids,
            Qwen3().Encode("<|im_start|>user\nWeather in Paris?<|im_end|>\n"
                           "<|im_start|>assistant\n"));
}

TEST(ChatRendererTest, QwenTemplateWithKwargsAndContinueFinalMessage) {
  std::ifstream in(testing::TestDataDir() + "/chat_templates/Qwen-Qwen3-0.6B.jinja");
  std::stringstream source;
  source << in.rdbuf();
  auto parsed = ChatTemplate::Parse(source.str());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto loaded = std::make_shared<LoadedChatTemplate>();
  loaded->templates.emplace_back("default", *std::move(parsed));
  ChatRenderer render = MakeChatRenderer(loaded);
  nlohmann::ordered_json messages =
      nlohmann::ordered_json::parse(R"([{"role": "user", "content": "Hi"}])");
  auto plain = render(messages, nullptr, true, false, nlohmann::ordered_json::object());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto no_think = render(messages, nullptr, true, false,
                         nlohmann::ordered_json::parse(R"({"enable_thinking": false})"));
  ASSERT_TRUE(no_think.ok());
  EXPECT_EQ(*no_think,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  messages.push_back({{"role", "assistant"}, {"content", "The answer is"}});
  auto cont = render(messages, nullptr, false, true, nlohmann::ordered_json::object());
  ASSERT_TRUE(cont.ok()) << cont.status();
  EXPECT_TRUE(absl::EndsWith(*cont, "<|im_start|>assistant\n<think>\n\n</think>\n\nThe answer is"))
      << *cont;
}

TEST_F(HttpServerTest, StartHttpApiUsesTheModelTemplateAndDetectsTheOutputFormat) {
  engine_.set_pieces({"<think>r</think>", "answer"});
  HttpApiFlags flags;
  flags.api_keys = "k1, k2";
  HttpApiContext context;
  context.host = "127.0.0.1";
  context.model_dir = testing::TestDataDir() + "/tokenizers/qwen3";
  context.model_type = "qwen3";
  context.served_model_name = "qwen-tiny";
  context.engine = &engine_;
  context.tokenizer = &Qwen3();
  context.metrics_text = [] { return std::string("engine_metric 1\n"); };
  auto server = StartHttpApi(flags, context);
  ASSERT_TRUE(server.ok()) << server.status();
  Client c((*server)->port());
  c.Post("/v1/chat/completions", kChat, "Authorization: Bearer k2\r\n");
  Response r = c.Read();
  EXPECT_EQ(r.status, 404);  // model "tiny" is not served here
  c.Post("/v1/chat/completions",
         R"({"model": "qwen-tiny", "messages": [{"role": "user", "content": "Hi"}]})",
         "Authorization: Bearer k2\r\n");
  r = c.Read();
  ASSERT_EQ(r.status, 200) << r.body;
  json message = json::parse(r.body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "r");
  EXPECT_EQ(message["content"], "answer");
  // The real Qwen3 template rendered the prompt.
  EXPECT_EQ(engine_.submitted()[0].prompt_ids,
            Qwen3().Encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
  c.Get("/metrics");
  EXPECT_THAT(c.Read().body, HasSubstr("\nengine_metric 1\n"));
  (*server)->Shutdown(absl::Seconds(1));
}

TEST_F(HttpServerTest, MetricsAndModels) {
  StartServer();
  PostOnce("/v1/completions", R"({"prompt": "x"})");
  Client c(server_->port());
  c.Get("/metrics");
  Response m = c.Read();
  EXPECT_EQ(m.status, 200);
  EXPECT_THAT(m.body, HasSubstr("tessera_http_responses_total{code=\"200\"} 1\n"));
  EXPECT_THAT(m.body, HasSubstr("tessera_http_generation_tokens_total 3\n"));
  c.Get("/v1/models");
  json models = json::parse(c.Read().body);
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["max_model_len"], 64);
}

TEST_F(HttpServerTest, GracefulShutdownLetsRunningStreamsFinish) {
  engine_.hold();
  StartServer();
  Client c(server_->port());
  c.Post("/v1/completions", R"({"prompt": "x", "stream": true})");
  ASSERT_TRUE(engine_.WaitFor([&] { return engine_.live() == 1; }));
  std::thread stopper([&] { server_->Shutdown(absl::Seconds(10)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  engine_.Release();
  Response r = c.Read();
  stopper.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("data: [DONE]\n\n"));
  EXPECT_TRUE(engine_.aborted().empty());
}

TEST_F(HttpServerTest, ThousandConcurrentStreams) {
  constexpr int kClients = 1000;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2 * kClients + 100) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 2 * kClients + 100);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  ASSERT_GE(limit.rlim_cur, 2u * kClients + 100) << "RLIMIT_NOFILE hard limit too low";
  engine_.hold();
  StartServer();
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<Client>(server_->port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
    clients.back()->Post("/v1/chat/completions",
                         R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})");
  }
  // Every stream is open (headers and role chunk received) while the engine holds them all.
  for (auto& c : clients) ASSERT_TRUE(c->ReadUntil("\"role\":\"assistant\""));
  ASSERT_TRUE(engine_.WaitFor([&] { return engine_.live() == kClients; }));
  engine_.Release();
  int done = 0;
  for (auto& c : clients) done += c->ReadUntil("data: [DONE]\n\n\r\n0\r\n\r\n") ? 1 : 0;
  EXPECT_EQ(done, kClients);
}

// A self-signed certificate for 127.0.0.1 written as PEM files.
void WriteSelfSignedCert(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* key = EVP_PKEY_new();
  EVP_PKEY_CTX* kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
  ASSERT_EQ(EVP_PKEY_keygen_init(kctx), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1), 1);
  ASSERT_EQ(EVP_PKEY_keygen(kctx, &key), 1);
  EVP_PKEY_CTX_free(kctx);
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  ASSERT_GT(X509_sign(cert, key, EVP_sha256()), 0);
  FILE* f = fopen(cert_path.c_str(), "w");
  PEM_write_X509(f, cert);
  fclose(f);
  f = fopen(key_path.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  fclose(f);
  X509_free(cert);
  EVP_PKEY_free(key);
}

TEST_F(HttpServerTest, TlsWithSelfSignedCertificate) {
  std::string dir = testing::MakeTempDir("http_tls");
  HttpServerOptions options;
  options.tls_cert_file = dir + "/cert.pem";
  options.tls_key_file = dir + "/key.pem";
  WriteSelfSignedCert(options.tls_cert_file, options.tls_key_file);
  StartServer(options);
  ASSERT_TRUE(server_->tls());

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx, options.tls_cert_file.c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL* ssl = SSL_new(ctx);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1);  // verifies the chain against the self-signed certificate
  std::string body = R"({"prompt": "x", "stream": true})";
  std::string req = absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: ",
      body.size(), "\r\n\r\n", body);
  ASSERT_EQ(SSL_write(ssl, req.data(), static_cast<int>(req.size())),
            static_cast<int>(req.size()));
  std::string got;
  char buf[4096];
  int n;
  while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0) got.append(buf, n);
  EXPECT_TRUE(absl::StartsWith(got, "HTTP/1.1 200 OK\r\n")) << got;
  EXPECT_THAT(got, HasSubstr("data: [DONE]\n\n"));
  SSL_free(ssl);
  close(fd);
  SSL_CTX_free(ctx);
}

}  // namespace
}  // namespace tessera::api
