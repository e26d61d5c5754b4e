// Randomized robustness test for the safetensors reader, part of the normal suite.
//
// From a small seed corpus of valid files (written by SafetensorsWriter) it derives a few thousand
// mutated files (byte flips, truncations, bogus header lengths, rewritten numbers, duplicated or
// deleted header spans) and many more mutated headers fed to ParseSafetensorsHeader directly.
// Every input must either be rejected with an error or yield tensors that lie entirely inside the
// file, whose bytes are then all read through View() and ReadBytes(). Deterministic (fixed seed);
// TESSERA_FUZZ_ITERATIONS scales the iteration count for longer local runs (e.g. under ASan).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "worker/checkpoint/safetensors.h"
#include "worker/checkpoint/safetensors_writer.h"

namespace tessera {
namespace {

int Iterations(int base) {
  if (const char* env = std::getenv("TESSERA_FUZZ_ITERATIONS")) {
    return std::max(1, std::atoi(env));
  }
  return base;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::string> SeedCorpus(const std::string& dir) {
  std::vector<std::string> seeds;
  std::mt19937_64 rng(1);
  const std::vector<std::vector<std::pair<DType, Shape>>> layouts = {
      {{DType::kF32, {2, 3}}, {DType::kBF16, {5}}},
      {{DType::kF8E4M3, {4, 4}}, {DType::kF32, {1, 1}}, {DType::kI64, {}}, {DType::kU8, {0}}},
      {{DType::kF16, {3, 1, 2}}},
  };
  for (size_t s = 0; s < layouts.size(); ++s) {
    const std::string path = dir + "/seed" + std::to_string(s) + ".safetensors";
    SafetensorsWriter writer;
    for (size_t i = 0; i < layouts[s].size(); ++i) {
      writer.Declare("model.layers." + std::to_string(i) + ".w", layouts[s][i].first,
                     layouts[s][i].second);
    }
    if (s == 0) writer.SetMetadata("format", "pt");
    EXPECT_TRUE(writer.Open(path).ok());
    for (size_t i = 0; i < layouts[s].size(); ++i) {
      std::vector<uint8_t> bytes(NumElements(layouts[s][i].second) *
                                 DTypeSize(layouts[s][i].first));
      for (auto& b : bytes) b = static_cast<uint8_t>(rng());
      EXPECT_TRUE(
          writer.Write("model.layers." + std::to_string(i) + ".w", bytes.data(), bytes.size())
              .ok());
    }
    EXPECT_TRUE(writer.Close().ok());
    seeds.push_back(ReadFile(path));
  }
  return seeds;
}

// Replaces the digits of a random number in `s` by an interesting value.
void RewriteNumber(std::string& s, std::mt19937_64& rng) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < s.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(s[i])) &&
        (i == 0 || !std::isdigit(static_cast<unsigned char>(s[i - 1])))) {
      starts.push_back(i);
    }
  }
  if (starts.empty()) return;
  const size_t begin = starts[rng() % starts.size()];
  size_t end = begin;
  while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
  static const char* kValues[] = {"0",
                                  "1",
                                  "-1",
                                  "7",
                                  "4294967296",
                                  "18446744073709551615",
                                  "18446744073709551616",
                                  "9223372036854775807",
                                  "1e300",
                                  "2.5",
                                  "99999999999999999999999",
                                  "65536",
                                  "3"};
  std::string value = kValues[rng() % (sizeof(kValues) / sizeof(kValues[0]))];
  if (rng() % 3 == 0 && end - begin <= 18) {
    value = std::to_string(std::stoull(s.substr(begin, end - begin)) + rng() % 9);
  }
  s.replace(begin, end - begin, value);
}

std::string Mutate(const std::string& seed, std::mt19937_64& rng) {
  std::string s = seed;
  const int rounds = 1 + static_cast<int>(rng() % 3);
  for (int r = 0; r < rounds; ++r) {
    // Earlier rounds may have changed the length field or the size: re-derive the header span.
    uint64_t header_len = 0;
    if (s.size() >= 8) {
      for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(s[i]);
    }
    const size_t header_end =
        s.size() < 8 ? s.size()
                     : 8 + static_cast<size_t>(std::min<uint64_t>(header_len, s.size() - 8));
    switch (rng() % 8) {
      case 0:  // flip bytes anywhere
        for (int k = 0; k < 1 + static_cast<int>(rng() % 4) && !s.empty(); ++k) {
          s[rng() % s.size()] ^= static_cast<char>(1 + rng() % 255);
        }
        break;
      case 1:  // flip a byte inside the JSON header
        if (header_end > 8) s[8 + rng() % (header_end - 8)] = static_cast<char>(rng());
        break;
      case 2:  // truncate
        s.resize(rng() % (s.size() + 1));
        break;
      case 3: {  // bogus header length
        uint64_t n = 0;
        switch (rng() % 4) {
          case 0:
            n = header_len + rng() % 17 - 8;
            break;
          case 1:
            n = rng();
            break;
          case 2:
            n = rng() % (s.size() + 16);
            break;
          default:
            n = UINT64_MAX - rng() % 16;
            break;
        }
        if (s.size() >= 8) {
          for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
        }
        break;
      }
      case 4: {  // rewrite a number in the header, keeping the length field consistent
        if (header_end <= 8) break;
        std::string header = s.substr(8, header_end - 8);
        RewriteNumber(header, rng);
        std::string rest = s.substr(header_end);
        s.clear();
        for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(header.size() >> (8 * i)));
        s += header + rest;
        break;
      }
      case 5: {  // duplicate or delete a span of the header
        if (header_end <= 9) break;
        const size_t a = 8 + rng() % (header_end - 8);
        const size_t len = std::min<size_t>(1 + rng() % 40, header_end - a);
        if (rng() % 2) {
          s.insert(a, s.substr(a, len));
        } else {
          s.erase(a, len);
        }
        break;
      }
      case 6:  // append garbage
        for (int k = 0; k < static_cast<int>(rng() % 64); ++k)
          s.push_back(static_cast<char>(rng()));
        break;
      default: {  // swap dtype strings
        static const char* kDtypes[] = {"\"F32\"", "\"BF16\"", "\"F8_E4M3\"", "\"I64\"",
                                        "\"U8\"",  "\"X\"",    "\"\"",        "[]"};
        const size_t pos = s.find("\"dtype\":");
        if (pos != std::string::npos && pos + 8 < header_end) {
          const size_t q = s.find('"', pos + 9);
          if (q != std::string::npos && q < header_end) {
            std::string header = s.substr(8, header_end - 8);
            header.replace(pos + 8 - 8, q + 1 - pos - 8, kDtypes[rng() % 8]);
            std::string rest = s.substr(header_end);
            s.clear();
            for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(header.size() >> (8 * i)));
            s += header + rest;
          }
        }
        break;
      }
    }
  }
  return s;
}

// Checks the invariants of an accepted file and touches every byte of every tensor.
void CheckAccepted(const SafetensorsFile& file) {
  uint64_t previous_end = file.data_offset();
  (void)previous_end;
  for (const TensorInfo& t : file.tensors()) {
    ASSERT_GE(t.data_begin, file.data_offset()) << t.name;
    ASSERT_LE(t.data_begin, t.data_end) << t.name;
    ASSERT_LE(t.data_end, file.file_size()) << t.name;
    ASSERT_EQ(t.nbytes(), static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype)) << t.name;
    absl::StatusOr<Tensor> view = file.View(t.name);
    ASSERT_TRUE(view.ok()) << view.status();
    const uint8_t* p = static_cast<const uint8_t*>(view->raw_data());
    uint64_t sum = 0;
    for (uint64_t i = 0; i < t.nbytes(); ++i) sum += p[i];
    std::vector<uint8_t> copy(t.nbytes());
    ASSERT_TRUE(file.ReadBytes(t.data_begin, copy.data(), copy.size()).ok());
    uint64_t sum2 = 0;
    for (uint8_t b : copy) sum2 += b;
    ASSERT_EQ(sum, sum2) << t.name;
  }
}

TEST(SafetensorsFuzzTest, MutatedFilesNeverCrashOrReadOutOfBounds) {
  const std::string dir = testing::MakeTempDir("st_fuzz");
  const std::vector<std::string> seeds = SeedCorpus(dir);
  std::mt19937_64 rng(20261123);
  const std::string path = dir + "/mutant.safetensors";
  const int iterations = Iterations(3000);
  int accepted = 0;
  for (int i = 0; i < iterations; ++i) {
    const std::string mutant = Mutate(seeds[rng() % seeds.size()], rng);
    WriteFile(path, mutant);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    if (!file.ok()) {
      ASSERT_NE(std::string(file.status().message()).find(path), std::string::npos)
          << "error does not name the file: " << file.status();
      continue;
    }
    ++accepted;
    CheckAccepted(**file);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // The mutations must exercise both outcomes.
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, iterations);
}

TEST(SafetensorsFuzzTest, MutatedHeadersNeverCrash) {
  const std::string dir = testing::MakeTempDir("st_fuzz_headers");
  const std::vector<std::string> seeds = SeedCorpus(dir);
  std::mt19937_64 rng(7);
  const int iterations = Iterations(3000) * 5;
  int accepted = 0;
  for (int i = 0; i < iterations; ++i) {
    const std::string mutant = Mutate(seeds[rng() % seeds.size()], rng);
    if (mutant.size() < 8) continue;
    uint64_t n = 0;
    for (int b = 7; b >= 0; --b) n = (n << 8) | static_cast<uint8_t>(mutant[b]);
    const uint64_t header_len = std::min<uint64_t>(n, mutant.size() - 8);
    const absl::string_view header(mutant.data() + 8, header_len);
    const uint64_t data_size = mutant.size() - 8 - header_len;
    std::vector<TensorInfo> tensors;
    std::map<std::string, std::string> metadata;
    absl::Status s =
        ParseSafetensorsHeader(header, 8 + header_len, data_size, "mem", &tensors, &metadata);
    if (!s.ok()) continue;
    ++accepted;
    for (const TensorInfo& t : tensors) {
      ASSERT_LE(t.data_end, 8 + header_len + data_size);
      ASSERT_EQ(t.nbytes(), static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype));
    }
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace tessera
