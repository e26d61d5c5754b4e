// Safetensors output of `tessera make-model`: a thin adapter so that make_model.cc writes through
// one small interface (declare every tensor, open, write each tensor's bytes in declaration order,
// possibly in pieces, close), plus the sharded-checkpoint index.
//
// Not thread safe: one writer per file, used from one thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kernels/base/dtype.h"
#include "nlohmann/json.hpp"

namespace tessera::make_model {

class ShardWriter {
 public:
  ShardWriter() = default;
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  absl::Status Declare(absl::string_view name, DType dtype, const std::vector<int64_t>& shape);
  void SetMetadata(std::map<std::string, std::string> metadata);
  // Writes the header; data follow with Write().
  absl::Status Open(const std::string& path);
  // Appends bytes of tensor `name`, which must be the tensor being written or the next one.
  absl::Status Write(absl::string_view name, const void* data, size_t bytes);
  // Checks that every declared byte was written and closes the file.
  absl::Status Close();

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::string path_;
  std::FILE* file_ = nullptr;
  size_t current_ = 0;        // entry being written
  uint64_t written_ = 0;      // bytes of entries_[current_] written so far
};

// model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {name: file}}.
absl::Status WriteIndex(const std::string& path, const nlohmann::json& weight_map,
                        int64_t total_size);

}  // namespace tessera::make_model
