// `tessera bench serve`: a load generator and latency meter for any OpenAI-compatible server
// (Tessera, vLLM, SGLang, llama.cpp server, ...), modelled on vLLM's benchmark_serving.py.
//
// It sends `num_prompts` streaming requests with exactly `concurrency` in flight (one HTTP/1.1
// connection per in-flight request, kept alive between that slot's requests), optionally
// released by a Poisson process of `request_rate` requests/s. Prompts are random token ids (like
// vLLM's random dataset) sent as the integer-array `prompt` of /v1/completions, so the input
// length is exact; `max_tokens` = output_len with `ignore_eos` and `min_tokens` (vLLM
// extensions) so every request generates exactly output_len tokens on servers that honour them;
// `stream_options.include_usage` gives the server's token counts.
//
// Definitions (vLLM's): TTFT = request start to the first chunk carrying output; ITL = the gaps
// between consecutive output chunks (all requests pooled); TPOT = per request, (E2E - TTFT) /
// (output tokens - 1), for requests with more than one output token; E2E = request start to the
// end of the stream. Percentiles are numpy's default (linear interpolation). Throughputs divide
// the successful requests' token totals by the benchmark's wall time (first request start to the
// last request end).
//
// Thread safety: RunServeBench runs its own io thread and returns when done; SseParser and the
// statistics functions are plain values / pure functions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace tessera::api {

// Incremental Server-Sent Events parser (WHATWG "event stream interpretation"): lines end with
// CRLF, LF or CR (also split across Feed calls); `data:` lines of one event are joined by '\n';
// the event is dispatched at a blank line (an event with no data is not); comments (':') and
// other fields are ignored; an unterminated event at the end of the stream is dropped.
class SseParser {
 public:
  using Callback = std::function<void(absl::string_view data)>;
  // Parses `bytes` and calls `on_event` with the data of every completed event, in order.
  void Feed(absl::string_view bytes, const Callback& on_event);

 private:
  void Line(absl::string_view line, const Callback& on_event);

  std::string line_;  // the current, unterminated line
  std::string data_;  // data of the current event
  bool has_data_ = false;
  bool skip_lf_ = false;  // the previous chunk ended with CR: a leading LF belongs to it
};

// What one request measured. Times are seconds.
struct RequestRecord {
  bool success = false;
  std::string error;          // first failure: "HTTP 400: {...}", connection errors, ...
  double start = 0;           // since the benchmark start
  double ttft = 0;            // start -> first output chunk
  double latency = 0;         // start -> end of the stream (E2E)
  std::vector<double> itl;    // gaps between consecutive output chunks
  int64_t prompt_tokens = 0;  // usage.prompt_tokens (else the number of ids sent)
  int64_t output_tokens = 0;  // usage.completion_tokens (else the output chunks)
};

struct LatencyStats {
  double mean = 0, std = 0, median = 0, p50 = 0, p90 = 0, p99 = 0;  // milliseconds
};

struct BenchResult {
  std::string model;  // the model benchmarked (--model or discovered)
  int64_t completed = 0;
  int64_t failed = 0;
  std::string first_error;
  double duration_s = 0;
  int64_t total_input_tokens = 0;  // successful requests only (as vLLM)
  int64_t total_output_tokens = 0;
  double request_throughput = 0;      // completed requests / s
  double output_throughput = 0;       // output tokens / s (aggregate decode throughput)
  double total_token_throughput = 0;  // (input + output) tokens / s
  LatencyStats ttft, tpot, itl, e2el;
};

// Release times (seconds after the start) of `n` requests: the first at 0, then a Poisson process
// of `rate` per second (exponential gaps drawn from `seed`), as vLLM; all 0 when rate <= 0.
std::vector<double> ArrivalTimes(int n, double rate, uint64_t seed);

// numpy.percentile(values, p) with the default linear interpolation; 0 for no values.
double Percentile(std::vector<double> values, double p);
// mean, population std (numpy's default), median and p50/p90/p99 of `seconds`, in ms.
LatencyStats ComputeLatencyStats(const std::vector<double>& seconds);
// The report over `records` (failed ones are counted and otherwise ignored).
BenchResult ComputeBenchResult(const std::vector<RequestRecord>& records, double duration_s);

struct ServeBenchOptions {
  std::string url = "http://127.0.0.1:8000";  // server root, or a base ending in /v1
  std::string model;                          // empty: the first id of GET /v1/models
  std::string endpoint = "completions";       // completions | chat
  std::string api_key;                        // Authorization: Bearer (empty: none)
  int concurrency = 1;                        // requests in flight (connections)
  int num_prompts = 100;
  int input_len = 128;
  int output_len = 128;
  double request_rate = 0;     // requests/s of a Poisson arrival process; 0 = all at once
  uint64_t seed = 0;           // prompts and arrival times
  int64_t vocab_size = 32000;  // random ids are uniform in [0, vocab_size)
  std::string tokenizer_dir;   // optional: vocab size from it; needed by --endpoint chat
  double timeout_s = 300;      // a request fails when the server sends nothing for this long
  bool progress = true;        // progress lines on stderr
};

// Runs the benchmark. Errors (not request failures, which are counted): bad options, an
// unreachable URL (named), no model to pick.
absl::StatusOr<BenchResult> RunServeBench(const ServeBenchOptions& options);

// The --json object: options echoed, counts, throughputs and {mean,median,std,p50,p90,p99}_
// {ttft,tpot,itl,e2el}_ms (vLLM's key names).
nlohmann::json BenchResultToJson(const BenchResult& result, const ServeBenchOptions& options);
// The human-readable report (vLLM's layout).
std::string BenchResultToText(const BenchResult& result, const ServeBenchOptions& options);

// `tessera bench serve ...` (argv[0] == "bench").
int RunBenchCommand(int argc, char** argv);

}  // namespace tessera::api
