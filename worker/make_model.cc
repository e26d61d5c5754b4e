#include "worker/make_model.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/base/flags.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "kernels/ops.h"
#include "worker/make_model_presets.h"
#include "worker/checkpoint/safetensors_writer.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Init = PlannedTensor::Init;

constexpr int64_t kChunkElements = int64_t{1} << 20;
constexpr int64_t kFp8Block = 128;
constexpr float kFp8Max = 448.0f;
constexpr int64_t kMxBlock = kMxfp4BlockSize;  // MXFP4 elements per E8M0 scale (kernels/ops.h)
// The modules the gpt-oss release leaves unquantised (its config.json, verbatim).
const char* const kMxfp4NotConverted[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                          "model.embed_tokens", "lm_head"};

// ---- Deterministic values ----------------------------------------------------------------------

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t TensorSeed(uint64_t seed, absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (char ch : name) {
    h ^= static_cast<uint8_t>(ch);
    h *= 0x100000001b3ull;
  }
  return Mix64(h ^ Mix64(seed + 0x9e3779b97f4a7c15ull));
}

// A normal-like variate from 64 random bits: the Irwin-Hall sum of four 16-bit uniforms,
// standardised (mean 0, variance 1, support +-3.46). Plain arithmetic, identical everywhere.
float Normalish(uint64_t bits) {
  const uint64_t sum = (bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) +
                       (bits >> 48);
  // Each uniform is (k + 0.5) / 65536; the sum is exact in double.
  const double u = (static_cast<double>(sum) + 2.0) * (1.0 / 65536.0);
  return static_cast<float>((u - 2.0) * 1.7320508075688772);
}

// Values of elements [start, start + n) of `tensor`, whose per-tensor seed is `base`.
void FillValues(uint64_t base, const PlannedTensor& tensor, int64_t start, int64_t n, float* out) {
  const float offset = tensor.init == Init::kNorm ? 1.0f : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t bits = Mix64(base + static_cast<uint64_t>(start + i) * 0x9e3779b97f4a7c15ull);
    out[i] = offset + tensor.scale * Normalish(bits);
  }
}

// ---- Config helpers ----------------------------------------------------------------------------

int64_t GetInt(const json& c, const char* key, int64_t fallback) {
  auto it = c.find(key);
  if (it == c.end() || !it->is_number()) return fallback;
  return it->get<int64_t>();
}
bool GetBool(const json& c, const char* key, bool fallback) {
  auto it = c.find(key);
  if (it == c.end() || !it->is_boolean()) return fallback;
  return it->get<bool>();
}
std::string GetString(const json& c, const char* key, const std::string& fallback) {
  auto it = c.find(key);
  if (it == c.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}
absl::StatusOr<int64_t> RequireInt(const json& c, const char* key) {
  int64_t v = GetInt(c, key, -1);
  if (v <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: field '", key, "' missing or not a positive integer"));
  }
  return v;
}

// ---- Planning ----------------------------------------------------------------------------------

class Planner {
 public:
  explicit Planner(DType dtype) : dtype_(dtype) {}

  // A Linear weight [out, in] (or a stacked [experts, a, b] expert weight) with fan-in `fan_in`.
  void Linear(const std::string& name, std::vector<int64_t> shape, int64_t fan_in,
              float gain = 1.0f) {
    PlannedTensor t = Make(name, std::move(shape), Init::kNormal,
                           gain / std::sqrt(static_cast<float>(fan_in)));
    if (dtype_ == DType::kF8E4M3) {
      t.dtype = DType::kF8E4M3;
      t.fp8_quantized = true;
      std::vector<int64_t> scale_shape(t.shape.begin(), t.shape.end());
      size_t n = scale_shape.size();
      scale_shape[n - 2] = (scale_shape[n - 2] + kFp8Block - 1) / kFp8Block;
      scale_shape[n - 1] = (scale_shape[n - 1] + kFp8Block - 1) / kFp8Block;
      tensors_.push_back(std::move(t));
      PlannedTensor s = Make(name + "_scale_inv", std::move(scale_shape), Init::kNormal, 0.0f);
      s.dtype = DType::kF32;
      tensors_.push_back(std::move(s));
    } else {
      tensors_.push_back(std::move(t));
    }
  }
  // A weight never quantised (embeddings, lm_head, router gates, biases, sinks).
  void Plain(const std::string& name, std::vector<int64_t> shape, float scale) {
    tensors_.push_back(Make(name, std::move(shape), Init::kNormal, scale));
  }
  // A gpt-oss stacked expert tensor `source` [E, in, out] (x @ W layout, values seeded by its
  // name) stored as the release's MXFP4 "<source>_blocks" [E, out, in / 32, 16] U8 followed by
  // "<source>_scales" [E, out, in / 32] U8.
  void Mxfp4(const std::string& source, int64_t experts, int64_t in, int64_t out, float scale) {
    PlannedTensor b = Make(source + "_blocks", {experts, out, in / kMxBlock, kMxBlock / 2},
                           Init::kNormal, scale);
    b.dtype = DType::kU8;
    b.mxfp4_quantized = true;
    b.mx_source = source;
    tensors_.push_back(std::move(b));
    PlannedTensor s = Make(source + "_scales", {experts, out, in / kMxBlock}, Init::kNormal, 0.0f);
    s.dtype = DType::kU8;
    tensors_.push_back(std::move(s));
  }
  void Norm(const std::string& name, int64_t width) {
    tensors_.push_back(Make(name, {width}, Init::kNorm, 0.1f));
  }
  // Kept in f32 in every mode, as in the DeepSeek-V3 / GLM-4.5 / MiniMax-M2 releases.
  void F32(const std::string& name, std::vector<int64_t> shape, float scale) {
    PlannedTensor t = Make(name, std::move(shape), Init::kNormal, scale);
    t.dtype = DType::kF32;
    tensors_.push_back(std::move(t));
  }
  void Mlp(const std::string& prefix, int64_t hidden, int64_t inter) {
    Linear(prefix + ".gate_proj.weight", {inter, hidden}, hidden);
    Linear(prefix + ".up_proj.weight", {inter, hidden}, hidden);
    Linear(prefix + ".down_proj.weight", {hidden, inter}, inter, 0.5f);
  }

  std::vector<PlannedTensor> Take() { return std::move(tensors_); }

 private:
  PlannedTensor Make(const std::string& name, std::vector<int64_t> shape, Init init,
                     float scale) const {
    PlannedTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.dtype = dtype_ == DType::kF32 ? DType::kF32 : DType::kBF16;
    t.init = init;
    t.scale = scale;
    return t;
  }

  DType dtype_;
  std::vector<PlannedTensor> tensors_;
};

// ---- Tokenizer ---------------------------------------------------------------------------------

absl::StatusOr<json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": bad JSON"));
  return j;
}

absl::Status WriteTextFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

// Token string -> id of a tokenizer directory, and its size.
struct TokenizerInfo {
  int64_t vocab_size = 0;
  std::map<std::string, int64_t> ids;  // only filled for added tokens / SentencePiece pieces
  json vocab;                          // tokenizer.json model.vocab when it is an object
};

// Reads a varint at p (advancing it); false at the end of input.
bool ReadVarint(const uint8_t*& p, const uint8_t* end, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    uint8_t b = *p++;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

// Pieces of a SentencePiece ModelProto (field 1, each a message whose field 1 is the piece).
absl::StatusOr<std::vector<std::string>> ReadSentencePiecePieces(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data.data());
  const uint8_t* end = p + data.size();
  std::vector<std::string> pieces;
  auto bad = [&] { return absl::InvalidArgumentError(absl::StrCat(path.string(), ": bad proto")); };
  while (p < end) {
    uint64_t tag, len;
    if (!ReadVarint(p, end, &tag)) return bad();
    int wire = tag & 7;
    if (wire == 0) {
      if (!ReadVarint(p, end, &len)) return bad();
    } else if (wire == 1) {
      p += 8;
    } else if (wire == 5) {
      p += 4;
    } else if (wire == 2) {
      if (!ReadVarint(p, end, &len) || len > static_cast<uint64_t>(end - p)) return bad();
      if ((tag >> 3) == 1) {
        const uint8_t* q = p;
        const uint8_t* qend = p + len;
        std::string piece;
        while (q < qend) {
          uint64_t t2, l2;
          if (!ReadVarint(q, qend, &t2)) return bad();
          if ((t2 & 7) == 2) {
            if (!ReadVarint(q, qend, &l2) || l2 > static_cast<uint64_t>(qend - q)) return bad();
            if ((t2 >> 3) == 1) piece.assign(reinterpret_cast<const char*>(q), l2);
            q += l2;
          } else if ((t2 & 7) == 0) {
            if (!ReadVarint(q, qend, &l2)) return bad();
          } else if ((t2 & 7) == 5) {
            q += 4;
          } else if ((t2 & 7) == 1) {
            q += 8;
          } else {
            return bad();
          }
        }
        pieces.push_back(std::move(piece));
      }
      p += len;
    } else {
      return bad();
    }
  }
  return pieces;
}

absl::StatusOr<TokenizerInfo> ReadTokenizer(const fs::path& dir, int64_t flag_vocab) {
  TokenizerInfo info;
  if (fs::exists(dir / "tokenizer.json")) {
    ASSIGN_OR_RETURN(json tok, ReadJsonFile(dir / "tokenizer.json"));
    int64_t max_id = -1;
    if (tok.contains("model") && tok["model"].contains("vocab")) {
      const json& vocab = tok["model"]["vocab"];
      if (vocab.is_object()) {
        for (auto it = vocab.begin(); it != vocab.end(); ++it) {
          if (it.value().is_number()) max_id = std::max(max_id, it.value().get<int64_t>());
        }
        info.vocab = vocab;
      } else if (vocab.is_array()) {  // Unigram: [[piece, score], ...]
        max_id = static_cast<int64_t>(vocab.size()) - 1;
        for (size_t i = 0; i < vocab.size(); ++i) {
          if (vocab[i].is_array() && !vocab[i].empty() && vocab[i][0].is_string()) {
            info.ids[vocab[i][0].get<std::string>()] = static_cast<int64_t>(i);
          }
        }
      }
    }
    if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
      for (const json& t : tok["added_tokens"]) {
        if (!t.contains("id") || !t["id"].is_number()) continue;
        int64_t id = t["id"].get<int64_t>();
        max_id = std::max(max_id, id);
        if (t.contains("content") && t["content"].is_string()) {
          info.ids[t["content"].get<std::string>()] = id;
        }
      }
    }
    info.vocab_size = max_id + 1;
  } else if (fs::exists(dir / "tokenizer.model")) {
    ASSIGN_OR_RETURN(std::vector<std::string> pieces,
                     ReadSentencePiecePieces(dir / "tokenizer.model"));
    for (size_t i = 0; i < pieces.size(); ++i) info.ids[pieces[i]] = static_cast<int64_t>(i);
    info.vocab_size = static_cast<int64_t>(pieces.size());
  } else {
    return absl::NotFoundError(absl::StrCat("--tokenizer ", dir.string(),
                                            ": neither tokenizer.json nor tokenizer.model found"));
  }
  if (flag_vocab > 0) info.vocab_size = flag_vocab;
  if (info.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer ", dir.string(), ": could not find the vocabulary size"));
  }
  return info;
}

std::optional<int64_t> TokenId(const TokenizerInfo& info, const json& token) {
  std::string content;
  if (token.is_string()) {
    content = token.get<std::string>();
  } else if (token.is_object() && token.contains("content") && token["content"].is_string()) {
    content = token["content"].get<std::string>();
  } else {
    return std::nullopt;
  }
  auto it = info.ids.find(content);
  if (it != info.ids.end()) return it->second;
  if (info.vocab.is_object() && info.vocab.contains(content) && info.vocab[content].is_number()) {
    return info.vocab[content].get<int64_t>();
  }
  return std::nullopt;
}

// Copies the tokenizer files and points config's vocab_size / bos / eos at the tokenizer.
absl::Status ApplyTokenizer(const MakeModelOptions& options, json& config) {
  fs::path dir(options.tokenizer_dir);
  ASSIGN_OR_RETURN(TokenizerInfo info, ReadTokenizer(dir, options.tokenizer_vocab));
  config["vocab_size"] = info.vocab_size;
  if (fs::exists(dir / "tokenizer_config.json")) {
    ASSIGN_OR_RETURN(json tc, ReadJsonFile(dir / "tokenizer_config.json"));
    for (const char* key : {"bos", "eos", "pad"}) {
      auto it = tc.find(absl::StrCat(key, "_token"));
      if (it == tc.end()) continue;
      if (std::optional<int64_t> id = TokenId(info, *it)) config[absl::StrCat(key, "_token_id")] = *id;
    }
  }
  // Ids the tokenizer did not name must still lie inside the vocabulary.
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    auto it = config.find(key);
    if (it == config.end()) continue;
    auto fix = [&](json& v) {
      if (v.is_number() && v.get<int64_t>() >= info.vocab_size) v = info.vocab_size - 1;
    };
    if (it->is_array()) {
      for (json& v : *it) fix(v);
    } else {
      fix(*it);
    }
  }
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                           "special_tokens_map.json", "chat_template.jinja"}) {
    if (!fs::exists(dir / file)) continue;
    std::error_code ec;
    fs::copy_file(dir / file, fs::path(options.out_dir) / file,
                  fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("copying ", (dir / file).string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

// ---- Writing -----------------------------------------------------------------------------------

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

class Progress {
 public:
  Progress(bool enabled, int64_t total) : enabled_(enabled), total_(total) {}
  void Add(int64_t bytes, const std::string& name) {
    done_ += bytes;
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200) && done_ < total_) return;
    last_ = now;
    std::fprintf(stderr, "\r\033[K[make-model] %5.1f%%  %.2f / %.2f GB  %s",
                 total_ > 0 ? 100.0 * static_cast<double>(done_) / total_ : 100.0, done_ / 1e9,
                 total_ / 1e9, name.c_str());
    std::fflush(stderr);
  }
  void Finish() {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
  int64_t total_;
  int64_t done_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

// Streams MXFP4 expert blocks [E, out, in / 32, 16] into `shard`, one expert at a time, from the
// values of the stacked source tensor [E, in, out]; the E8M0 scales [E, out, in / 32] are left
// in `scales`.
absl::Status WriteMxfp4Blocks(uint64_t seed, const PlannedTensor& t, SafetensorsWriter& shard,
                              std::vector<uint8_t>& scales, Progress& progress) {
  const int64_t experts = t.shape[0], out = t.shape[1], groups = t.shape[2];
  const int64_t in = groups * kMxBlock;
  PlannedTensor source = t;
  source.name = t.mx_source;
  const uint64_t base = TensorSeed(seed, source.name);
  std::vector<float> values(in * out);
  std::vector<uint8_t> bytes(out * groups * (kMxBlock / 2));
  scales.resize(experts * out * groups);
  float block[kMxBlock];
  uint8_t codes[kMxBlock];
  for (int64_t e = 0; e < experts; ++e) {
    FillValues(base, source, e * in * out, in * out, values.data());  // [in, out]
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t j = 0; j < kMxBlock; ++j) block[j] = values[(g * kMxBlock + j) * out + r];
        scales[(e * out + r) * groups + g] = QuantizeMxfp4Block(block, codes);
        uint8_t* dst = &bytes[(r * groups + g) * (kMxBlock / 2)];
        for (int64_t b = 0; b < kMxBlock / 2; ++b) {
          dst[b] = static_cast<uint8_t>(codes[2 * b] | (codes[2 * b + 1] << 4));
        }
      }
    }
    RETURN_IF_ERROR(shard.Write(t.name, bytes.data(), bytes.size()));
    progress.Add(static_cast<int64_t>(bytes.size()), t.name);
  }
  return absl::OkStatus();
}

// Streams one tensor's data into `shard`. For fp8 tensors the block scales are left in `scales`.
absl::Status WriteTensor(uint64_t seed, const PlannedTensor& t, SafetensorsWriter& shard,
                         std::vector<float>& scales, Progress& progress) {
  const int64_t numel = NumElements(t.shape);
  const uint64_t base = TensorSeed(seed, t.name);
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  if (!t.fp8_quantized) {
    const size_t elem = DTypeSize(t.dtype);
    for (int64_t start = 0; start < numel; start += kChunkElements) {
      const int64_t n = std::min(kChunkElements, numel - start);
      values.resize(n);
      FillValues(base, t, start, n, values.data());
      bytes.resize(n * elem);
      ConvertBuffer(values.data(), DType::kF32, bytes.data(), t.dtype, n);
      RETURN_IF_ERROR(shard.Write(t.name, bytes.data(), bytes.size()));
      progress.Add(static_cast<int64_t>(bytes.size()), t.name);
    }
    return absl::OkStatus();
  }
  // Block-quantised fp8: per matrix (the last two dims), 128 rows at a time.
  const size_t nd = t.shape.size();
  const int64_t rows = t.shape[nd - 2], cols = t.shape[nd - 1];
  const int64_t mats = numel / (rows * cols);
  const int64_t rblocks = (rows + kFp8Block - 1) / kFp8Block;
  const int64_t cblocks = (cols + kFp8Block - 1) / kFp8Block;
  scales.assign(mats * rblocks * cblocks, 1.0f);
  for (int64_t m = 0; m < mats; ++m) {
    for (int64_t rb = 0; rb < rblocks; ++rb) {
      const int64_t r0 = rb * kFp8Block, r1 = std::min(rows, r0 + kFp8Block);
      const int64_t n = (r1 - r0) * cols;
      const int64_t offset = m * rows * cols + r0 * cols;
      values.resize(n);
      FillValues(base, t, offset, n, values.data());
      for (int64_t cb = 0; cb < cblocks; ++cb) {
        const int64_t c0 = cb * kFp8Block, c1 = std::min(cols, c0 + kFp8Block);
        float amax = 0;
        for (int64_t r = 0; r < r1 - r0; ++r) {
          for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(values[r * cols + c]));
        }
        const float scale = amax > 0 ? amax / kFp8Max : 1.0f;
        scales[(m * rblocks + rb) * cblocks + cb] = scale;
        const float inv = 1.0f / scale;
        for (int64_t r = 0; r < r1 - r0; ++r) {
          for (int64_t c = c0; c < c1; ++c) {
            float q = std::clamp(values[r * cols + c] * inv, -kFp8Max, kFp8Max);
            values[r * cols + c] = q;
          }
        }
      }
      bytes.resize(n);
      for (int64_t i = 0; i < n; ++i) bytes[i] = FloatToF8E4M3(values[i]);
      RETURN_IF_ERROR(shard.Write(t.name, bytes.data(), bytes.size()));
      progress.Add(n, t.name);
    }
  }
  return absl::OkStatus();
}

std::string ShardName(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

std::string TorchDtype(DType dtype) { return dtype == DType::kF32 ? "float32" : "bfloat16"; }

// The dtype of a --dtype's unquantised tensors (mxfp4: bf16 beside the MXFP4 experts).
absl::StatusOr<DType> StorageDType(const std::string& flag) {
  if (flag == "mxfp4") return DType::kBF16;
  return ParseDType(flag == "fp8" ? "f8_e4m3" : flag);
}

}  // namespace

const std::vector<std::string>& MakeModelArchitectures() { return make_model::ArchList(); }

uint8_t QuantizeMxfp4Block(const float* values, uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t j = 0; j < kMxBlock; ++j) amax = std::max(amax, std::fabs(values[j]));
  // E8M0 = floor(log2(amax)) - emax(e2m1) + 127, clamped to [0, 254] (255 is NaN).
  int scale = 0;
  if (amax > 0.0f && std::isfinite(amax)) {
    int exp2 = 0;
    std::frexp(amax, &exp2);  // amax = f * 2^exp2, f in [0.5, 1): floor(log2(amax)) = exp2 - 1
    scale = std::clamp(exp2 - 1 - 2 + 127, 0, 254);
  }
  // e2m1 magnitudes are codes 0..7 of kE2M1Values; a value rounds to the nearest, ties to the
  // even code.
  for (int64_t j = 0; j < kMxBlock; ++j) {
    const float v = values[j];
    const float a = std::ldexp(std::fabs(v), 127 - scale);  // exact: a power-of-two scaling
    int best = 7;
    for (int c = 0; c < 7; ++c) {
      const float mid = 0.5f * (kE2M1Values[c] + kE2M1Values[c + 1]);  // exact in f32
      if (a < mid || (a == mid && c % 2 == 0)) {
        best = c;
        break;
      }
    }
    codes[j] = static_cast<uint8_t>(best | (std::signbit(v) ? 8 : 0));
  }
  return static_cast<uint8_t>(scale);
}

float MakeModelValue(uint64_t seed, const PlannedTensor& tensor, int64_t index) {
  float v;
  FillValues(TensorSeed(seed, tensor.name), tensor, index, 1, &v);
  return v;
}

absl::StatusOr<std::vector<PlannedTensor>> PlanTensors(const json& c, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError("make-model dtype must be f32, bf16 or fp8");
  }
  ASSIGN_OR_RETURN(std::string arch, make_model::ArchOfConfig(c));
  ASSIGN_OR_RETURN(const int64_t hidden, RequireInt(c, "hidden_size"));
  const bool mxfp4 = c.contains("quantization_config") && c["quantization_config"].is_object() &&
                     GetString(c["quantization_config"], "quant_method", "") == "mxfp4";
  if (mxfp4) {
    if (arch != "gpt_oss") {
      return absl::InvalidArgumentError(absl::StrCat(
          "quant_method mxfp4 is the gpt-oss release format; make-model cannot write it for ",
          arch));
    }
    if (dtype != DType::kBF16) {
      return absl::InvalidArgumentError("an mxfp4 checkpoint keeps its other tensors in bf16");
    }
  }
  ASSIGN_OR_RETURN(const int64_t layers, RequireInt(c, "num_hidden_layers"));
  ASSIGN_OR_RETURN(const int64_t vocab, RequireInt(c, "vocab_size"));
  ASSIGN_OR_RETURN(const int64_t heads, RequireInt(c, "num_attention_heads"));
  const int64_t kv_heads = GetInt(c, "num_key_value_heads", heads);
  const int64_t head_dim = GetInt(c, "head_dim", hidden / heads);
  const int64_t inter = GetInt(c, "intermediate_size", 0);
  const bool tied = GetBool(c, "tie_word_embeddings", false);
  const float hs = 1.0f / std::sqrt(static_cast<float>(hidden));

  Planner p(dtype);
  // Small next to the layers' outputs (about 0.5 per layer), so that the residual stream is not
  // dominated by the input token: with tied embeddings a large embedding makes every token its
  // own greedy successor.
  p.Plain("model.embed_tokens.weight", {vocab, hidden}, 0.1f);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string l = absl::StrCat("model.layers.", i);
    const std::string a = l + ".self_attn";
    p.Norm(l + ".input_layernorm.weight", hidden);

    // ---- Attention.
    if (arch == "deepseek_v3") {
      ASSIGN_OR_RETURN(const int64_t nope, RequireInt(c, "qk_nope_head_dim"));
      ASSIGN_OR_RETURN(const int64_t rope, RequireInt(c, "qk_rope_head_dim"));
      ASSIGN_OR_RETURN(const int64_t v_dim, RequireInt(c, "v_head_dim"));
      ASSIGN_OR_RETURN(const int64_t kv_lora, RequireInt(c, "kv_lora_rank"));
      const int64_t q_lora = GetInt(c, "q_lora_rank", 0);
      if (q_lora > 0) {
        p.Linear(a + ".q_a_proj.weight", {q_lora, hidden}, hidden);
        p.Norm(a + ".q_a_layernorm.weight", q_lora);
        p.Linear(a + ".q_b_proj.weight", {heads * (nope + rope), q_lora}, q_lora);
      } else {
        p.Linear(a + ".q_proj.weight", {heads * (nope + rope), hidden}, hidden);
      }
      p.Linear(a + ".kv_a_proj_with_mqa.weight", {kv_lora + rope, hidden}, hidden);
      p.Norm(a + ".kv_a_layernorm.weight", kv_lora);
      p.Linear(a + ".kv_b_proj.weight", {heads * (nope + v_dim), kv_lora}, kv_lora);
      p.Linear(a + ".o_proj.weight", {hidden, heads * v_dim}, heads * v_dim, 0.5f);
    } else {
      const int64_t q_out = heads * head_dim, kv_out = kv_heads * head_dim;
      bool qkv_bias = false, o_bias = false;
      if (arch == "qwen2_moe") qkv_bias = GetBool(c, "qkv_bias", true);
      if (arch == "glm4_moe") qkv_bias = GetBool(c, "attention_bias", false);
      if (arch == "gpt_oss" || arch == "llama" || arch == "qwen3" || arch == "qwen3_moe") {
        qkv_bias = o_bias = GetBool(c, "attention_bias", false);
      }
      p.Linear(a + ".q_proj.weight", {q_out, hidden}, hidden);
      if (qkv_bias) p.Plain(a + ".q_proj.bias", {q_out}, 0.1f);
      p.Linear(a + ".k_proj.weight", {kv_out, hidden}, hidden);
      if (qkv_bias) p.Plain(a + ".k_proj.bias", {kv_out}, 0.1f);
      p.Linear(a + ".v_proj.weight", {kv_out, hidden}, hidden);
      if (qkv_bias) p.Plain(a + ".v_proj.bias", {kv_out}, 0.1f);
      p.Linear(a + ".o_proj.weight", {hidden, q_out}, q_out, 0.5f);
      if (o_bias) p.Plain(a + ".o_proj.bias", {hidden}, 0.05f);
      if (arch == "qwen3" || arch == "qwen3_moe" ||
          (arch == "glm4_moe" && GetBool(c, "use_qk_norm", false))) {
        p.Norm(a + ".q_norm.weight", head_dim);
        p.Norm(a + ".k_norm.weight", head_dim);
      }
      if (arch == "minimax_m2" && GetBool(c, "use_qk_norm", true)) {
        p.Norm(a + ".q_norm.weight", q_out);  // qk_norm_type per_layer: over all heads
        p.Norm(a + ".k_norm.weight", kv_out);
      }
      if (arch == "gpt_oss") p.Plain(a + ".sinks", {heads}, 0.5f);
    }
    p.Norm(l + ".post_attention_layernorm.weight", hidden);

    // ---- MLP / MoE.
    const std::string m = l + ".mlp";
    if (arch == "llama" || arch == "qwen3") {
      p.Mlp(m, hidden, inter);
    } else if (arch == "qwen3_moe" || arch == "qwen2_moe") {
      ASSIGN_OR_RETURN(const int64_t experts, RequireInt(c, "num_experts"));
      ASSIGN_OR_RETURN(const int64_t moe_inter, RequireInt(c, "moe_intermediate_size"));
      const int64_t step = std::max<int64_t>(1, GetInt(c, "decoder_sparse_step", 1));
      bool mlp_only = false;
      if (c.contains("mlp_only_layers") && c["mlp_only_layers"].is_array()) {
        for (const json& v : c["mlp_only_layers"]) mlp_only |= v.is_number() && v == i;
      }
      if (mlp_only || (i + 1) % step != 0) {
        p.Mlp(m, hidden, inter);
      } else {
        p.Plain(m + ".gate.weight", {experts, hidden}, hs);
        for (int64_t e = 0; e < experts; ++e) {
          p.Mlp(absl::StrCat(m, ".experts.", e), hidden, moe_inter);
        }
        if (arch == "qwen2_moe") {
          int64_t shared = GetInt(c, "shared_expert_intermediate_size", 0);
          if (shared > 0) {
            p.Mlp(m + ".shared_expert", hidden, shared);
            p.Plain(m + ".shared_expert_gate.weight", {1, hidden}, hs);
          }
        }
      }
    } else if (arch == "deepseek_v3" || arch == "glm4_moe") {
      ASSIGN_OR_RETURN(const int64_t experts, RequireInt(c, "n_routed_experts"));
      ASSIGN_OR_RETURN(const int64_t moe_inter, RequireInt(c, "moe_intermediate_size"));
      const int64_t first_dense = GetInt(c, "first_k_dense_replace", 0);
      const int64_t freq = std::max<int64_t>(1, GetInt(c, "moe_layer_freq", 1));
      if (i < first_dense || i % freq != 0) {
        p.Mlp(m, hidden, inter);
      } else {
        p.Plain(m + ".gate.weight", {experts, hidden}, hs);
        if (arch == "glm4_moe" || GetString(c, "topk_method", "noaux_tc") == "noaux_tc") {
          p.F32(m + ".gate.e_score_correction_bias", {experts}, 0.1f);
        }
        for (int64_t e = 0; e < experts; ++e) {
          p.Mlp(absl::StrCat(m, ".experts.", e), hidden, moe_inter);
        }
        const int64_t shared = GetInt(c, "n_shared_experts", 0);
        if (shared > 0) p.Mlp(m + ".shared_experts", hidden, moe_inter * shared);
      }
    } else if (arch == "mixtral" || arch == "minimax_m2") {
      const std::string b = l + ".block_sparse_moe";
      ASSIGN_OR_RETURN(const int64_t experts, RequireInt(c, "num_local_experts"));
      p.Plain(b + ".gate.weight", {experts, hidden}, hs);
      if (arch == "minimax_m2" && GetBool(c, "use_routing_bias", true)) {
        p.F32(b + ".e_score_correction_bias", {experts}, 0.1f);
      }
      for (int64_t e = 0; e < experts; ++e) {
        const std::string x = absl::StrCat(b, ".experts.", e);
        p.Linear(x + ".w1.weight", {inter, hidden}, hidden);
        p.Linear(x + ".w2.weight", {hidden, inter}, inter, 0.5f);
        p.Linear(x + ".w3.weight", {inter, hidden}, hidden);
      }
    } else if (arch == "gpt_oss") {
      ASSIGN_OR_RETURN(const int64_t experts, RequireInt(c, "num_local_experts"));
      p.Plain(m + ".router.weight", {experts, hidden}, hs);
      p.Plain(m + ".router.bias", {experts}, 0.1f);
      // HF GptOssExperts layout (the bf16 modelling class, not the release's MXFP4 blocks):
      // [experts, in, out], gate/up interleaved on the last dim. These are stacked parameters,
      // not nn.Linear, so --dtype fp8 leaves them bf16 (as the release leaves them out of fp8).
      const float hs_inter = 0.5f / std::sqrt(static_cast<float>(inter));
      if (mxfp4) {
        // The release format: the same values, stored per expert as [out, in] MXFP4 rows.
        const std::pair<const char*, int64_t> sizes[] = {{"hidden_size", hidden},
                                                          {"intermediate_size", inter}};
        for (const auto& [field, size] : sizes) {
          if (size % kMxBlock != 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                "mxfp4: config field '", field, "' (", size, ") must be a multiple of ",
                kMxBlock, " (the MX block size; intermediate_size is gpt-oss's expert width)"));
          }
        }
        p.Mxfp4(m + ".experts.gate_up_proj", experts, hidden, 2 * inter, hs);
        p.Plain(m + ".experts.gate_up_proj_bias", {experts, 2 * inter}, 0.05f);
        p.Mxfp4(m + ".experts.down_proj", experts, inter, hidden, hs_inter);
        p.Plain(m + ".experts.down_proj_bias", {experts, hidden}, 0.05f);
      } else {
        p.Plain(m + ".experts.gate_up_proj", {experts, hidden, 2 * inter}, hs);
        p.Plain(m + ".experts.gate_up_proj_bias", {experts, 2 * inter}, 0.05f);
        p.Plain(m + ".experts.down_proj", {experts, inter, hidden}, hs_inter);
        p.Plain(m + ".experts.down_proj_bias", {experts, hidden}, 0.05f);
      }
    }
  }
  p.Norm("model.norm.weight", hidden);
  if (!tied) p.Plain("lm_head.weight", {vocab, hidden}, hs);
  return p.Take();
}

absl::StatusOr<json> BuildMakeModelConfig(const MakeModelOptions& options) {
  json config;
  if (!options.from_config.empty()) {
    ASSIGN_OR_RETURN(json real, ReadJsonFile(options.from_config));
    if (!real.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--from-config ", options.from_config, ": not a JSON object"));
    }
    ASSIGN_OR_RETURN(std::string arch, make_model::ArchOfConfig(real));
    if (!options.arch.empty() && options.arch != arch) {
      return absl::InvalidArgumentError(absl::StrCat("--arch ", options.arch, " but ",
                                                     options.from_config, " is a ", arch));
    }
    ASSIGN_OR_RETURN(config, make_model::ScaleConfig(real, options.layers, options.experts,
                                                     options.hidden));
  } else {
    if (options.arch.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--arch is required; valid: ", absl::StrJoin(make_model::ArchList(), ", ")));
    }
    ASSIGN_OR_RETURN(config, make_model::PresetConfig(options.arch, options.preset));
  }
  const bool mxfp4 = options.dtype == "mxfp4";
  ASSIGN_OR_RETURN(DType dtype, StorageDType(options.dtype));
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype ", options.dtype, ": valid are f32, bf16, fp8, mxfp4"));
  }
  if (mxfp4) {
    ASSIGN_OR_RETURN(const std::string arch, make_model::ArchOfConfig(config));
    if (arch != "gpt_oss") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--dtype mxfp4 is the gpt-oss release format (MXFP4 routed experts); --arch ", arch,
          " has no MXFP4 release: use bf16 or fp8"));
    }
    const int64_t hidden = GetInt(config, "hidden_size", 0);
    const int64_t inter = GetInt(config, "intermediate_size", 0);
    const std::pair<const char*, int64_t> sizes[] = {{"hidden_size", hidden},
                                                      {"intermediate_size", inter}};
    for (const auto& [field, size] : sizes) {
      if (size <= 0 || size % kMxBlock != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--dtype mxfp4: config field '", field, "' is ", size, ", not a multiple of ",
            kMxBlock, " (MXFP4 scales blocks of 32 along each expert row; gpt-oss's "
            "intermediate_size is its moe_intermediate_size). Pick --hidden so that both are"));
      }
    }
  }
  config["torch_dtype"] = TorchDtype(dtype);
  // MiniMax-M2 states partial RoPE only as the legacy `rotary_dim`, which transformers' in-tree
  // MiniMaxM2Config (5.x before huggingface/transformers#48486) ignores, rotating the whole head.
  // Writing the equivalent standard field too makes every loader apply the same RoPE.
  if (config.value("model_type", "") == "minimax_m2" && config.contains("rotary_dim") &&
      config["rotary_dim"].is_number() && config.contains("head_dim") &&
      config["head_dim"].is_number() && !config.contains("partial_rotary_factor")) {
    config["partial_rotary_factor"] =
        config["rotary_dim"].get<double>() / config["head_dim"].get<double>();
  }
  if (mxfp4) {
    config["quantization_config"] = {
        {"modules_to_not_convert", std::vector<std::string>(std::begin(kMxfp4NotConverted),
                                                            std::end(kMxfp4NotConverted))},
        {"quant_method", "mxfp4"}};
  } else if (dtype == DType::kF8E4M3) {
    config["quantization_config"] = {{"quant_method", "fp8"},
                                     {"fmt", "e4m3"},
                                     {"activation_scheme", "dynamic"},
                                     {"weight_block_size", {kFp8Block, kFp8Block}}};
  } else {
    config.erase("quantization_config");
  }
  return config;
}

absl::StatusOr<MakeModelResult> MakeModel(const MakeModelOptions& options) {
  if (options.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  ASSIGN_OR_RETURN(json config, BuildMakeModelConfig(options));
  ASSIGN_OR_RETURN(const std::string arch, make_model::ArchOfConfig(config));
  ASSIGN_OR_RETURN(DType dtype, StorageDType(options.dtype));

  const fs::path out(options.out_dir);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) {
      return absl::AlreadyExistsError(absl::StrCat("--out ", out.string(), " is not a directory"));
    }
    if (!fs::is_empty(out, ec) && !options.force) {
      return absl::AlreadyExistsError(absl::StrCat(
          "--out ", out.string(), " exists and is not empty (pass --force to write into it)"));
    }
  }
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out.string(), ": ", ec.message()));

  if (!options.tokenizer_dir.empty()) RETURN_IF_ERROR(ApplyTokenizer(options, config));
  ASSIGN_OR_RETURN(std::vector<PlannedTensor> tensors, PlanTensors(config, dtype));

  // generation_config.json: the ids the config names.
  json gen = {{"_from_model_config", true}};
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (config.contains(key) && !config[key].is_null()) gen[key] = config[key];
  }
  gen["transformers_version"] = GetString(config, "transformers_version", "4.51.0");
  RETURN_IF_ERROR(WriteTextFile(out / "config.json", config.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteTextFile(out / "generation_config.json", gen.dump(2) + "\n"));

  // Shards: consecutive tensors up to max_shard_bytes each (a weight stays with its scales).
  MakeModelResult result;
  result.out_dir = out.string();
  result.arch = arch;
  std::vector<std::vector<size_t>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t numel = NumElements(tensors[i].shape);
    const int64_t bytes = numel * static_cast<int64_t>(DTypeSize(tensors[i].dtype));
    const bool is_scale =
        i > 0 && (tensors[i - 1].fp8_quantized || tensors[i - 1].mxfp4_quantized);
    if (!is_scale) result.num_parameters += tensors[i].mxfp4_quantized ? 2 * numel : numel;
    if (!is_scale && shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
    total += bytes;
  }
  result.bytes = total;

  Progress progress(options.progress && ::isatty(2), total);
  std::map<std::string, std::string> weight_map;
  std::vector<float> scales;
  std::vector<uint8_t> mx_scales;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = ShardName(s, shards.size());
    SafetensorsWriter writer;
    for (size_t i : shards[s]) {
      writer.Declare(tensors[i].name, tensors[i].dtype, Shape(tensors[i].shape.begin(),
                                                              tensors[i].shape.end()));
    }
    writer.SetMetadata("format", "pt");
    RETURN_IF_ERROR(writer.Open((out / file).string()));
    for (size_t i : shards[s]) {
      const PlannedTensor& t = tensors[i];
      if (i > 0 && tensors[i - 1].fp8_quantized) {  // the scales of the previous tensor
        RETURN_IF_ERROR(writer.Write(t.name, scales.data(), scales.size() * sizeof(float)));
        progress.Add(static_cast<int64_t>(scales.size() * sizeof(float)), t.name);
      } else if (i > 0 && tensors[i - 1].mxfp4_quantized) {  // E8M0 scales of the blocks
        RETURN_IF_ERROR(writer.Write(t.name, mx_scales.data(), mx_scales.size()));
        progress.Add(static_cast<int64_t>(mx_scales.size()), t.name);
      } else if (t.mxfp4_quantized) {
        RETURN_IF_ERROR(Annotate(WriteMxfp4Blocks(options.seed, t, writer, mx_scales, progress),
                                 absl::StrCat("writing ", t.name, " to ", file)));
      } else {
        RETURN_IF_ERROR(Annotate(WriteTensor(options.seed, t, writer, scales, progress),
                                 absl::StrCat("writing ", t.name, " to ", file)));
      }
      weight_map[t.name] = file;
    }
    RETURN_IF_ERROR(writer.Close());
    result.files.push_back(file);
  }
  if (shards.size() > 1) {
    const std::string index = "model.safetensors.index.json";
    RETURN_IF_ERROR(WriteSafetensorsIndex((out / index).string(), weight_map,
                                          static_cast<uint64_t>(total)));
    result.files.push_back(index);
  }
  progress.Finish();
  result.files.insert(result.files.begin(), {"config.json", "generation_config.json"});
  return result;
}

int RunMakeModel(int argc, char** argv) {
  MakeModelOptions o;
  int64_t seed = 0;
  bool json_out = false;
  FlagParser parser("make-model",
                    "Writes a deterministic random-weight checkpoint in the Hugging Face layout.");
  parser.AddString("arch", &o.arch, absl::StrCat(absl::StrJoin(make_model::ArchList(), "|")));
  parser.AddString("out", &o.out_dir, "output directory");
  parser.AddString("preset", &o.preset, "tiny | small | bench (bench: qwen3_moe only)");
  parser.AddInt("seed", &seed, "random seed");
  parser.AddString("dtype", &o.dtype,
                   "f32 | bf16 | fp8 (128x128 block scales) | mxfp4 (gpt_oss: MXFP4 experts as "
                   "released)");
  parser.AddString("tokenizer", &o.tokenizer_dir, "copy this tokenizer; vocab/bos/eos from it");
  parser.AddInt("tokenizer-vocab", &o.tokenizer_vocab,
                "vocabulary size to use with --tokenizer (default: read from the tokenizer)");
  parser.AddString("from-config", &o.from_config, "scale down this real config.json");
  parser.AddInt("layers", &o.layers, "with --from-config: number of layers");
  parser.AddInt("experts", &o.experts, "with --from-config: number of routed experts");
  parser.AddInt("hidden", &o.hidden, "with --from-config: hidden size");
  parser.AddBool("force", &o.force, "write into a non-empty --out");
  parser.AddBool("json", &json_out, "print the result as JSON");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    o.seed = static_cast<uint64_t>(seed);
    o.progress = true;
    if (o.from_config.empty() &&
        (parser.WasSet("layers") || parser.WasSet("experts") || parser.WasSet("hidden"))) {
      return absl::InvalidArgumentError("--layers/--experts/--hidden need --from-config");
    }
    if (!o.from_config.empty() && parser.WasSet("preset")) {
      return absl::InvalidArgumentError("--preset and --from-config are exclusive");
    }
    ASSIGN_OR_RETURN(MakeModelResult r, MakeModel(o));
    if (json_out) {
      json j = {{"out", r.out_dir},
                {"arch", r.arch},
                {"num_parameters", r.num_parameters},
                {"bytes", r.bytes},
                {"files", r.files}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("wrote %s: %s, %lld parameters, %.3f GB in %zu files (%s)\n", r.out_dir.c_str(),
                  r.arch.c_str(), static_cast<long long>(r.num_parameters), r.bytes / 1e9,
                  r.files.size(), absl::StrJoin(r.files, ", ").c_str());
    }
    return absl::OkStatus();
  });
}

}  // namespace tessera
