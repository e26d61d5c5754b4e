// Helpers shared by the tests: test-data paths, random tensors, relative error.
#pragma once

#include <cstdint>
#include <string>

#include <vector>

#include "kernels/base/tensor.h"
#include "worker/attention_batch.h"

namespace tessera::testing {

// ../shared/testdata (TESSERA_TESTDATA overrides).
std::string TestDataDir();
// A fresh empty directory under the test temp dir ($TEST_TMPDIR or /tmp), removed with its
// contents when the test process exits (TESSERA_KEEP_TEST_DIRS=1 keeps it).
std::string MakeTempDir(const std::string& name);
// The built tessera binary (TESSERA_BIN).
std::string TesseraBinary();
// A tiny f32 `make-model` checkpoint of `arch` (preset tiny, seed 5), written once per process
// into a directory named "tiny-<arch>" with '-' for '_' (what serve reports as the model name).
const std::string& TinyModelDir(const std::string& arch = "qwen3_moe");

// Host f32 tensor with values uniform in [lo, hi), deterministic for `seed`.
Tensor RandomTensor(absl::Span<const int64_t> shape, uint64_t seed, float lo = -1.0f,
                    float hi = 1.0f);
// ||a - b|| / ||b|| over all elements (both converted to f32); NaN anywhere gives +inf.
double RelativeError(const Tensor& a, const Tensor& b);

// One sequence of a hand-built step: its KV blocks, tokens already cached, tokens this step.
struct SeqStep {
  std::vector<int32_t> blocks;
  int context = 0;
  int new_tokens = 0;
};
// The AttentionBatch a model runner would build for `seqs` (positions, slots, block tables,
// lengths, query offsets, last rows).
AttentionBatch MakeAttentionBatch(const std::vector<SeqStep>& seqs, int block_size);

}  // namespace tessera::testing
