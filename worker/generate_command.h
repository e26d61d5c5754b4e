// `tessera generate`: one-shot local generation on this machine's CPU.
//
//   tessera generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) --max-tokens N
//       [--temperature T] [--top-p P] [--top-k K] [--seed S] [--threads T] [--json]
//       [--dump-logits FILE.npy] [--block-size B] [--kv-cache-tokens N] [--max-batch-tokens N]
//       [--tp N] [--ep N] [--dp N] [--pp N]
//
// With --tp / --ep / --dp / --pp (tensor / expert / data / pipeline parallelism,
// worker/models/layers.h Shard; they combine: pp stages of max(tp * dp, ep) ranks each) the
// command starts world - 1 more processes of itself on this machine (hidden flags --rank R
// --rendezvous DIR), connects them over Gloo on 127.0.0.1 and runs the generation SPMD; rank 0
// prints the result. With --dp the prompt is rank 0's request and the other data-parallel ranks
// have none: each step they join the MoE layers' dispatch / combine with zero tokens. A rank that fails or dies fails the command (collectives time out after --comm-timeout
// seconds at most).
//
// Loads the checkpoint (progress on stderr when it is a terminal), prefills the prompt, decodes
// until an EOS id of generation_config.json / config.json or --max-tokens. Output: the generated
// ids on stdout, or with --json one object {"prompt_ids", "output_ids", "text" (null: the text
// layer is not linked here), "finish_reason" ("stop" | "length"), "timings" {"load_s",
// "prefill_tokens_per_s", "decode_tokens_per_s", "decode_steps", "decode_s", "decode_comm_s",
// "decode_comm_share" (rank 0's time inside communicator calls / decode time)}, "decode_comm"
// {op: {"calls", "seconds", "bytes"}} (rank 0, decode steps), "rank_weight_bytes" [per world
// rank: the checkpoint bytes each rank's loader read or mapped]}. --dump-logits writes the raw f32 logits of
// every generated position as .npy [steps, vocab_size] (row 0 = logits after the prompt).
// --prompt (text) needs the tokenizer, which this command does not link yet: a clear error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/comm_stats.h"
#include "worker/checkpoint/checkpoint.h"

namespace tessera {

class Communicator;

struct GenerateOptions {
  std::string model_dir;
  std::vector<int32_t> prompt_ids;
  int max_tokens = 16;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;
  int64_t seed = -1;  // < 0: unseeded
  int block_size = 16;
  int64_t kv_cache_tokens = 0;  // 0: prompt + max_tokens
  int max_batch_tokens = 512;   // prefill chunk bound per step
  std::string dump_logits;      // .npy path or empty
  bool progress = false;        // load progress on stderr
  WeightResidency weights = WeightResidency::kCopied;  // --weights copy|mmap
  // Sharding of this process (ModelLoadOptions): world = GenerateWorldSize ranks joined by
  // `comm` (borrowed; required when world > 1); `rank` is the world rank.
  int tp = 1, ep = 1, dp = 1, pp = 1, rank = 0;
  Communicator* comm = nullptr;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> output_ids;
  std::string finish_reason;  // "stop" or "length"
  double load_s = 0;
  double prefill_tokens_per_s = 0;
  double decode_tokens_per_s = 0;
  // Weight bytes each rank read from the checkpoint (Checkpoint::bytes_loaded), by world rank.
  std::vector<int64_t> rank_weight_bytes;
  // Decode phase on this rank: steps, seconds, and time inside communicator calls by op
  // (parallel/comm_stats.h).
  int64_t decode_steps = 0;
  double decode_s = 0;
  CommStats decode_comm{};
};

// Ranks of a layout: pp * max(tp * dp, ep) (worker/models/layers.h Shard).
int GenerateWorldSize(int tp, int ep, int dp, int pp);

// Runs generation as the command does (tests call it directly).
absl::StatusOr<GenerateResult> Generate(const GenerateOptions& options);

// The subcommand (argv[0] is "generate"); returns the exit code.
int RunGenerate(int argc, char** argv);

}  // namespace tessera
