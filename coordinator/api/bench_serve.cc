#include "coordinator/api/bench_serve.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <utility>  // before Boost: 1.74's asio/awaitable.hpp uses std::exchange without it
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "coordinator/text/tokenizer.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"

namespace tessera::api {

// ---- SSE -----------------------------------------------------------------------------------

void SseParser::Feed(absl::string_view bytes, const Callback& on_event) {
  size_t i = 0;
  if (skip_lf_ && !bytes.empty() && bytes[0] == '\n') i = 1;
  skip_lf_ = false;
  while (i < bytes.size()) {
    const size_t end = bytes.find_first_of("\r\n", i);
    if (end == absl::string_view::npos) {
      line_.append(bytes.data() + i, bytes.size() - i);
      return;
    }
    line_.append(bytes.data() + i, end - i);
    i = end + 1;
    if (bytes[end] == '\r') {
      if (i < bytes.size()) {
        if (bytes[i] == '\n') ++i;
      } else {
        skip_lf_ = true;
      }
    }
    std::string line = std::move(line_);
    line_.clear();
    Line(line, on_event);
  }
}

void SseParser::Line(absl::string_view line, const Callback& on_event) {
  if (line.empty()) {  // dispatch
    if (has_data_) {
      const std::string data = std::move(data_);
      data_.clear();
      has_data_ = false;
      on_event(data);
    }
    return;
  }
  if (line[0] == ':') return;  // comment
  const size_t colon = line.find(':');
  absl::string_view field = line.substr(0, colon);
  absl::string_view value;
  if (colon != absl::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field != "data") return;  // event, id, retry: not used by OpenAI streams
  if (has_data_) data_.push_back('\n');
  data_.append(value.data(), value.size());
  has_data_ = true;
}

// ---- Statistics ----------------------------------------------------------------------------

std::vector<double> ArrivalTimes(int n, double rate, uint64_t seed) {
  std::vector<double> out(std::max(n, 0), 0.0);
  if (rate <= 0) return out;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);  // not the prompts' stream
  std::exponential_distribution<double> gap(rate);
  for (size_t i = 1; i < out.size(); ++i) out[i] = out[i - 1] + gap(rng);
  return out;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

LatencyStats ComputeLatencyStats(const std::vector<double>& seconds) {
  LatencyStats s;
  if (seconds.empty()) return s;
  std::vector<double> ms(seconds.size());
  for (size_t i = 0; i < seconds.size(); ++i) ms[i] = seconds[i] * 1000.0;
  double sum = 0;
  for (double v : ms) sum += v;
  s.mean = sum / static_cast<double>(ms.size());
  double var = 0;
  for (double v : ms) var += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(var / static_cast<double>(ms.size()));
  s.median = s.p50 = Percentile(ms, 50);
  s.p90 = Percentile(ms, 90);
  s.p99 = Percentile(ms, 99);
  return s;
}

BenchResult ComputeBenchResult(const std::vector<RequestRecord>& records, double duration_s) {
  BenchResult r;
  r.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestRecord& rec : records) {
    if (!rec.success) {
      ++r.failed;
      if (r.first_error.empty()) r.first_error = rec.error;
      continue;
    }
    ++r.completed;
    r.total_input_tokens += rec.prompt_tokens;
    r.total_output_tokens += rec.output_tokens;
    ttft.push_back(rec.ttft);
    e2el.push_back(rec.latency);
    if (rec.output_tokens > 1) {
      tpot.push_back((rec.latency - rec.ttft) / static_cast<double>(rec.output_tokens - 1));
    }
    itl.insert(itl.end(), rec.itl.begin(), rec.itl.end());
  }
  if (duration_s > 0) {
    r.request_throughput = static_cast<double>(r.completed) / duration_s;
    r.output_throughput = static_cast<double>(r.total_output_tokens) / duration_s;
    r.total_token_throughput =
        static_cast<double>(r.total_input_tokens + r.total_output_tokens) / duration_s;
  }
  r.ttft = ComputeLatencyStats(ttft);
  r.tpot = ComputeLatencyStats(tpot);
  r.itl = ComputeLatencyStats(itl);
  r.e2el = ComputeLatencyStats(e2el);
  return r;
}

nlohmann::json BenchResultToJson(const BenchResult& r, const ServeBenchOptions& o) {
  nlohmann::json j;
  j["url"] = o.url;
  j["model"] = r.model.empty() ? o.model : r.model;
  j["endpoint"] = o.endpoint;
  j["max_concurrency"] = o.concurrency;
  j["num_prompts"] = o.num_prompts;
  j["input_len"] = o.input_len;
  j["output_len"] = o.output_len;
  j["request_rate"] = o.request_rate > 0 ? nlohmann::json(o.request_rate) : nlohmann::json("inf");
  j["seed"] = o.seed;
  j["completed"] = r.completed;
  j["failed"] = r.failed;
  j["first_error"] = r.first_error.empty() ? nlohmann::json() : nlohmann::json(r.first_error);
  j["duration"] = r.duration_s;
  j["total_input_tokens"] = r.total_input_tokens;
  j["total_output_tokens"] = r.total_output_tokens;
  j["request_throughput"] = r.request_throughput;
  j["output_throughput"] = r.output_throughput;
  j["total_token_throughput"] = r.total_token_throughput;
  const std::pair<const char*, const LatencyStats*> metrics[] = {
      {"ttft", &r.ttft}, {"tpot", &r.tpot}, {"itl", &r.itl}, {"e2el", &r.e2el}};
  for (const auto& [name, s] : metrics) {
    j[absl::StrCat("mean_", name, "_ms")] = s->mean;
    j[absl::StrCat("median_", name, "_ms")] = s->median;
    j[absl::StrCat("std_", name, "_ms")] = s->std;
    j[absl::StrCat("p50_", name, "_ms")] = s->p50;
    j[absl::StrCat("p90_", name, "_ms")] = s->p90;
    j[absl::StrCat("p99_", name, "_ms")] = s->p99;
  }
  return j;
}

std::string BenchResultToText(const BenchResult& r, const ServeBenchOptions& o) {
  std::string out;
  auto row = [&](absl::string_view label, const std::string& value) {
    absl::StrAppendFormat(&out, "%-40s %s\n", label, value);
  };
  auto f2 = [](double v) { return absl::StrFormat("%.2f", v); };
  auto header = [&](absl::string_view title) {
    const int pad = std::max<int>(0, 50 - static_cast<int>(title.size()));
    out += std::string(pad / 2, '-') + std::string(title) + std::string(pad - pad / 2, '-') + "\n";
  };
  out += "============ Serving Benchmark Result ============\n";
  row("Successful requests:", absl::StrCat(r.completed));
  row("Failed requests:", absl::StrCat(r.failed));
  row("Maximum request concurrency:", absl::StrCat(o.concurrency));
  row("Request rate (req/s):", o.request_rate > 0 ? f2(o.request_rate) : "inf");
  row("Benchmark duration (s):", f2(r.duration_s));
  row("Total input tokens:", absl::StrCat(r.total_input_tokens));
  row("Total generated tokens:", absl::StrCat(r.total_output_tokens));
  row("Request throughput (req/s):", f2(r.request_throughput));
  row("Output token throughput (tok/s):", f2(r.output_throughput));
  row("Total token throughput (tok/s):", f2(r.total_token_throughput));
  const std::tuple<const char*, const char*, const LatencyStats*> metrics[] = {
      {"Time to First Token", "TTFT", &r.ttft},
      {"Time per Output Token (excl. 1st token)", "TPOT", &r.tpot},
      {"Inter-token Latency", "ITL", &r.itl},
      {"End-to-end Latency", "E2EL", &r.e2el}};
  for (const auto& [title, name, s] : metrics) {
    header(title);
    row(absl::StrCat("Mean ", name, " (ms):"), f2(s->mean));
    row(absl::StrCat("Median ", name, " (ms):"), f2(s->median));
    row(absl::StrCat("P90 ", name, " (ms):"), f2(s->p90));
    row(absl::StrCat("P99 ", name, " (ms):"), f2(s->p99));
  }
  out += "==================================================\n";
  if (!r.first_error.empty()) out += absl::StrCat("First error: ", r.first_error, "\n");
  return out;
}

// ---- The client ----------------------------------------------------------------------------

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Target {
  std::string host;
  std::string port;
  std::string base;  // path prefix up to and including /v1
};

absl::StatusOr<Target> ParseUrl(const std::string& url) {
  absl::string_view rest = url;
  if (absl::StartsWith(rest, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--url ", url,
                     ": https is not supported by bench serve; benchmark the server's plain "
                     "HTTP port (or put a TLS-terminating proxy in front of the client)"));
  }
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--url ", url, ": expected http://HOST[:PORT][/PATH]"));
  }
  const size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  std::string path = slash == absl::string_view::npos ? "" : std::string(rest.substr(slash));
  while (!path.empty() && path.back() == '/') path.pop_back();
  Target t;
  if (!authority.empty() && authority[0] == '[') {  // [v6]:port
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--url ", url, ": unterminated '['"));
    }
    t.host = std::string(authority.substr(1, close - 1));
    absl::string_view after = authority.substr(close + 1);
    t.port = absl::ConsumePrefix(&after, ":") ? std::string(after) : "80";
  } else {
    const size_t colon = authority.rfind(':');
    t.host = std::string(authority.substr(0, colon));
    t.port = colon == absl::string_view::npos ? "80" : std::string(authority.substr(colon + 1));
  }
  int port = 0;
  if (t.host.empty() || !absl::SimpleAtoi(t.port, &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--url ", url, ": expected http://HOST[:PORT][/PATH] with a port 1..65535"));
  }
  t.base = absl::EndsWith(path, "/v1") ? path : path + "/v1";
  return t;
}

std::string Truncate(absl::string_view s, size_t n = 500) {
  if (s.size() <= n) return std::string(s);
  return absl::StrCat(s.substr(0, n), "...");
}

// One HTTP/1.1 connection, kept alive across the requests of one concurrency slot.
struct Connection {
  explicit Connection(net::any_io_executor ex) : stream(ex) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool open = false;
  void Close() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
    buffer.clear();
    open = false;
  }
};

class Bench {
 public:
  Bench(const ServeBenchOptions& o, Target target) : o_(o), target_(std::move(target)) {}

  absl::Status Resolve() {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    endpoints_ = resolver.resolve(target_.host, target_.port, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot resolve the host of ", o_.url, ": ", ec.message()));
    }
    return absl::OkStatus();
  }

  // GET {base}/models: checks the server is reachable and returns the first model id ("" when
  // the server has no such endpoint).
  absl::StatusOr<std::string> FirstModel() {
    absl::StatusOr<std::string> result = absl::InternalError("not run");
    net::co_spawn(ioc_, GetModels(&result), net::detached);
    ioc_.run();
    ioc_.restart();
    return result;
  }

  void MakeRequests(const Tokenizer* tokenizer) {
    std::mt19937_64 rng(o_.seed);
    std::uniform_int_distribution<int64_t> id(0, o_.vocab_size - 1);
    for (int i = 0; i < o_.num_prompts; ++i) {
      std::vector<int32_t> ids(o_.input_len);
      for (int32_t& x : ids) x = static_cast<int32_t>(id(rng));
      nlohmann::json body;
      body["model"] = o_.model;
      if (o_.endpoint == "chat") {
        absl::StatusOr<std::string> text = tokenizer->Decode(ids);
        body["messages"] = nlohmann::json::array(
            {{{"role", "user"}, {"content", text.ok() ? *text : std::string("hello")}}});
        body["max_completion_tokens"] = o_.output_len;
      } else {
        body["prompt"] = ids;
      }
      body["max_tokens"] = o_.output_len;
      body["min_tokens"] = o_.output_len;
      body["ignore_eos"] = true;
      body["temperature"] = 0.0;
      body["stream"] = true;
      body["stream_options"] = {{"include_usage", true}};
      bodies_.push_back(body.dump());
    }
    arrivals_ = ArrivalTimes(o_.num_prompts, o_.request_rate, o_.seed);
    records_.resize(o_.num_prompts);
  }

  double Run() {
    start_ = Clock::now();
    last_progress_ = start_;
    for (int s = 0; s < std::min(o_.concurrency, o_.num_prompts); ++s) {
      net::co_spawn(ioc_, Slot(), net::detached);
    }
    ioc_.run();
    return std::chrono::duration<double>(end_ - start_).count();
  }

  const std::vector<RequestRecord>& records() const { return records_; }

 private:
  http::request<http::string_body> Request(http::verb verb, const std::string& path,
                                           std::string body) const {
    http::request<http::string_body> req{verb, target_.base + path, 11};
    req.set(http::field::host, target_.host + ":" + target_.port);
    req.set(http::field::user_agent, "tessera-bench-serve");
    if (!o_.api_key.empty()) req.set(http::field::authorization, "Bearer " + o_.api_key);
    if (verb == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.set(http::field::accept, "text/event-stream");
      req.body() = std::move(body);
      req.prepare_payload();
    }
    req.keep_alive(true);
    return req;
  }

  net::awaitable<void> GetModels(absl::StatusOr<std::string>* result) {
    beast::error_code ec;
    Connection c(co_await net::this_coro::executor);
    c.stream.expires_after(std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(std::min(o_.timeout_s, 30.0))));
    co_await c.stream.async_connect(endpoints_, net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      *result = absl::UnavailableError(absl::StrCat("cannot reach ", o_.url, ": ", ec.message(),
                                                    " (is the server running on that port?)"));
      co_return;
    }
    auto req = Request(http::verb::get, "/models", "");
    co_await http::async_write(c.stream, req, net::redirect_error(net::use_awaitable, ec));
    http::response<http::string_body> res;
    if (!ec) {
      co_await http::async_read(c.stream, c.buffer, res,
                                net::redirect_error(net::use_awaitable, ec));
    }
    if (ec) {
      *result = absl::UnavailableError(
          absl::StrCat("GET ", target_.base, "/models at ", o_.url, " failed: ", ec.message()));
      co_return;
    }
    if (res.result_int() != 200) {
      *result = absl::FailedPreconditionError(absl::StrCat("GET ", target_.base, "/models at ",
                                                           o_.url, ": HTTP ", res.result_int(),
                                                           ": ", Truncate(res.body())));
      co_return;
    }
    nlohmann::json j = nlohmann::json::parse(res.body(), nullptr, false);
    if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
        !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
      *result = absl::FailedPreconditionError(
          absl::StrCat("GET ", target_.base, "/models at ", o_.url,
                       " lists no model id (pass --model): ", Truncate(res.body())));
      co_return;
    }
    *result = j["data"][0]["id"].get<std::string>();
  }

  net::awaitable<void> Slot() {
    Connection c(co_await net::this_coro::executor);
    net::steady_timer timer(c.stream.get_executor());
    while (next_ < o_.num_prompts) {
      const int i = next_++;
      const auto arrival = start_ + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(arrivals_[i]));
      if (arrival > Clock::now()) {
        timer.expires_at(arrival);
        beast::error_code ec;
        co_await timer.async_wait(net::redirect_error(net::use_awaitable, ec));
      }
      co_await RunRequest(c, i);
      ++done_;
      if (!records_[i].success) ++failed_;
      end_ = Clock::now();
      if (o_.progress &&
          (end_ - last_progress_ >= std::chrono::seconds(1) || done_ == o_.num_prompts)) {
        last_progress_ = end_;
        std::fprintf(stderr, "bench serve: %d/%d requests done (%d failed), %.1f s\n", done_,
                     o_.num_prompts, failed_, std::chrono::duration<double>(end_ - start_).count());
      }
    }
    if (c.open) c.Close();
  }

  Clock::duration Timeout() const {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.timeout_s));
  }

  std::string ErrorText(const beast::error_code& ec, absl::string_view what) const {
    if (ec == beast::error::timeout) {
      return absl::StrFormat("%s: no data from the server for %.0f s (--timeout)", what,
                             o_.timeout_s);
    }
    return absl::StrCat(what, ": ", ec.message());
  }

  net::awaitable<void> RunRequest(Connection& c, int i) {
    RequestRecord& rec = records_[i];
    const Clock::time_point t0 = Clock::now();
    rec.start = std::chrono::duration<double>(t0 - start_).count();
    auto fail = [&](std::string error) {
      rec.success = false;
      rec.error = absl::StrCat("request ", i, ": ", error);
      rec.latency = std::chrono::duration<double>(Clock::now() - t0).count();
      c.Close();
    };
    const auto req = Request(
        http::verb::post, o_.endpoint == "chat" ? "/chat/completions" : "/completions", bodies_[i]);
    beast::error_code ec;
    std::optional<http::response_parser<http::buffer_body>> parser;
    // A kept-alive connection the server closed meanwhile fails at write or header time:
    // reconnect once.
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = c.open;
      if (!c.open) {
        c.stream.expires_after(Timeout());
        co_await c.stream.async_connect(endpoints_, net::redirect_error(net::use_awaitable, ec));
        if (ec) {
          fail(ErrorText(ec, absl::StrCat("cannot connect to ", o_.url)));
          co_return;
        }
        c.open = true;
      }
      c.stream.expires_after(Timeout());
      co_await http::async_write(c.stream, req, net::redirect_error(net::use_awaitable, ec));
      if (!ec) {
        parser.emplace();
        parser->body_limit(std::numeric_limits<std::uint64_t>::max());
        co_await http::async_read_header(c.stream, c.buffer, *parser,
                                         net::redirect_error(net::use_awaitable, ec));
      }
      if (!ec) break;
      if (!reused || attempt == 1) {
        fail(ErrorText(ec, "sending the request / reading the response header"));
        co_return;
      }
      c.Close();
    }
    const int status = parser->get().result_int();
    const bool keep_alive = parser->get().keep_alive();
    std::string error_body, error;
    bool first = false, done = false;
    int64_t chunks = 0;
    Clock::time_point last{}, now{};
    SseParser sse;
    const bool chat = o_.endpoint == "chat";
    auto on_event = [&](absl::string_view data) {
      if (done || !error.empty()) return;
      if (data == "[DONE]") {
        done = true;
        return;
      }
      nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        error = absl::StrCat("invalid JSON in the event stream: ", Truncate(data));
        return;
      }
      if (j.contains("error")) {
        error = absl::StrCat("error event in the stream: ", Truncate(j["error"].dump()));
        return;
      }
      auto choices = j.find("choices");
      if (choices != j.end() && choices->is_array() && !choices->empty()) {
        bool output = true;
        if (chat) {  // skip the role-only first delta: TTFT counts generated output
          const nlohmann::json& ch = (*choices)[0];
          output = false;
          if (auto d = ch.find("delta"); d != ch.end() && d->is_object()) {
            for (const char* key : {"content", "reasoning_content", "reasoning", "tool_calls"}) {
              auto v = d->find(key);
              if (v != d->end() && !v->is_null() &&
                  !(v->is_string() && v->get_ref<const std::string&>().empty())) {
                output = true;
              }
            }
          }
          if (auto f = ch.find("finish_reason"); f != ch.end() && !f->is_null()) output = true;
        }
        if (output) {
          if (!first) {
            first = true;
            rec.ttft = std::chrono::duration<double>(now - t0).count();
          } else {
            rec.itl.push_back(std::chrono::duration<double>(now - last).count());
          }
          last = now;
          ++chunks;
        }
      }
      auto usage = j.find("usage");
      if (usage != j.end() && usage->is_object()) {
        if (auto v = usage->find("completion_tokens"); v != usage->end() && v->is_number()) {
          rec.output_tokens = v->get<int64_t>();
        }
        if (auto v = usage->find("prompt_tokens"); v != usage->end() && v->is_number()) {
          rec.prompt_tokens = v->get<int64_t>();
        }
      }
    };
    char buf[16384];
    while (!parser->is_done()) {
      parser->get().body().data = buf;
      parser->get().body().size = sizeof(buf);
      c.stream.expires_after(Timeout());
      co_await http::async_read_some(c.stream, c.buffer, *parser,
                                     net::redirect_error(net::use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      now = Clock::now();
      const size_t n = sizeof(buf) - parser->get().body().size;
      if (status == 200) {
        sse.Feed(absl::string_view(buf, n), on_event);
      } else if (error_body.size() < 4096) {
        error_body.append(buf, n);
      }
      if (ec) {
        fail(ErrorText(ec, status == 200 ? "reading the event stream"
                                         : absl::StrCat("HTTP ", status, " reading the body")));
        co_return;
      }
    }
    rec.latency = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!keep_alive) c.Close();
    if (status != 200) {
      fail(absl::StrCat("HTTP ", status, ": ", Truncate(error_body)));
      co_return;
    }
    if (!error.empty()) {
      fail(error);
      co_return;
    }
    if (!first) {
      fail("the stream carried no output (is it an OpenAI event stream?)");
      co_return;
    }
    if (rec.output_tokens == 0) rec.output_tokens = chunks;
    if (rec.prompt_tokens == 0) rec.prompt_tokens = o_.endpoint == "chat" ? 0 : o_.input_len;
    rec.success = true;
  }

  const ServeBenchOptions& o_;
  Target target_;
  net::io_context ioc_;
  tcp::resolver::results_type endpoints_;
  std::vector<std::string> bodies_;
  std::vector<double> arrivals_;  // seconds after start
  std::vector<RequestRecord> records_;
  Clock::time_point start_, end_, last_progress_;
  int next_ = 0, done_ = 0, failed_ = 0;  // the io thread only
};

}  // namespace

absl::StatusOr<BenchResult> RunServeBench(const ServeBenchOptions& options) {
  ServeBenchOptions o = options;
  if (o.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  if (o.num_prompts < 1) return absl::InvalidArgumentError("--num-prompts must be >= 1");
  if (o.input_len < 1) return absl::InvalidArgumentError("--input-len must be >= 1");
  if (o.output_len < 1) return absl::InvalidArgumentError("--output-len must be >= 1");
  if (o.request_rate < 0) {
    return absl::InvalidArgumentError("--request-rate must be >= 0 (0: all requests at once)");
  }
  if (o.timeout_s <= 0) return absl::InvalidArgumentError("--timeout must be > 0 seconds");
  if (o.endpoint != "completions" && o.endpoint != "chat") {
    return absl::InvalidArgumentError(
        absl::StrCat("--endpoint '", o.endpoint, "': use completions or chat"));
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (!o.tokenizer_dir.empty()) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(o.tokenizer_dir);
    if (!t.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokenizer ", o.tokenizer_dir, ": ", t.status().message()));
    }
    tokenizer = std::move(*t);
    o.vocab_size = tokenizer->vocab_size();
  } else if (o.endpoint == "chat") {
    return absl::InvalidArgumentError(
        "--endpoint chat needs --tokenizer DIR (a model directory) to turn the random token ids "
        "into message text");
  }
  if (o.vocab_size < 1) return absl::InvalidArgumentError("--vocab-size must be >= 1");
  ASSIGN_OR_RETURN(Target target, ParseUrl(o.url));
  Bench bench(o, target);
  RETURN_IF_ERROR(bench.Resolve());
  absl::StatusOr<std::string> model = bench.FirstModel();
  if (o.model.empty()) {
    if (!model.ok()) return model.status();
    o.model = *model;
  } else if (!model.ok() && absl::IsUnavailable(model.status())) {
    return model.status();  // unreachable; a server without /v1/models is fine with --model
  }
  bench.MakeRequests(tokenizer.get());
  if (o.progress) {
    std::fprintf(stderr,
                 "bench serve: %d requests to %s (model %s), %d in flight, input %d, output %d, "
                 "request rate %s\n",
                 o.num_prompts, o.url.c_str(), o.model.c_str(), o.concurrency, o.input_len,
                 o.output_len,
                 o.request_rate > 0 ? absl::StrCat(o.request_rate, "/s").c_str() : "inf");
  }
  const double duration = bench.Run();
  BenchResult result = ComputeBenchResult(bench.records(), duration);
  result.model = o.model;
  return result;
}

int RunBenchCommand(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "serve") {
    std::fprintf(stderr,
                 "usage: tessera bench serve --url URL --concurrency N --num-prompts M "
                 "--input-len I --output-len O [--json] ...\n"
                 "Run 'tessera bench serve --help' for every flag.\n");
    return argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") ? 0 : 2;
  }
  FlagParser parser("bench serve",
                    "benchmark an OpenAI-compatible server: streaming requests with random "
                    "token-id prompts; throughput, TTFT, TPOT, ITL, E2E latency");
  ServeBenchOptions o;
  if (const char* key = std::getenv("OPENAI_API_KEY")) o.api_key = key;
  int seed = 0;
  bool json = false;
  parser.AddString("url", &o.url, "server root (http://HOST:PORT) or base URL ending in /v1");
  parser.AddString("model", &o.model, "model name sent (default: first id of GET /v1/models)");
  parser.AddString("endpoint", &o.endpoint, "completions (token-id prompts) or chat");
  parser.AddString("api-key", &o.api_key, "bearer token (default: $OPENAI_API_KEY)");
  parser.AddInt("concurrency", &o.concurrency, "requests in flight (one connection each)");
  parser.AddInt("num-prompts", &o.num_prompts, "number of requests");
  parser.AddInt("input-len", &o.input_len, "prompt tokens per request");
  parser.AddInt("output-len", &o.output_len, "output tokens per request (max_tokens, ignore_eos)");
  parser.AddDouble("request-rate", &o.request_rate,
                   "Poisson arrivals at this many requests/s (0: all at once)");
  parser.AddInt("seed", &seed, "seed of the prompts and arrival times");
  parser.AddInt("vocab-size", &o.vocab_size, "random prompt ids are in [0, vocab-size)");
  parser.AddString("tokenizer", &o.tokenizer_dir,
                   "model directory: vocab size from its tokenizer; needed by --endpoint chat");
  parser.AddDouble("timeout", &o.timeout_s,
                   "seconds without data from the server before a request fails");
  parser.AddBool("json", &json, "print one JSON object instead of the report");
  // RunCommand names the command after argv[0] in its errors: "tessera bench serve: ...".
  std::string name = "bench serve";
  std::vector<char*> args(argv + 1, argv + argc);
  args[0] = name.data();
  return RunCommand(parser, argc - 1, args.data(), [&]() -> absl::Status {
    o.seed = static_cast<uint64_t>(seed);
    ASSIGN_OR_RETURN(BenchResult r, RunServeBench(o));
    if (json) {
      std::printf("%s\n", BenchResultToJson(r, o).dump().c_str());
    } else {
      std::printf("%s", BenchResultToText(r, o).c_str());
    }
    std::fflush(stdout);
    if (r.completed == 0) {
      return absl::UnavailableError(
          absl::StrCat("every request failed; first error: ", r.first_error));
    }
    return absl::OkStatus();
  });
}

}  // namespace tessera::api
