#include "tests/test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <algorithm>
#include <random>
#include <unistd.h>

#include <map>
#include <mutex>
#include <system_error>
#include <vector>

#include "kernels/base/logging.h"
#include "worker/make_model.h"

namespace tessera::testing {

std::string TestDataDir() {
  if (const char* env = std::getenv("TESSERA_TESTDATA")) return env;
  return TESSERA_TESTDATA_DIR;
}

namespace {

// Directories made by MakeTempDir, removed when the test process exits (not by forked children,
// which share the list): without this every run left its checkpoints and logs in /tmp (47 GB
// over two days of CI-like runs here). TESSERA_KEEP_TEST_DIRS=1 keeps them for debugging.
struct TempDirRegistry {
  std::mutex mu;
  pid_t owner = ::getpid();
  std::vector<std::filesystem::path> dirs;

  ~TempDirRegistry() {
    const char* keep = std::getenv("TESSERA_KEEP_TEST_DIRS");
    if (::getpid() != owner || (keep != nullptr && keep[0] == '1')) return;
    std::lock_guard<std::mutex> lock(mu);
    for (const std::filesystem::path& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};

TempDirRegistry& TempDirs() {
  static TempDirRegistry* const registry = [] {
    static TempDirRegistry r;  // destroyed at exit, after the tests
    return &r;
  }();
  return *registry;
}

}  // namespace

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                              ("tessera_test_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  TempDirRegistry& registry = TempDirs();
  std::lock_guard<std::mutex> lock(registry.mu);
  registry.dirs.push_back(dir);
  return dir.string();
}

std::string TesseraBinary() {
  const char* env = std::getenv("TESSERA_BIN");
  return env ? env : "tessera";
}

Tensor RandomTensor(absl::Span<const int64_t> shape, uint64_t seed, float lo, float hi) {
  absl::StatusOr<Tensor> t = Tensor::Empty(shape, DType::kF32);
  CHECK(t.ok());
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t->data<float>();
  for (int64_t i = 0; i < t->numel(); ++i) p[i] = dist(rng);
  return *std::move(t);
}

double RelativeError(const Tensor& a, const Tensor& b) {
  CHECK(a.shape() == b.shape()) << a.DebugString() << " vs " << b.DebugString();
  absl::StatusOr<Tensor> af = a.To(DType::kF32);
  absl::StatusOr<Tensor> bf = b.To(DType::kF32);
  CHECK(af.ok() && bf.ok());
  const float* x = af->data<float>();
  const float* y = bf->data<float>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < af->numel(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return std::numeric_limits<double>::infinity();
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(y[i]) * y[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

const std::string& TinyModelDir(const std::string& arch) {
  static auto* dirs = new std::map<std::string, std::string>();
  static auto* mu = new std::mutex();
  std::lock_guard<std::mutex> lock(*mu);
  auto it = dirs->find(arch);
  if (it != dirs->end()) return it->second;
  std::string name = "tiny-" + arch;
  std::replace(name.begin(), name.end(), '_', '-');
  MakeModelOptions o;
  o.arch = arch;
  o.out_dir = MakeTempDir("model_" + arch) + "/" + name;
  o.preset = "tiny";
  o.dtype = "f32";
  o.seed = 5;
  o.force = true;
  auto r = MakeModel(o);
  CHECK(r.ok()) << r.status();
  return (*dirs)[arch] = o.out_dir;
}

AttentionBatch MakeAttentionBatch(const std::vector<SeqStep>& seqs, int block_size) {
  AttentionBatch b;
  b.num_seqs = static_cast<int>(seqs.size());
  b.block_size = block_size;
  std::vector<int32_t> positions, seq_lens, qsl{0}, last;
  std::vector<int64_t> slots;
  size_t max_blocks = 1;
  for (const SeqStep& s : seqs) max_blocks = std::max(max_blocks, s.blocks.size());
  std::vector<int32_t> tables(seqs.size() * max_blocks, 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqStep& s = seqs[i];
    for (size_t j = 0; j < s.blocks.size(); ++j) tables[i * max_blocks + j] = s.blocks[j];
    for (int t = 0; t < s.new_tokens; ++t) {
      const int pos = s.context + t;
      positions.push_back(pos);
      slots.push_back(int64_t{s.blocks[pos / block_size]} * block_size + pos % block_size);
    }
    seq_lens.push_back(s.context + s.new_tokens);
    qsl.push_back(qsl.back() + s.new_tokens);
    last.push_back(qsl.back() - 1);
  }
  b.num_tokens = qsl.back();
  b.positions = Tensor::FromVector(absl::MakeConstSpan(positions), {b.num_tokens});
  b.slot_mapping = Tensor::FromVector(absl::MakeConstSpan(slots), {b.num_tokens});
  b.block_tables = Tensor::FromVector(absl::MakeConstSpan(tables),
                                      {b.num_seqs, static_cast<int64_t>(max_blocks)});
  b.seq_lens = Tensor::FromVector(absl::MakeConstSpan(seq_lens), {b.num_seqs});
  b.query_start_loc = Tensor::FromVector(absl::MakeConstSpan(qsl), {b.num_seqs + 1});
  b.last_token_rows = Tensor::FromVector(absl::MakeConstSpan(last), {b.num_seqs});
  return b;
}

}  // namespace tessera::testing
