// Safetensors reader: a memory-mapped, validated view of one .safetensors file.
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
// N bytes of JSON {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"k": "v"}}, then the data section; offsets are relative to the data section.
//
// Contract: Open() validates the whole header before returning (header length within the file and
// at most 100 MB, a JSON object, known dtypes, shapes of non-negative ints, data_offsets
// [begin, end] with begin <= end inside the data section, end - begin == numel * dtype size, no
// overlapping tensors, no duplicate names). Every error names the file and, where relevant, the
// tensor. After a successful Open() every TensorInfo lies inside the file, so View() and
// ReadBytes() never read out of bounds.
//
// View() returns zero-copy host tensors over the read-only mapping; each tensor keeps the mapping
// alive through its Buffer, so tensors may outlive the SafetensorsFile. Writing through such a
// view is undefined (the mapping is PROT_READ).
//
// Thread safety: after Open() all const methods are safe to call concurrently (ReadBytes uses
// pread on a shared descriptor, no shared file position).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/base/dtype.h"
#include "kernels/base/tensor.h"

namespace tessera {

// Headers larger than this are rejected as corrupt (the reference implementation uses 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One tensor of a safetensors file.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t data_begin = 0;  // absolute byte offset in `file`
  uint64_t data_end = 0;    // absolute byte offset (exclusive)
  std::string file;         // path of the .safetensors file holding the data

  uint64_t nbytes() const { return data_end - data_begin; }
  int64_t numel() const { return NumElements(shape); }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors: NOT_FOUND (missing file), DATA_LOSS / INVALID_ARGUMENT
  // (malformed header; the message names `path` and the tensor).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;

  const std::string& path() const { return path_; }
  // Tensors in the order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;
  // "__metadata__" of the header (string values only, as the format requires).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Total file size and the absolute offset where the data section starts (8 + header length).
  uint64_t file_size() const { return file_size_; }
  uint64_t data_offset() const { return data_offset_; }

  // Zero-copy contiguous host tensor over the mapping. NOT_FOUND names the tensor and file.
  absl::StatusOr<Tensor> View(absl::string_view name) const;
  // Zero-copy view of an already looked-up tensor of this file.
  absl::StatusOr<Tensor> View(const TensorInfo& info) const;
  // Copies `bytes` from absolute file offset `offset` with pread (no page-cache mapping touched
  // beyond those bytes). OUT_OF_RANGE when the range exceeds the file.
  absl::Status ReadBytes(uint64_t offset, void* dst, size_t bytes) const;

 private:
  SafetensorsFile() = default;
  struct Mapping;  // RAII fd + mmap, shared with the tensors' buffers.

  std::string path_;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  std::shared_ptr<Mapping> mapping_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a safetensors header held in memory. `header_json` is the JSON text,
// `data_size` the length of the data section, `data_offset` the absolute offset of the data
// section (8 + header length) and `file` the name used in errors and stored in TensorInfo::file.
// Used by SafetensorsFile::Open and directly by the fuzz tests.
absl::Status ParseSafetensorsHeader(absl::string_view header_json, uint64_t data_offset,
                                    uint64_t data_size, const std::string& file,
                                    std::vector<TensorInfo>* tensors,
                                    std::map<std::string, std::string>* metadata);

}  // namespace tessera
