// Streaming safetensors writer (see safetensors_writer.h).
#include "worker/checkpoint/safetensors_writer.h"

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&& other) noexcept {
  *this = std::move(other);
}

SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    entries_ = std::move(other.entries_);
    metadata_ = std::move(other.metadata_);
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, nullptr);
    current_ = other.current_;
    current_written_ = other.current_written_;
  }
  return *this;
}

void SafetensorsWriter::Declare(std::string name, DType dtype, Shape shape) {
  CHECK(file_ == nullptr) << "SafetensorsWriter::Declare after Open";
  const uint64_t nbytes = static_cast<uint64_t>(NumElements(shape)) * DTypeSize(dtype);
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), nbytes});
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  CHECK(file_ == nullptr) << "SafetensorsWriter::SetMetadata after Open";
  metadata_[std::move(key)] = std::move(value);
}

uint64_t SafetensorsWriter::data_size() const {
  uint64_t total = 0;
  for (const Entry& e : entries_) total += e.nbytes;
  return total;
}

std::string SafetensorsWriter::HeaderJson() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    t["dtype"] = std::string(DTypeToSafetensors(e.dtype));
    t["shape"] = std::vector<int64_t>(e.shape.begin(), e.shape.end());
    t["data_offsets"] = {offset, offset + e.nbytes};
    offset += e.nbytes;
    header[e.name] = std::move(t);
  }
  return header.dump();
}

absl::Status SafetensorsWriter::Open(const std::string& path) {
  if (file_ != nullptr) return absl::FailedPreconditionError(path_ + ": writer already open");
  std::set<absl::string_view> names;
  for (const Entry& e : entries_) {
    if (e.name == "__metadata__" || !names.insert(e.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name '", e.name, "' declared twice or reserved"));
    }
    for (int64_t d : e.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor '", e.name, "' has negative shape ", ShapeToString(e.shape)));
      }
    }
  }
  std::string header = HeaderJson();
  header.append((8 - header.size() % 8) % 8, ' ');
  path_ = path;
  file_ = std::fopen(path.c_str(), "wb");
  if (file_ == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  unsigned char len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  if (std::fwrite(len, 1, 8, file_) != 8 ||
      std::fwrite(header.data(), 1, header.size(), file_) != header.size()) {
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  current_ = 0;
  current_written_ = 0;
  // Skip leading empty tensors so that Write() of the first non-empty one is accepted.
  while (current_ < entries_.size() && entries_[current_].nbytes == 0) ++current_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Write(absl::string_view name, const void* data, size_t bytes) {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("SafetensorsWriter::Write('", name, "') before Open or after Close"));
  }
  // Empty tensors need no data; allow writes naming an empty declared tensor that we skipped.
  if (current_ >= entries_.size() || entries_[current_].name != name) {
    for (const Entry& e : entries_) {
      if (e.name == name && e.nbytes == 0 && bytes == 0) return absl::OkStatus();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": tensor '", name, "' written out of declaration order; expected '",
        current_ < entries_.size() ? entries_[current_].name : std::string("<none>"), "'"));
  }
  const Entry& e = entries_[current_];
  if (bytes > e.nbytes - current_written_) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' is declared as ",
                                                   e.nbytes, " bytes but ",
                                                   current_written_ + bytes, " were written"));
  }
  if (bytes > 0 && std::fwrite(data, 1, bytes, file_) != bytes) {
    return absl::DataLossError(
        absl::StrCat(path_, ": write of tensor '", name, "' failed: ", std::strerror(errno)));
  }
  current_written_ += bytes;
  if (current_written_ == e.nbytes) {
    ++current_;
    current_written_ = 0;
    while (current_ < entries_.size() && entries_[current_].nbytes == 0) ++current_;
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::WriteTensor(absl::string_view name, const Tensor& tensor) {
  if (current_ >= entries_.size() || entries_[current_].name != name) {
    return Write(name, nullptr, tensor.nbytes());  // produces the ordering error (or empty OK)
  }
  const Entry& e = entries_[current_];
  if (NumElements(tensor.shape()) != NumElements(e.shape)) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' declared as ",
                                                   ShapeToString(e.shape), " but given ",
                                                   ShapeToString(tensor.shape())));
  }
  if (tensor.dtype() == e.dtype && tensor.is_contiguous() && tensor.device().is_cpu()) {
    return Write(name, tensor.raw_data(), tensor.nbytes());
  }
  Tensor host = tensor;
  if (!host.device().is_cpu()) {
    ASSIGN_OR_RETURN(host, tensor.ToDevice(Device::Cpu()));
  }
  ASSIGN_OR_RETURN(Tensor converted, host.To(e.dtype));
  return Write(name, converted.raw_data(), converted.nbytes());
}

absl::Status SafetensorsWriter::Close() {
  if (file_ == nullptr) return absl::FailedPreconditionError("SafetensorsWriter::Close: not open");
  std::FILE* f = std::exchange(file_, nullptr);
  const bool flush_ok = std::fflush(f) == 0;
  const bool close_ok = std::fclose(f) == 0;
  if (current_ < entries_.size()) {
    const Entry& e = entries_[current_];
    return absl::FailedPreconditionError(absl::StrCat(path_, ": closed before tensor '", e.name,
                                                      "' was fully written (", current_written_,
                                                      " of ", e.nbytes, " bytes)"));
  }
  if (!flush_ok || !close_ok) {
    return absl::DataLossError(absl::StrCat(path_, ": flush/close failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensorsIndex(const std::string& path,
                                   const std::map<std::string, std::string>& weight_map,
                                   uint64_t total_size) {
  nlohmann::ordered_json index = nlohmann::ordered_json::object();
  index["metadata"] = {{"total_size", total_size}};
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  for (const auto& [name, file] : weight_map) map[name] = file;
  index["weight_map"] = std::move(map);
  const std::string text = index.dump(2) + "\n";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool close_ok = std::fclose(f) == 0;
  if (!ok || !close_ok) {
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace tessera
