// Streaming safetensors writer.
//
// Writes a .safetensors file without holding the whole checkpoint in memory: declare every tensor
// first (Declare, order kept), optionally SetMetadata, then Open() writes the header (8-byte
// little-endian length + JSON padded with spaces to a multiple of 8, as the reference
// implementation does), then Write() is called for the tensors in declaration order, possibly
// several times per tensor to stream it in pieces, and Close() checks every tensor was completely
// written. Data offsets are assigned in declaration order with no gaps. WriteSafetensorsIndex()
// writes the model.safetensors.index.json of a sharded checkpoint.
//
// Thread safety: a SafetensorsWriter is used by one thread at a time. Move-only (owns the file).
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kernels/base/dtype.h"
#include "kernels/base/tensor.h"

namespace tessera {

class SafetensorsWriter {
 public:
  SafetensorsWriter() = default;
  // Closes the file if still open (without the completeness check; call Close() to get it).
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  SafetensorsWriter(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&& other) noexcept;

  // Declares a tensor; must precede Open(). Duplicate names are reported by Open().
  void Declare(std::string name, DType dtype, Shape shape);
  // Adds a "__metadata__" entry, e.g. ("format", "pt"). Must precede Open().
  void SetMetadata(std::string key, std::string value);

  // Creates/truncates `path` and writes the header.
  absl::Status Open(const std::string& path);
  // Appends `bytes` of tensor `name`. Tensors must be written in declaration order; one tensor
  // may be written in several pieces. Errors: out-of-order name, more bytes than declared.
  absl::Status Write(absl::string_view name, const void* data, size_t bytes);
  // Writes a whole host tensor (any strides; converted to the declared dtype when it differs).
  absl::Status WriteTensor(absl::string_view name, const Tensor& tensor);
  // Flushes and closes. FAILED_PRECONDITION when a tensor was not fully written.
  absl::Status Close();

  // Total bytes of the data section (sum of the declared tensor sizes).
  uint64_t data_size() const;
  // The header JSON that Open() writes (unpadded), for tests and index building.
  std::string HeaderJson() const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t nbytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::string path_;
  std::FILE* file_ = nullptr;
  size_t current_ = 0;            // index of the tensor being written
  uint64_t current_written_ = 0;  // bytes of entries_[current_] written so far
};

// Writes model.safetensors.index.json in the Hugging Face layout:
// {"metadata": {"total_size": N}, "weight_map": {"tensor name":
// "model-00001-of-00002.safetensors"}}
absl::Status WriteSafetensorsIndex(const std::string& path,
                                   const std::map<std::string, std::string>& weight_map,
                                   uint64_t total_size);

}  // namespace tessera
