// `tessera bench serve` pieces without a server: the SSE parser (line endings, events split
// anywhere across reads, comments, multi-line data) and the statistics (numpy percentiles, vLLM's
// TTFT / TPOT / ITL / E2E definitions, failed requests, throughputs, the JSON keys).
#include "coordinator/api/bench_serve.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::api {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Events(const std::vector<std::string>& reads) {
  SseParser p;
  std::vector<std::string> out;
  for (const std::string& r : reads) {
    p.Feed(r, [&](absl::string_view data) { out.emplace_back(data); });
  }
  return out;
}

TEST(SseParser, OpenAiStreamWithLfEndings) {
  EXPECT_THAT(Events({"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n"}),
              ElementsAre("{\"a\":1}", "{\"b\":2}", "[DONE]"));
}

TEST(SseParser, CrLfAndBareCrEndLinesToo) {
  EXPECT_THAT(Events({"data: x\r\n\r\ndata: y\r\rdata: z\n\r\n"}), ElementsAre("x", "y", "z"));
}

TEST(SseParser, EventsSplitAtEveryByteGiveTheSameResult) {
  const std::string stream = "data: one\r\n\r\n: keep-alive\r\n\r\ndata:two\r\ndata: 2b\r\n\r\n";
  std::vector<std::string> bytes;
  for (char c : stream) bytes.emplace_back(1, c);
  EXPECT_THAT(Events(bytes), ElementsAre("one", "two\n2b"));
  EXPECT_THAT(Events({stream}), ElementsAre("one", "two\n2b"));
}

TEST(SseParser, CommentsOtherFieldsAndEmptyEventsAreNotDispatched) {
  EXPECT_THAT(Events({": ping\n\nevent: message\nid: 7\nretry: 10\n\n", "data\n\n"}),
              ElementsAre(""));  // "data" with no colon is a data line with an empty value
}

TEST(SseParser, UnterminatedEventIsDropped) {
  EXPECT_THAT(Events({"data: done\n\ndata: partial\n"}), ElementsAre("done"));
}

TEST(SseParser, OnlyOneLeadingSpaceIsStripped) {
  EXPECT_THAT(Events({"data:  two spaces\n\n"}), ElementsAre(" two spaces"));
}

TEST(BenchArrivals, PoissonGapsHaveTheRequestedMeanAndAreSeeded) {
  const std::vector<double> a = ArrivalTimes(20000, 50.0, 7);
  ASSERT_EQ(a.size(), 20000u);
  for (size_t i = 1; i < a.size(); ++i) ASSERT_GE(a[i], a[i - 1]);
  EXPECT_EQ(a[0], 0.0);  // the first request goes at once (vLLM)
  EXPECT_NEAR(a.back() / 19999.0, 1.0 / 50.0, 0.02 / 50.0 * 3);  // mean gap 20 ms (+-3 sigma)
  std::vector<double> gaps;
  for (size_t i = 1; i < a.size(); ++i) gaps.push_back(a[i] - a[i - 1]);
  // Exponential: the median gap is ln 2 / rate.
  EXPECT_NEAR(Percentile(gaps, 50), std::log(2.0) / 50.0, 0.0015);
  EXPECT_EQ(ArrivalTimes(5, 50.0, 7), ArrivalTimes(5, 50.0, 7));
  EXPECT_NE(ArrivalTimes(5, 50.0, 7), ArrivalTimes(5, 50.0, 8));
  EXPECT_EQ(ArrivalTimes(3, 0, 7), std::vector<double>(3, 0.0));  // no rate: all at once
}

TEST(BenchStats, PercentilesInterpolateLikeNumpy) {
  // numpy.percentile([10, 1, 4, 2, 3], [50, 90, 99]) == [3, 7.6, 9.76]
  const std::vector<double> v = {10, 1, 4, 2, 3};
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 3.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 7.6);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 9.76);
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 10.0);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7.0);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0.0);
}

TEST(BenchStats, LatencyStatsAreMillisecondsWithPopulationStd) {
  LatencyStats s = ComputeLatencyStats({0.010, 0.001, 0.004, 0.002, 0.003});
  EXPECT_DOUBLE_EQ(s.mean, 4.0);
  EXPECT_NEAR(s.std, 3.1622776601683795, 1e-12);  // numpy.std (ddof=0)
  EXPECT_NEAR(s.median, 3.0, 1e-12);
  EXPECT_NEAR(s.p50, 3.0, 1e-12);
  EXPECT_NEAR(s.p90, 7.6, 1e-12);
  EXPECT_NEAR(s.p99, 9.76, 1e-12);
}

RequestRecord Ok(double ttft, double latency, std::vector<double> itl, int64_t prompt,
                 int64_t output) {
  RequestRecord r;
  r.success = true;
  r.ttft = ttft;
  r.latency = latency;
  r.itl = std::move(itl);
  r.prompt_tokens = prompt;
  r.output_tokens = output;
  return r;
}

TEST(BenchStats, TpotExcludesTheFirstTokenAndItlPoolsEveryGap) {
  std::vector<RequestRecord> records = {
      Ok(0.100, 0.400, {0.100, 0.100, 0.100}, 10, 4),  // TPOT (0.4 - 0.1) / 3 = 100 ms
      Ok(0.200, 0.250, {0.020, 0.080}, 20, 2),         // TPOT (0.25 - 0.2) / 1 = 50 ms
      Ok(0.050, 0.050, {}, 30, 1),                     // one token: no TPOT
  };
  BenchResult r = ComputeBenchResult(records, 2.0);
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.failed, 0);
  EXPECT_NEAR(r.tpot.mean, 75.0, 1e-9);  // requests with > 1 token: 100 and 50
  EXPECT_NEAR(r.tpot.p50, 75.0, 1e-9);
  EXPECT_NEAR(r.itl.mean, (100 * 3 + 20 + 80) / 5.0, 1e-9);  // 5 gaps pooled
  EXPECT_NEAR(r.itl.p50, 100.0, 1e-9);
  EXPECT_NEAR(r.ttft.mean, (100 + 200 + 50) / 3.0, 1e-9);
  EXPECT_NEAR(r.e2el.p50, 250.0, 1e-9);
  EXPECT_EQ(r.total_input_tokens, 60);
  EXPECT_EQ(r.total_output_tokens, 7);
  EXPECT_DOUBLE_EQ(r.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(r.output_throughput, 3.5);
  EXPECT_DOUBLE_EQ(r.total_token_throughput, 33.5);
}

TEST(BenchStats, FailedRequestsAreCountedWithTheFirstErrorAndExcludedFromMetrics) {
  RequestRecord bad1, bad2;
  bad1.error = "request 1: HTTP 400: {\"error\": ...}";
  bad2.error = "request 2: connection refused";
  bad1.ttft = bad2.ttft = 99;
  bad1.latency = bad2.latency = 99;
  std::vector<RequestRecord> records = {Ok(0.01, 0.02, {0.01}, 5, 2), bad1, bad2};
  BenchResult r = ComputeBenchResult(records, 1.0);
  EXPECT_EQ(r.completed, 1);
  EXPECT_EQ(r.failed, 2);
  EXPECT_EQ(r.first_error, bad1.error);
  EXPECT_NEAR(r.ttft.p99, 10.0, 1e-9);
  EXPECT_NEAR(r.e2el.p99, 20.0, 1e-9);
  EXPECT_EQ(r.total_output_tokens, 2);
}

TEST(BenchStats, JsonHasVllmKeysAndTheReportHasEverySection) {
  std::vector<RequestRecord> records = {Ok(0.01, 0.03, {0.01, 0.01}, 5, 3)};
  BenchResult r = ComputeBenchResult(records, 0.5);
  ServeBenchOptions o;
  o.model = "m";
  o.concurrency = 4;
  nlohmann::json j = BenchResultToJson(r, o);
  for (const char* key :
       {"completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
        "request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms",
        "median_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
        "mean_itl_ms", "p50_itl_ms", "mean_e2el_ms", "p99_e2el_ms", "max_concurrency"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["max_concurrency"], 4);
  EXPECT_TRUE(j["first_error"].is_null());
  EXPECT_NEAR(j["mean_tpot_ms"].get<double>(), 10.0, 1e-9);
  const std::string text = BenchResultToText(r, o);
  for (const char* line :
       {"Successful requests:", "Output token throughput (tok/s):", "Mean TTFT (ms):",
        "P99 TPOT (ms):", "Median ITL (ms):", "P90 E2EL (ms):"}) {
    EXPECT_THAT(text, ::testing::HasSubstr(line));
  }
}

TEST(BenchServe, UnreachableUrlIsAnErrorNamingIt) {
  ServeBenchOptions o;
  o.url = "http://127.0.0.1:1";  // nothing listens on port 1
  o.num_prompts = 1;
  o.progress = false;
  absl::StatusOr<BenchResult> r = RunServeBench(o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("http://127.0.0.1:1"));
}

TEST(BenchServe, BadUrlsAndOptionsAreRejected) {
  ServeBenchOptions o;
  o.progress = false;
  o.url = "https://example.com";
  EXPECT_EQ(RunServeBench(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.url = "127.0.0.1:8000";
  EXPECT_EQ(RunServeBench(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.url = "http://127.0.0.1:99999";
  EXPECT_EQ(RunServeBench(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.url = "http://127.0.0.1:8000";
  o.endpoint = "chat";  // needs a tokenizer
  EXPECT_EQ(RunServeBench(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.endpoint = "completions";
  o.concurrency = 0;
  EXPECT_EQ(RunServeBench(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::api
