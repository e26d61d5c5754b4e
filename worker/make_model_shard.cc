#include "worker/make_model_shard.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace tessera::make_model {

ShardWriter::~ShardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status ShardWriter::Declare(absl::string_view name, DType dtype,
                                  const std::vector<int64_t>& shape) {
  if (file_ != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("Declare(", name, ") after Open"));
  }
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  entries_.push_back({std::string(name), dtype, shape, n});
  return absl::OkStatus();
}

void ShardWriter::SetMetadata(std::map<std::string, std::string> metadata) {
  metadata_ = std::move(metadata);
}

absl::Status ShardWriter::Open(const std::string& path) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    header[e.name] = {{"dtype", std::string(DTypeToSafetensors(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes}}};
    offset += e.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  path_ = path;
  file_ = std::fopen(path.c_str(), "wb");
  if (file_ == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path));
  uint64_t len = text.size();
  uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(len >> (8 * i));
  if (std::fwrite(le, 1, 8, file_) != 8 || std::fwrite(text.data(), 1, len, file_) != len) {
    return absl::InternalError(absl::StrCat("writing the header of ", path));
  }
  current_ = 0;
  written_ = 0;
  return absl::OkStatus();
}

absl::Status ShardWriter::Write(absl::string_view name, const void* data, size_t bytes) {
  if (file_ == nullptr) return absl::FailedPreconditionError("Write before Open");
  while (current_ < entries_.size() && written_ == entries_[current_].bytes &&
         entries_[current_].name != name) {
    ++current_;
    written_ = 0;
  }
  if (current_ >= entries_.size() || entries_[current_].name != name) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": tensor ", name, " written out of declaration order"));
  }
  if (written_ + bytes > entries_[current_].bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor ", name, " given more bytes than its shape holds"));
  }
  if (std::fwrite(data, 1, bytes, file_) != bytes) {
    return absl::InternalError(absl::StrCat(path_, ": write failed for ", name));
  }
  written_ += bytes;
  return absl::OkStatus();
}

absl::Status ShardWriter::Close() {
  if (file_ == nullptr) return absl::FailedPreconditionError("Close before Open");
  while (current_ < entries_.size() && written_ == entries_[current_].bytes) {
    ++current_;
    written_ = 0;
  }
  bool complete = current_ == entries_.size();
  int rc = std::fclose(file_);
  file_ = nullptr;
  if (!complete) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": tensor ", entries_[current_].name, " not completely written"));
  }
  if (rc != 0) return absl::InternalError(absl::StrCat("closing ", path_));
  return absl::OkStatus();
}

absl::Status WriteIndex(const std::string& path, const nlohmann::json& weight_map,
                        int64_t total_size) {
  nlohmann::json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  std::ofstream out(path, std::ios::trunc);
  out << index.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace tessera::make_model
