// `tessera serve` (coordinator + 2 local workers, tiny qwen3_moe with the real Qwen3 tokenizer)
// over its OpenAI HTTP API, with real processes on 127.0.0.1:
// - `tessera bench serve --json` against it: every request completes, token counts are exact,
//   latency percentiles are positive and ordered;
// - a shared prompt prefix hits the prefix cache: identical greedy output, cached prompt tokens
//   reported in usage (OpenAI and gRPC) and tessera:prefix_cache_hits_total rises;
// - per-worker step time and heartbeat age exist in /metrics and move;
// - a KV cache too small for the concurrent requests forces preemptions (counted in /metrics)
//   and every output still equals `tessera generate` on its prompt alone.
#include <chrono>
#include <future>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "coordinator/api/bench_serve.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/generation.grpc.pb.h"
#include "tests/integration/generation_util.h"
#include "tests/integration/process_util.h"
#include "tests/test_util.h"
#include "worker/make_model.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
using testing::ChildProcess;
namespace http = boost::beast::http;

constexpr char kModelName[] = "tiny";

// A tiny qwen3_moe checkpoint with the real Qwen3 tokenizer (the HTTP API needs one).
const std::string& ModelDir() {
  static const std::string* dir = [] {
    MakeModelOptions o;
    o.arch = "qwen3_moe";
    o.preset = "tiny";
    o.dtype = "f32";
    o.seed = 7;
    o.tokenizer_dir = testing::TestDataDir() + "/tokenizers/qwen3";
    o.out_dir = testing::MakeTempDir("serve_http_model") + "/model";
    o.force = true;
    auto r = MakeModel(o);
    CHECK(r.ok()) << r.status();
    return new std::string(o.out_dir);
  }();
  return *dir;
}

struct HttpResponse {
  int status = -1;
  std::string body;
};

// One blocking HTTP/1.1 exchange on a fresh connection.
HttpResponse Http(int port, http::verb verb, const std::string& target,
                  const std::string& body = "") {
  boost::asio::io_context ioc;
  boost::beast::tcp_stream stream(ioc);
  boost::beast::error_code ec;
  stream.expires_after(std::chrono::seconds(60));
  stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                                static_cast<uint16_t>(port)),
                 ec);
  if (ec) return {};
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (verb == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
  }
  http::write(stream, req, ec);
  if (ec) return {};
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res, ec);
  if (ec) return {};
  return {res.result_int(), res.body()};
}

// Sum of every sample of `name` (any labels) in a Prometheus text page.
double MetricSum(const std::string& page, const std::string& name) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name)) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
  }
  return sum;
}

// The value of the sample whose line starts with `prefix` (name and labels), or -1.
double MetricValue(const std::string& page, const std::string& prefix) {
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (absl::StartsWith(line, prefix + " ")) {
      double v = -1;
      if (absl::SimpleAtod(line.substr(prefix.size() + 1), &v)) return v;
    }
  }
  return -1;
}

std::vector<int32_t> RandomIds(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, 150000);
  std::vector<int32_t> ids(n);
  for (int32_t& v : ids) v = d(rng);
  return ids;
}

// Greedy `tessera generate` on `prompt` alone (the batching-independent reference).
std::vector<int32_t> Reference(const std::string& model, const std::vector<int32_t>& prompt,
                               int max_tokens) {
  return testing::GreedyReference(model, prompt, max_tokens);
}

struct Completion {
  int status = -1;
  nlohmann::json body;
};

// Greedy /v1/completions on token ids (text and usage come back; ids are compared over gRPC).
Completion Complete(int port, const std::vector<int32_t>& prompt, int max_tokens) {
  nlohmann::json req = {
      {"model", kModelName}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
  HttpResponse r = Http(port, http::verb::post, "/v1/completions", req.dump());
  Completion c;
  c.status = r.status;
  c.body = nlohmann::json::parse(r.body, nullptr, false);
  return c;
}

class Server {
 public:
  explicit Server(std::vector<std::string> extra) {
    http_port_ = testing::FreePort();
    grpc_port_ = testing::FreePort();
    std::vector<std::string> args = {testing::TesseraBinary(),
                                     "serve",
                                     "--model",
                                     ModelDir(),
                                     "--served-model-name",
                                     kModelName,
                                     "--http-port",
                                     absl::StrCat(http_port_),
                                     "--grpc-port",
                                     absl::StrCat(grpc_port_),
                                     "--local-workers",
                                     "2",
                                     "--worker-threads",
                                     "1",
                                     "--block-size",
                                     "8"};
    args.insert(args.end(), extra.begin(), extra.end());
    process_ =
        std::make_unique<ChildProcess>(args, testing::MakeTempDir("serve_http") + "/serve.log");
    const bool up = testing::WaitFor(
        [&] {
          return Http(http_port_, http::verb::get, "/health").status == 200 ||
                 process_->Wait(milliseconds(0)).has_value();
        },
        milliseconds(90000));
    CHECK(up && !process_->Wait(milliseconds(0)).has_value()) << process_->Log();
    // Both instances ready (/health is 200 once any replica serves; the model's gRPC health is
    // SERVING once every instance is), so sequential requests all go to the first instance.
    CHECK(testing::WaitFor([&] { return ModelServing(); }, milliseconds(60000))) << process_->Log();
  }
  ~Server() {
    process_->Kill(SIGTERM);
    std::optional<int> code = process_->Wait(milliseconds(15000));
    EXPECT_TRUE(code.has_value() && *code == 0) << process_->Log();
  }
  // grpc.health.v1.Health/Check for the model: SERVING.
  bool ModelServing() const {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                       grpc::InsecureChannelCredentials());
    grpc::TemplatedGenericStub<grpc::ByteBuffer, grpc::ByteBuffer> stub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
    // HealthCheckRequest { service = 1: kModelName }
    const std::string req =
        absl::StrCat("\x0a", std::string(1, char(sizeof(kModelName) - 1)), kModelName);
    grpc::Slice slice(req);
    grpc::ByteBuffer request(&slice, 1), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                   [&](grpc::Status st) { done.set_value(st); });
    if (!done.get_future().get().ok()) return false;
    std::vector<grpc::Slice> slices;
    (void)response.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& sl : slices)
      bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    return bytes == std::string("\x08\x01", 2);  // status = SERVING
  }
  std::string Metrics() const { return Http(http_port_, http::verb::get, "/metrics").body; }
  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  std::string Log() const { return process_->Log(); }

 private:
  int http_port_ = 0;
  int grpc_port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

class ServeHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new Server({"--kv-cache-memory", "32MiB"}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static inline Server* server_ = nullptr;
};

// Runs `tessera bench serve --json` against the suite's server with `flags` added.
nlohmann::json RunBench(int port, const std::vector<std::string>& flags) {
  std::vector<std::string> args = {testing::TesseraBinary(),
                                   "bench",
                                   "serve",
                                   "--url",
                                   absl::StrCat("http://127.0.0.1:", port),
                                   "--tokenizer",
                                   ModelDir(),
                                   "--json"};
  args.insert(args.end(), flags.begin(), flags.end());
  ChildProcess bench(args, testing::MakeTempDir("bench_serve") + "/bench.log");
  std::optional<int> code = bench.Wait(milliseconds(120000));
  EXPECT_TRUE(code.has_value() && *code == 0) << bench.Log();
  nlohmann::json j;
  for (absl::string_view line : absl::StrSplit(bench.Log(), '\n')) {
    if (absl::StartsWith(line, "{")) j = nlohmann::json::parse(line);
  }
  EXPECT_TRUE(j.is_object()) << bench.Log();
  return j;
}

TEST_F(ServeHttpTest, BenchServeJsonCountsEveryTokenAndOrdersPercentiles) {
  nlohmann::json j =
      RunBench(server_->http_port(), {"--concurrency", "4", "--num-prompts", "10", "--input-len",
                                      "32", "--output-len", "12", "--seed", "1"});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["model"], kModelName);
  EXPECT_EQ(j["completed"], 10);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_input_tokens"], 10 * 32);
  EXPECT_EQ(j["total_output_tokens"], 10 * 12);  // ignore_eos + min_tokens: exactly output_len
  EXPECT_GT(j["duration"].get<double>(), 0);
  EXPECT_GT(j["output_throughput"].get<double>(), 0);
  EXPECT_GT(j["request_throughput"].get<double>(), 0);
  EXPECT_GT(j["total_token_throughput"].get<double>(), j["output_throughput"].get<double>());
  for (const char* m : {"ttft", "tpot", "itl", "e2el"}) {
    const double p50 = j[absl::StrCat("p50_", m, "_ms")], p90 = j[absl::StrCat("p90_", m, "_ms")],
                 p99 = j[absl::StrCat("p99_", m, "_ms")];
    EXPECT_GT(p50, 0) << m;
    EXPECT_LE(p50, p90) << m;
    EXPECT_LE(p90, p99) << m;
    EXPECT_GT(j[absl::StrCat("mean_", m, "_ms")].get<double>(), 0) << m;
  }
  // A request's E2E latency covers its TTFT and its 11 gaps.
  EXPECT_GE(j["mean_e2el_ms"].get<double>(), j["mean_ttft_ms"].get<double>());
}

TEST_F(ServeHttpTest, BenchServeChatEndpointWithPoissonArrivals) {
  const auto start = std::chrono::steady_clock::now();
  nlohmann::json j = RunBench(server_->http_port(),
                              {"--endpoint", "chat", "--concurrency", "2", "--num-prompts", "6",
                               "--input-len", "20", "--output-len", "5", "--request-rate", "4"});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["completed"], 6);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_output_tokens"], 6 * 5);
  EXPECT_GT(j["total_input_tokens"].get<int>(), 6 * 5);  // the chat template adds tokens
  EXPECT_EQ(j["request_rate"], 4.0);
  // The last of 6 arrivals at 4/s is ~1.5 s after the start (exactly: the seeded draw); the run
  // cannot end before it.
  const double last_arrival = api::ArrivalTimes(6, 4.0, 0).back();
  EXPECT_GE(j["duration"].get<double>(), last_arrival);
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
            last_arrival);
}

TEST_F(ServeHttpTest, SharedPrefixHitsThePrefixCacheWithIdenticalOutput) {
  const std::vector<int32_t> prefix = RandomIds(64, 11);  // 8 full blocks of 8
  std::vector<int32_t> a = prefix, b = prefix;
  for (int32_t t : RandomIds(5, 12)) a.push_back(t);
  for (int32_t t : RandomIds(5, 13)) b.push_back(t);
  const double hits_before = MetricSum(server_->Metrics(), "tessera:prefix_cache_hits_total");

  // Sequential requests go to the same (least loaded, first) instance.
  Completion first = Complete(server_->http_port(), a, 8);
  ASSERT_EQ(first.status, 200) << first.body.dump();
  Completion again = Complete(server_->http_port(), a, 8);
  ASSERT_EQ(again.status, 200) << again.body.dump();
  EXPECT_EQ(again.body["choices"][0]["text"], first.body["choices"][0]["text"]);
  // Every full block of the prompt but the one holding the last token comes from the cache.
  EXPECT_EQ(again.body["usage"]["prompt_tokens_details"]["cached_tokens"], 64);
  EXPECT_EQ(again.body["usage"]["prompt_tokens"], 69);

  // Same prefix, other suffix, through the gRPC API: the output equals `tessera generate` alone
  // and the gRPC usage reports the cached prefix.
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(60000));
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(b.begin(), b.end());
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(8);
  auto reader = stub->Generate(&ctx, req);
  std::vector<int32_t> tokens;
  v1::GenerateResponse r, last;
  while (reader->Read(&r)) {
    tokens.insert(tokens.end(), r.token_ids().begin(), r.token_ids().end());
    last = r;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, Reference(ModelDir(), b, 8));
  EXPECT_EQ(last.usage().cached_prompt_tokens(), 64);

  const double hits_after = MetricSum(server_->Metrics(), "tessera:prefix_cache_hits_total");
  EXPECT_GE(hits_after - hits_before, 128);
}

TEST_F(ServeHttpTest, PerWorkerStepTimeAndHeartbeatAgeMove) {
  const std::string before = server_->Metrics();
  for (const char* w : {"local-0", "local-1"}) {
    EXPECT_EQ(MetricValue(before, absl::StrCat("tessera:worker_up{worker=\"", w, "\"}")), 1);
  }
  const double steps_before = MetricSum(before, "tessera:worker_step_duration_seconds_count");
  const double time_before = MetricSum(before, "tessera:worker_step_duration_seconds_sum");
  Completion c = Complete(server_->http_port(), RandomIds(16, 21), 6);
  ASSERT_EQ(c.status, 200) << c.body.dump();
  const std::string after = server_->Metrics();
  // At least one prefill step and 5 decode steps, each timed on the worker that ran it.
  EXPECT_GE(MetricSum(after, "tessera:worker_step_duration_seconds_count") - steps_before, 6);
  EXPECT_GT(MetricSum(after, "tessera:worker_step_duration_seconds_sum"), time_before);
  // Which worker fills which instance depends on who registered first.
  EXPECT_THAT(after, ::testing::ContainsRegex(
                         "tessera:worker_step_duration_seconds_bucket\\{worker=\"local-[01]\","
                         "instance=\"tiny-[01]\",rank=\"0\",le=\"\\+Inf\"\\}"));

  // The heartbeat age is refreshed several times a second and stays under the 3 s timeout while
  // heartbeats (every second) arrive: sampled over ~2 s it takes several values.
  std::set<double> ages;
  for (int i = 0; i < 10; ++i) {
    const double age =
        MetricValue(server_->Metrics(), "tessera:worker_heartbeat_age_seconds{worker=\"local-1\"}");
    ASSERT_GE(age, 0);
    EXPECT_LT(age, 3.0);
    ages.insert(age);
    std::this_thread::sleep_for(milliseconds(230));
  }
  EXPECT_GE(ages.size(), 3u);
}

// A model directory without a tokenizer still gets the HTTP API, for token-id completions only
// (vLLM's --skip-tokenizer-init): what `tessera bench serve` needs on a bare checkpoint.
TEST(ServeHttpNoTokenizerTest, TokenIdCompletionsWorkAndTextIsRefused) {
  const std::string model = testing::TinyModelDir("qwen3_moe");  // no tokenizer files
  const int http_port = testing::FreePort();
  ChildProcess server({testing::TesseraBinary(), "serve", "--model", model, "--http-port",
                       absl::StrCat(http_port), "--grpc-port", absl::StrCat(testing::FreePort()),
                       "--local-workers", "1", "--worker-threads", "1"},
                      testing::MakeTempDir("serve_notok") + "/serve.log");
  ASSERT_TRUE(
      testing::WaitFor([&] { return Http(http_port, http::verb::get, "/health").status == 200; },
                       milliseconds(90000)))
      << server.Log();
  const std::vector<int32_t> prompt = {5, 17, 300, 2, 9};
  nlohmann::json req = {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}, {"logprobs", 2}};
  HttpResponse ok = Http(http_port, http::verb::post, "/v1/completions", req.dump());
  ASSERT_EQ(ok.status, 200) << ok.body;
  nlohmann::json j = nlohmann::json::parse(ok.body);
  EXPECT_EQ(j["choices"][0]["text"], "");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  const std::vector<int32_t> expected = Reference(model, prompt, 6);
  ASSERT_EQ(j["choices"][0]["logprobs"]["tokens"].size(), expected.size());
  for (size_t t = 0; t < expected.size(); ++t) {
    EXPECT_EQ(j["choices"][0]["logprobs"]["tokens"][t], absl::StrCat("token_id:", expected[t]));
  }
  EXPECT_EQ(j["choices"][0]["logprobs"]["top_logprobs"][0].size(), 2u);

  // Streaming: one chunk per token although there is no text (then the finish and [DONE]).
  req["stream"] = true;
  req.erase("logprobs");
  HttpResponse stream = Http(http_port, http::verb::post, "/v1/completions", req.dump());
  ASSERT_EQ(stream.status, 200) << stream.body;
  int chunks = 0;
  for (absl::string_view line : absl::StrSplit(stream.body, '\n')) {
    if (absl::StartsWith(line, "data: {")) ++chunks;
  }
  EXPECT_EQ(chunks, 6) << stream.body;

  HttpResponse text = Http(http_port, http::verb::post, "/v1/completions",
                           R"({"prompt": "hello", "max_tokens": 2})");
  EXPECT_EQ(text.status, 400);
  EXPECT_THAT(text.body, ::testing::HasSubstr("no tokenizer"));
  HttpResponse chat = Http(http_port, http::verb::post, "/v1/chat/completions",
                           R"({"messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(chat.status, 400);
  EXPECT_THAT(chat.body, ::testing::HasSubstr("no tokenizer"));
  server.Kill(SIGTERM);
  EXPECT_EQ(server.Wait(milliseconds(15000)), 0) << server.Log();
}

// A KV cache of 16 blocks of 8 tokens per instance (2 KiB of KV per token for this model): at
// most 128 tokens in flight per instance, while 8 requests of 24 + 24 tokens want 384.
TEST(ServeHttpPreemptionTest, TinyKvCacheForcesPreemptionAndOutputsStayExact) {
  Server server({"--kv-cache-memory", "256KiB", "--max-model-len", "64"});
  constexpr int kRequests = 8, kPromptLen = 24, kMaxTokens = 24;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kRequests; ++i) prompts.push_back(RandomIds(kPromptLen, 100 + i));
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.grpc_port()),
                                     grpc::InsecureChannelCredentials());
  std::vector<std::future<std::pair<grpc::Status, std::vector<int32_t>>>> futures;
  for (const auto& prompt : prompts) {
    futures.push_back(std::async(std::launch::async, [&channel, prompt] {
      auto stub = v1::Generation::NewStub(channel);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(120000));
      v1::GenerateRequest req;
      req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
      req.mutable_sampling()->set_temperature(0);
      req.mutable_sampling()->set_max_tokens(kMaxTokens);
      auto reader = stub->Generate(&ctx, req);
      std::vector<int32_t> tokens;
      v1::GenerateResponse r;
      while (reader->Read(&r))
        tokens.insert(tokens.end(), r.token_ids().begin(), r.token_ids().end());
      return std::make_pair(reader->Finish(), tokens);
    }));
  }
  for (int i = 0; i < kRequests; ++i) {
    auto [status, tokens] = futures[i].get();
    ASSERT_TRUE(status.ok()) << i << ": " << status.error_message() << "\n" << server.Log();
    EXPECT_EQ(tokens, Reference(ModelDir(), prompts[i], kMaxTokens)) << "request " << i;
  }
  const std::string metrics = server.Metrics();
  EXPECT_GT(MetricSum(metrics, "tessera:num_preemptions_total"), 0) << metrics;
}

}  // namespace
}  // namespace tessera
