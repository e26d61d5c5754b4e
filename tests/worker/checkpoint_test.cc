// Tests for Checkpoint (worker/checkpoint/checkpoint.h): single-file, sharded-with-index and
// index-less directories, lookup errors, GetChecked / GetAs, and ReadSlice along every dim with
// bytes_read proving that only the slice is fetched.
#include "worker/checkpoint/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "worker/checkpoint/safetensors_writer.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

struct NamedTensor {
  std::string name;
  Tensor tensor;  // contiguous host tensor
};

// A host tensor of `dtype` with random contents (floats in [-1, 1) converted; ints random).
Tensor RandomOf(absl::Span<const int64_t> shape, DType dtype, uint64_t seed) {
  Tensor f = testing::RandomTensor(shape, seed);
  absl::StatusOr<Tensor> t = f.To(dtype);
  CHECK(t.ok());
  return *t;
}

void WriteShard(const std::string& path, const std::vector<NamedTensor>& tensors) {
  SafetensorsWriter writer;
  for (const auto& t : tensors) writer.Declare(t.name, t.tensor.dtype(), t.tensor.shape());
  writer.SetMetadata("format", "pt");
  ASSERT_TRUE(writer.Open(path).ok());
  for (const auto& t : tensors) ASSERT_TRUE(writer.WriteTensor(t.name, t.tensor).ok());
  ASSERT_TRUE(writer.Close().ok());
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  if (a.numel() == 0) return true;  // nothing to compare (and no data pointers to pass)
  absl::StatusOr<Tensor> ac = a.Clone();
  absl::StatusOr<Tensor> bc = b.Clone();
  CHECK(ac.ok() && bc.ok());
  return std::memcmp(ac->raw_data(), bc->raw_data(), ac->nbytes()) == 0;
}

// Three shards + index, with layer-0 tensors split across shards.
std::string MakeShardedDir(std::vector<NamedTensor>* all) {
  const std::string dir = testing::MakeTempDir("ckpt_sharded");
  std::vector<NamedTensor> s1 = {
      {"model.embed_tokens.weight", RandomOf({13, 8}, DType::kBF16, 1)},
      {"model.layers.0.mlp.gate.weight", RandomOf({8, 64}, DType::kF32, 2)}};
  std::vector<NamedTensor> s2 = {
      {"model.layers.0.mlp.experts.w", RandomOf({6, 5, 7}, DType::kF16, 3)},
      {"model.layers.0.input_layernorm.weight", RandomOf({8}, DType::kBF16, 4)}};
  std::vector<NamedTensor> s3 = {{"lm_head.weight", RandomOf({13, 8}, DType::kF32, 5)}};
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  const std::vector<std::pair<std::string, std::vector<NamedTensor>*>> shards = {
      {"model-00001-of-00003.safetensors", &s1},
      {"model-00002-of-00003.safetensors", &s2},
      {"model-00003-of-00003.safetensors", &s3}};
  for (const auto& [file, tensors] : shards) {
    WriteShard(dir + "/" + file, *tensors);
    for (const auto& t : *tensors) {
      weight_map[t.name] = file;
      total += t.tensor.nbytes();
      all->push_back(t);
    }
  }
  EXPECT_TRUE(WriteSafetensorsIndex(dir + "/model.safetensors.index.json", weight_map, total).ok());
  return dir;
}

TEST(CheckpointTest, OpensSingleModelSafetensors) {
  const std::string dir = testing::MakeTempDir("ckpt_single");
  std::vector<NamedTensor> tensors = {{"a", RandomOf({3, 4}, DType::kF32, 1)},
                                      {"b", RandomOf({5}, DType::kBF16, 2)}};
  WriteShard(dir + "/model.safetensors", tensors);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->TensorNames(), (std::vector<std::string>{"a", "b"}));
  for (const auto& t : tensors) {
    auto got = (*ckpt)->Get(t.name);
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(SameBytes(*got, t.tensor)) << t.name;
  }
  EXPECT_EQ((*ckpt)->dir(), dir);
}

TEST(CheckpointTest, UnusedTensorNamesShrinkAsTensorsAreReadOrInspected) {
  const std::string dir = testing::MakeTempDir("ckpt_unused");
  WriteShard(dir + "/model.safetensors", {{"a", RandomOf({3, 4}, DType::kF32, 1)},
                                          {"b", RandomOf({5}, DType::kBF16, 2)},
                                          {"c", RandomOf({2, 2}, DType::kF32, 3)}});
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->UnusedTensorNames(), (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_TRUE((*ckpt)->Get("b").ok());
  EXPECT_FALSE((*ckpt)->Get("missing").ok());
  EXPECT_EQ((*ckpt)->UnusedTensorNames(), (std::vector<std::string>{"a", "c"}));
  ASSERT_TRUE((*ckpt)->Info("c").ok());
  ASSERT_TRUE((*ckpt)->GetSlice("a", 0, 0, 2).ok());
  EXPECT_EQ((*ckpt)->UnusedTensorNames(), std::vector<std::string>{});
}

TEST(CheckpointTest, FollowsTheIndexOfAShardedCheckpoint) {
  std::vector<NamedTensor> all;
  const std::string dir = MakeShardedDir(&all);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->files().size(), 3u);
  EXPECT_EQ((*ckpt)->TensorNames().size(), all.size());
  for (const auto& t : all) {
    ASSERT_TRUE((*ckpt)->Has(t.name));
    auto got = (*ckpt)->Get(t.name);
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(SameBytes(*got, t.tensor)) << t.name;
  }
  auto info = (*ckpt)->Info("lm_head.weight");
  ASSERT_TRUE(info.ok());
  EXPECT_THAT((*info)->file, HasSubstr("model-00003-of-00003.safetensors"));
}

TEST(CheckpointTest, OpensSeveralFilesWithoutAnIndex) {
  const std::string dir = testing::MakeTempDir("ckpt_noindex");
  WriteShard(dir + "/part-a.safetensors", {{"x", RandomOf({2, 2}, DType::kF32, 1)}});
  WriteShard(dir + "/part-b.safetensors", {{"y", RandomOf({3}, DType::kF32, 2)}});
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->Has("x"));
  EXPECT_TRUE((*ckpt)->Has("y"));
}

TEST(CheckpointTest, DuplicateTensorAcrossFilesWithoutIndexIsAnError) {
  const std::string dir = testing::MakeTempDir("ckpt_dup");
  WriteShard(dir + "/a.safetensors", {{"x", RandomOf({2}, DType::kF32, 1)}});
  WriteShard(dir + "/b.safetensors", {{"x", RandomOf({2}, DType::kF32, 2)}});
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("'x'"));
}

TEST(CheckpointTest, IndexNamingAMissingShardIsNotFound) {
  std::vector<NamedTensor> all;
  const std::string dir = MakeShardedDir(&all);
  std::filesystem::remove(dir + "/model-00002-of-00003.safetensors");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("model-00002-of-00003.safetensors"));
}

TEST(CheckpointTest, IndexTensorAbsentFromItsShardIsAnError) {
  const std::string dir = testing::MakeTempDir("ckpt_badindex");
  WriteShard(dir + "/s1.safetensors", {{"a", RandomOf({2}, DType::kF32, 1)}});
  WriteShard(dir + "/s2.safetensors", {{"b", RandomOf({2}, DType::kF32, 2)}});
  ASSERT_TRUE(WriteSafetensorsIndex(dir + "/model.safetensors.index.json",
                                    {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}, 16)
                  .ok());
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("'b'"));
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("s1.safetensors"));
}

TEST(CheckpointTest, MalformedIndexIsAnErrorNamingIt) {
  const std::string dir = testing::MakeTempDir("ckpt_badjson");
  WriteShard(dir + "/s1.safetensors", {{"a", RandomOf({2}, DType::kF32, 1)}});
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": [";
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("model.safetensors.index.json"));
}

TEST(CheckpointTest, EmptyOrMissingDirectoryIsNotFound) {
  EXPECT_EQ(Checkpoint::Open(testing::MakeTempDir("ckpt_empty")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Checkpoint::Open("/nonexistent/ckpt").status().code(), absl::StatusCode::kNotFound);
}

TEST(CheckpointTest, MissingTensorMessageNamesTensorAndDirectory) {
  std::vector<NamedTensor> all;
  const std::string dir = MakeShardedDir(&all);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  auto info = (*ckpt)->Info("model.norm.weight");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(info.status().message(), "tensor 'model.norm.weight' not found in checkpoint " + dir);
  EXPECT_FALSE((*ckpt)->Get("model.norm.weight").ok());
  EXPECT_FALSE((*ckpt)->Has("model.norm.weight"));
}

TEST(CheckpointTest, GetCheckedReportsShapeMismatchWithFileAndShapes) {
  std::vector<NamedTensor> all;
  const std::string dir = MakeShardedDir(&all);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  const std::vector<int64_t> ok_shape = {8, 64};
  EXPECT_TRUE((*ckpt)->GetChecked("model.layers.0.mlp.gate.weight", ok_shape).ok());
  const std::vector<int64_t> wrong = {16, 64};
  auto bad = (*ckpt)->GetChecked("model.layers.0.mlp.gate.weight", wrong);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "tensor 'model.layers.0.mlp.gate.weight' in " + dir +
                "/model-00001-of-00003.safetensors has shape [8, 64], expected [16, 64]");
}

TEST(CheckpointTest, GetCheckedReportsDtypeMismatch) {
  std::vector<NamedTensor> all;
  const std::string dir = MakeShardedDir(&all);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  const std::vector<int64_t> shape = {8, 64};
  auto bad = (*ckpt)->GetChecked("model.layers.0.mlp.gate.weight", shape, DType::kBF16);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("dtype f32, expected bf16"));
}

TEST(CheckpointTest, GetAsConvertsAndCountsBytes) {
  std::vector<NamedTensor> all;
  const std::string dir = MakeShardedDir(&all);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->bytes_read(), 0u);
  auto norm = (*ckpt)->GetAs("model.layers.0.input_layernorm.weight", DType::kF32);
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->dtype(), DType::kF32);
  Tensor expected = *all[3].tensor.To(DType::kF32);
  EXPECT_EQ(testing::RelativeError(*norm, expected), 0.0);
  EXPECT_EQ((*ckpt)->bytes_read(), 8u * 2);
}

// ---- ReadSlice ----------------------------------------------------------------------------------

struct SliceCase {
  int dim;
  int64_t start, end;
};

class CheckpointSliceTest : public ::testing::TestWithParam<SliceCase> {};

TEST_P(CheckpointSliceTest, SliceEqualsSliceOfFullTensorAndReadsOnlyIt) {
  const SliceCase c = GetParam();
  const std::string dir = testing::MakeTempDir("ckpt_slice");
  const Tensor full = RandomOf({5, 7, 9}, DType::kBF16, 42);
  WriteShard(dir + "/model.safetensors",
             {{"pad", RandomOf({3}, DType::kF32, 1)}, {"w", full}, {"tail", full}});
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  auto slice = (*ckpt)->ReadSlice("w", c.dim, c.start, c.end);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_TRUE(slice->is_contiguous());
  EXPECT_TRUE(SameBytes(*slice, full.Slice(c.dim, c.start, c.end)));
  EXPECT_EQ((*ckpt)->bytes_read(), slice->nbytes());
  // The scratch variant reads the same bytes into heap memory and counts them too.
  auto scratch = (*ckpt)->ReadSliceScratch("w", c.dim, c.start, c.end);
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  EXPECT_TRUE(SameBytes(*scratch, *slice));
  EXPECT_EQ((*ckpt)->bytes_read(), 2 * slice->nbytes());
  EXPECT_EQ((*ckpt)->ReadSliceScratch("w", 3, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Dims, CheckpointSliceTest,
                         ::testing::Values(SliceCase{0, 0, 5}, SliceCase{0, 1, 4},
                                           SliceCase{0, 4, 5}, SliceCase{0, 2, 2},
                                           SliceCase{1, 0, 7}, SliceCase{1, 3, 6},
                                           SliceCase{1, 6, 7}, SliceCase{2, 0, 9},
                                           SliceCase{2, 2, 7}, SliceCase{2, 8, 9}),
                         [](const auto& info) {
                           return "dim" + std::to_string(info.param.dim) + "_" +
                                  std::to_string(info.param.start) + "_" +
                                  std::to_string(info.param.end);
                         });

TEST(CheckpointTest, ReadSliceRejectsBadDimAndRange) {
  const std::string dir = testing::MakeTempDir("ckpt_slice_bad");
  WriteShard(dir + "/model.safetensors", {{"w", RandomOf({4, 6}, DType::kF32, 1)}});
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->ReadSlice("w", 2, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*ckpt)->ReadSlice("w", -1, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*ckpt)->ReadSlice("w", 0, 3, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*ckpt)->ReadSlice("w", 1, 4, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*ckpt)->ReadSlice("nope", 0, 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*ckpt)->bytes_read(), 0u);
}

// Expert parallelism: a rank reading its experts from stacked [num_experts, n, k] weights and
// from per-expert tensors never fetches the other experts' bytes.
TEST(CheckpointTest, UnownedExpertsAreNeverRead) {
  const std::string dir = testing::MakeTempDir("ckpt_experts");
  const int num_experts = 8;
  std::vector<NamedTensor> tensors;
  tensors.push_back({"experts.stacked", RandomOf({num_experts, 6, 10}, DType::kF8E4M3, 1)});
  for (int e = 0; e < num_experts; ++e) {
    tensors.push_back({"experts." + std::to_string(e) + ".w", RandomOf({6, 10}, DType::kBF16, e)});
  }
  WriteShard(dir + "/model.safetensors", tensors);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  // This rank owns experts [2, 4).
  auto mine = (*ckpt)->ReadSlice("experts.stacked", 0, 2, 4);
  ASSERT_TRUE(mine.ok());
  EXPECT_TRUE(SameBytes(*mine, tensors[0].tensor.Slice(0, 2, 4)));
  uint64_t expected = 2 * 6 * 10;
  for (int e = 2; e < 4; ++e) {
    auto w = (*ckpt)->GetAs("experts." + std::to_string(e) + ".w", DType::kBF16);
    ASSERT_TRUE(w.ok());
    expected += 6 * 10 * 2;
  }
  EXPECT_EQ((*ckpt)->bytes_read(), expected);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// A tensor big enough (12 MiB) that kCopied reads it in parallel pieces.
TEST(CheckpointResidencyTest, CopiedTensorsEqualTheMappedOnesAndAreCounted) {
  const std::string dir = testing::MakeTempDir("ckpt_residency");
  std::vector<NamedTensor> tensors = {{"big", RandomOf({1536, 2048}, DType::kF32, 11)},
                                      {"small", RandomOf({3, 5}, DType::kBF16, 12)}};
  WriteShard(dir + "/model.safetensors", tensors);
  auto mapped = Checkpoint::Open(dir, WeightResidency::kMapped);
  auto copied = Checkpoint::Open(dir, WeightResidency::kCopied);
  ASSERT_TRUE(mapped.ok() && copied.ok());
  EXPECT_EQ((*copied)->residency(), WeightResidency::kCopied);
  uint64_t expected_read = 0;
  for (const auto& t : tensors) {
    auto view = (*mapped)->Get(t.name);
    auto copy = (*copied)->GetChecked(t.name, t.tensor.shape(), t.tensor.dtype());
    ASSERT_TRUE(view.ok() && copy.ok());
    EXPECT_TRUE(SameBytes(*copy, t.tensor)) << t.name;
    EXPECT_TRUE(SameBytes(*view, t.tensor)) << t.name;
    EXPECT_NE(copy->raw_data(), view->raw_data());
    expected_read += t.tensor.nbytes();
    EXPECT_EQ((*copied)->bytes_read(), expected_read);
  }
  EXPECT_EQ((*mapped)->bytes_read(), 0u);  // views fetch nothing
  // The copies outlive the checkpoint (their memory is owned, not a view of its mapping).
  auto keep = (*copied)->Get("big");
  ASSERT_TRUE(keep.ok());
  copied->reset();
  EXPECT_TRUE(SameBytes(*keep, tensors[0].tensor));
}

TEST(CheckpointResidencyTest, ParsesTheFlagAndNamesABadValue) {
  EXPECT_EQ(ParseWeightResidency("copy").value(), WeightResidency::kCopied);
  EXPECT_EQ(ParseWeightResidency("mmap").value(), WeightResidency::kMapped);
  absl::StatusOr<WeightResidency> bad = ParseWeightResidency("ram");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("'ram'"));
  EXPECT_THAT(bad.status().message(), HasSubstr("mmap"));
  EXPECT_THAT(bad.status().message(), HasSubstr("--weights"));
  EXPECT_THAT(ParseWeightResidency("ram", "--worker-weights").status().message(),
              HasSubstr("--worker-weights 'ram'"));
}

}  // namespace
}  // namespace tessera
