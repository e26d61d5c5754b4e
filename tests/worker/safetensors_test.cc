// Tests for the safetensors reader and streaming writer (worker/checkpoint/safetensors*.h):
// round trips for every dtype, the on-disk header layout, zero-copy views, and one test per
// malformed-file case checking that the error names the file (and the tensor).
#include "worker/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "worker/checkpoint/safetensors_writer.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes 8-byte length + `header` + `data` verbatim (no padding), for malformed-file tests.
void WriteRawFile(const std::string& path, const std::string& header, size_t data_bytes,
                  uint64_t length_override = UINT64_MAX) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t n = length_override == UINT64_MAX ? header.size() : length_override;
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header;
  out << std::string(data_bytes, '\0');
}

class SafetensorsDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(SafetensorsDtypeTest, RoundTripPreservesBytesShapeAndDtype) {
  const DType dtype = GetParam();
  const std::string dir = testing::MakeTempDir("st_roundtrip");
  const std::string path = dir + "/t.safetensors";
  const Shape shape_a = {3, 5, 7};
  const Shape shape_b = {11};
  const auto a = RandomBytes(NumElements(shape_a) * DTypeSize(dtype), 1);
  const auto b = RandomBytes(NumElements(shape_b) * DTypeSize(dtype), 2);
  SafetensorsWriter writer;
  writer.Declare("layer.a", dtype, shape_a);
  writer.Declare("layer.b", dtype, shape_b);
  writer.SetMetadata("format", "pt");
  ASSERT_TRUE(writer.Open(path).ok());
  ASSERT_TRUE(writer.Write("layer.a", a.data(), a.size()).ok());
  ASSERT_TRUE(writer.Write("layer.b", b.data(), b.size()).ok());
  ASSERT_TRUE(writer.Close().ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  auto ta = (*file)->View("layer.a");
  auto tb = (*file)->View("layer.b");
  ASSERT_TRUE(ta.ok() && tb.ok());
  EXPECT_EQ(ta->dtype(), dtype);
  EXPECT_EQ(ta->shape(), shape_a);
  EXPECT_EQ(tb->shape(), shape_b);
  EXPECT_EQ(std::memcmp(ta->raw_data(), a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(tb->raw_data(), b.data(), b.size()), 0);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, SafetensorsDtypeTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3,
                                           DType::kF8E5M2, DType::kI8, DType::kU8, DType::kBool,
                                           DType::kI32, DType::kI64),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(SafetensorsWriterTest, HeaderIsPaddedWithSpacesToMultipleOf8) {
  const std::string path = testing::MakeTempDir("st_pad") + "/t.safetensors";
  for (int name_len = 1; name_len <= 9; ++name_len) {
    SafetensorsWriter writer;
    writer.Declare(std::string(name_len, 'x'), DType::kF32, {1});
    ASSERT_TRUE(writer.Open(path).ok());
    const float v = 1.5f;
    ASSERT_TRUE(writer.Write(std::string(name_len, 'x'), &v, 4).ok());
    ASSERT_TRUE(writer.Close().ok());
    const std::string bytes = ReadFile(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ(n % 8, 0u) << name_len;
    EXPECT_EQ(bytes.size(), 8 + n + 4);
    const std::string header = bytes.substr(8, n);
    const std::string json = writer.HeaderJson();
    EXPECT_EQ(header.substr(0, json.size()), json);
    EXPECT_EQ(header.find_first_not_of(' ', json.size()), std::string::npos);
  }
}

TEST(SafetensorsWriterTest, StreamsATensorInPieces) {
  const std::string path = testing::MakeTempDir("st_stream") + "/t.safetensors";
  const auto data = RandomBytes(1000 * 4, 3);
  SafetensorsWriter writer;
  writer.Declare("w", DType::kF32, {1000});
  ASSERT_TRUE(writer.Open(path).ok());
  for (size_t off = 0; off < data.size(); off += 333) {
    const size_t n = std::min<size_t>(333, data.size() - off);
    ASSERT_TRUE(writer.Write("w", data.data() + off, n).ok());
  }
  ASSERT_TRUE(writer.Close().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto t = (*file)->View("w");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(std::memcmp(t->raw_data(), data.data(), data.size()), 0);
}

TEST(SafetensorsWriterTest, CloseFailsWhenATensorIsIncomplete) {
  const std::string path = testing::MakeTempDir("st_incomplete") + "/t.safetensors";
  SafetensorsWriter writer;
  writer.Declare("a", DType::kF32, {4});
  writer.Declare("b", DType::kF32, {4});
  ASSERT_TRUE(writer.Open(path).ok());
  float v[4] = {};
  ASSERT_TRUE(writer.Write("a", v, 16).ok());
  ASSERT_TRUE(writer.Write("b", v, 8).ok());
  absl::Status s = writer.Close();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'b'"));
}

TEST(SafetensorsWriterTest, RejectsOutOfOrderAndOversizedWrites) {
  const std::string path = testing::MakeTempDir("st_order") + "/t.safetensors";
  SafetensorsWriter writer;
  writer.Declare("a", DType::kF32, {2});
  writer.Declare("b", DType::kF32, {2});
  ASSERT_TRUE(writer.Open(path).ok());
  float v[4] = {};
  EXPECT_FALSE(writer.Write("b", v, 8).ok());
  EXPECT_FALSE(writer.Write("a", v, 12).ok());
}

TEST(SafetensorsWriterTest, RejectsDuplicateDeclarations) {
  const std::string path = testing::MakeTempDir("st_dupdecl") + "/t.safetensors";
  SafetensorsWriter writer;
  writer.Declare("a", DType::kF32, {2});
  writer.Declare("a", DType::kF32, {2});
  EXPECT_FALSE(writer.Open(path).ok());
}

TEST(SafetensorsWriterTest, WriteTensorConvertsToTheDeclaredDtype) {
  const std::string path = testing::MakeTempDir("st_convert") + "/t.safetensors";
  Tensor src = testing::RandomTensor({3, 5}, 7);
  SafetensorsWriter writer;
  writer.Declare("w", DType::kBF16, {3, 5});
  ASSERT_TRUE(writer.Open(path).ok());
  ASSERT_TRUE(writer.WriteTensor("w", src).ok());
  ASSERT_TRUE(writer.Close().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto t = (*file)->View("w");
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->dtype(), DType::kBF16);
  const uint16_t* p = static_cast<const uint16_t*>(t->raw_data());
  for (int i = 0; i < 15; ++i) EXPECT_EQ(p[i], FloatToBf16(src.data<float>()[i])) << i;
}

TEST(SafetensorsWriterTest, EmptyAndScalarTensorsRoundTrip) {
  const std::string path = testing::MakeTempDir("st_empty") + "/t.safetensors";
  SafetensorsWriter writer;
  writer.Declare("empty", DType::kF32, {0, 4});
  writer.Declare("scalar", DType::kI64, {});
  ASSERT_TRUE(writer.Open(path).ok());
  const int64_t v = -42;
  ASSERT_TRUE(writer.Write("scalar", &v, 8).ok());
  ASSERT_TRUE(writer.Close().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto e = (*file)->View("empty");
  auto s = (*file)->View("scalar");
  ASSERT_TRUE(e.ok() && s.ok());
  EXPECT_EQ(e->numel(), 0);
  EXPECT_EQ(s->ndim(), 0);
  EXPECT_EQ(*static_cast<const int64_t*>(s->raw_data()), -42);
}

TEST(SafetensorsWriterTest, IndexHasHuggingFaceLayout) {
  const std::string path = testing::MakeTempDir("st_index") + "/model.safetensors.index.json";
  ASSERT_TRUE(
      WriteSafetensorsIndex(path, {{"a", "m-1.safetensors"}, {"b", "m-2.safetensors"}}, 1234).ok());
  const std::string text = ReadFile(path);
  EXPECT_THAT(text, HasSubstr("\"total_size\": 1234"));
  EXPECT_THAT(text, HasSubstr("\"weight_map\""));
  EXPECT_THAT(text, HasSubstr("\"a\": \"m-1.safetensors\""));
}

TEST(SafetensorsFileTest, ViewIsZeroCopyAndOutlivesTheFile) {
  const std::string path = testing::MakeTempDir("st_view") + "/t.safetensors";
  const auto data = RandomBytes(64 * 4, 9);
  SafetensorsWriter writer;
  writer.Declare("w", DType::kF32, {8, 8});
  ASSERT_TRUE(writer.Open(path).ok());
  ASSERT_TRUE(writer.Write("w", data.data(), data.size()).ok());
  ASSERT_TRUE(writer.Close().ok());
  Tensor view;
  {
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok());
    auto v1 = (*file)->View("w");
    auto v2 = (*file)->View("w");
    ASSERT_TRUE(v1.ok() && v2.ok());
    EXPECT_EQ(v1->raw_data(), v2->raw_data());  // same mapping, no copy
    EXPECT_EQ((*file)->Find("w")->data_begin, (*file)->data_offset());
    view = *v1;
  }
  EXPECT_EQ(std::memcmp(view.raw_data(), data.data(), data.size()), 0);
}

TEST(SafetensorsFileTest, ReadBytesMatchesViewAndRejectsOutOfRange) {
  const std::string path = testing::MakeTempDir("st_pread") + "/t.safetensors";
  const auto data = RandomBytes(40, 10);
  SafetensorsWriter writer;
  writer.Declare("w", DType::kU8, {40});
  ASSERT_TRUE(writer.Open(path).ok());
  ASSERT_TRUE(writer.Write("w", data.data(), data.size()).ok());
  ASSERT_TRUE(writer.Close().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  const TensorInfo* info = (*file)->Find("w");
  ASSERT_NE(info, nullptr);
  uint8_t buf[10];
  ASSERT_TRUE((*file)->ReadBytes(info->data_begin + 5, buf, 10).ok());
  EXPECT_EQ(std::memcmp(buf, data.data() + 5, 10), 0);
  absl::Status s = (*file)->ReadBytes((*file)->file_size() - 4, buf, 10);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE((*file)->ReadBytes(UINT64_MAX - 2, buf, 10).ok());
}

TEST(SafetensorsFileTest, ViewOfMissingTensorNamesTensorAndFile) {
  const std::string path = testing::MakeTempDir("st_missing") + "/t.safetensors";
  WriteRawFile(path, "{}", 0);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto v = (*file)->View("nope");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("'nope'"));
  EXPECT_THAT(std::string(v.status().message()), HasSubstr(path));
}

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open("/nonexistent/dir/x.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("/nonexistent/dir/x.safetensors"));
}

// ---- Malformed files: one case per validation rule --------------------------------------------

struct MalformedCase {
  const char* name;
  std::string header;
  size_t data_bytes;
  const char* expected_substring;  // besides the file path
  uint64_t length_override = UINT64_MAX;
  size_t truncate_to = SIZE_MAX;  // write only this many bytes of the whole file
};

class SafetensorsMalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(SafetensorsMalformedTest, OpenFailsNamingTheFile) {
  const MalformedCase& c = GetParam();
  const std::string path = testing::MakeTempDir(std::string("st_bad_") + c.name) + "/m.safetensors";
  WriteRawFile(path, c.header, c.data_bytes, c.length_override);
  if (c.truncate_to != SIZE_MAX) {
    std::string bytes = ReadFile(path);
    bytes.resize(std::min(bytes.size(), c.truncate_to));
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok()) << c.name;
  const std::string message(file.status().message());
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr(c.expected_substring));
}

const std::string kGood = R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";

INSTANTIATE_TEST_SUITE_P(
    Cases, SafetensorsMalformedTest,
    ::testing::Values(
        MalformedCase{"short_file", "", 0, "shorter than", UINT64_MAX, 5},
        MalformedCase{"length_beyond_file", "{" + kGood + "}", 24, "beyond the end", 1000},
        MalformedCase{"length_absurd", "{}", 0, "exceeds the limit", 200'000'000},
        MalformedCase{"invalid_json", "{\"w\": [1, 2", 0, "not valid JSON"},
        MalformedCase{"not_object", "[1, 2, 3]", 0, "not a JSON object"},
        MalformedCase{"unknown_dtype", R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})",
                      2, "tensor 'w': unknown dtype"},
        MalformedCase{"negative_shape", R"({"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})",
                      2, "tensor 'w': 'shape'"},
        MalformedCase{"float_shape", R"({"w":{"dtype":"U8","shape":[2.5],"data_offsets":[0,2]}})",
                      2, "tensor 'w': 'shape'"},
        MalformedCase{"shape_not_list", R"({"w":{"dtype":"U8","shape":"2","data_offsets":[0,2]}})",
                      2, "tensor 'w': 'shape'"},
        MalformedCase{"offsets_arity", R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2,4]}})",
                      4, "tensor 'w': 'data_offsets'"},
        MalformedCase{"offsets_reversed",
                      R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[4,2]}})", 4,
                      "tensor 'w': 'data_offsets'"},
        MalformedCase{"offsets_missing", R"({"w":{"dtype":"U8","shape":[2]}})", 4,
                      "tensor 'w': 'data_offsets'"},
        MalformedCase{"end_beyond_data", R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                      4, "tensor 'w': data_offsets end 8 is beyond the data section"},
        MalformedCase{"size_mismatch",
                      R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 24,
                      "tensor 'w': data_offsets span 20 bytes"},
        MalformedCase{
            "numel_overflow",
            R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
            "tensor 'w'"},
        MalformedCase{"overlap",
                      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                      8, "tensor 'b' overlaps tensor 'a'"},
        MalformedCase{"duplicate_name",
                      R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                      R"("w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                      4, "duplicate entry 'w'"},
        MalformedCase{"metadata_not_strings", R"({"__metadata__":{"format":3}})", 0,
                      "__metadata__"},
        MalformedCase{"entry_not_object", R"({"w":[1,2]})", 0, "tensor 'w'"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tessera
