// Safetensors reader (see safetensors.h).
#include "worker/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"

namespace tessera {

struct SafetensorsFile::Mapping {
  int fd = -1;
  void* addr = nullptr;
  size_t size = 0;

  ~Mapping() {
    if (addr != nullptr && addr != MAP_FAILED) munmap(addr, size);
    if (fd >= 0) close(fd);
  }
};

namespace {

std::string ErrnoText() { return std::strerror(errno); }

// Multiplies with overflow detection.
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Reads a JSON array of non-negative integers; false when it is not one.
bool ReadUintArray(const nlohmann::json& j, std::vector<uint64_t>* out) {
  if (!j.is_array()) return false;
  out->clear();
  for (const auto& v : j) {
    if (v.is_number_unsigned()) {
      out->push_back(v.get<uint64_t>());
    } else if (v.is_number_integer()) {
      int64_t s = v.get<int64_t>();
      if (s < 0) return false;
      out->push_back(static_cast<uint64_t>(s));
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::Status ParseSafetensorsHeader(absl::string_view header_json, uint64_t data_offset,
                                    uint64_t data_size, const std::string& file,
                                    std::vector<TensorInfo>* tensors,
                                    std::map<std::string, std::string>* metadata) {
  tensors->clear();
  metadata->clear();
  // Detect duplicate keys of the top-level object (nlohmann keeps the last one silently).
  std::string duplicate;
  std::vector<std::set<std::string>> key_stack;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      key_stack.emplace_back();
    } else if (event == E::object_end) {
      if (!key_stack.empty()) key_stack.pop_back();
    } else if (event == E::key && !key_stack.empty()) {
      if (parsed.is_string()) {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!key_stack.back().insert(key).second && duplicate.empty() && depth <= 1) {
          duplicate = key;
        }
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_json.begin(), header_json.end(), callback,
                                   /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(
        absl::StrCat(file, ": safetensors header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return absl::DataLossError(absl::StrCat(file, ": safetensors header is not a JSON object"));
  }
  if (!duplicate.empty()) {
    return absl::DataLossError(
        absl::StrCat(file, ": safetensors header has duplicate entry '", duplicate, "'"));
  }
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::DataLossError(absl::StrCat(file, ": __metadata__ is not a JSON object"));
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return absl::DataLossError(
              absl::StrCat(file, ": __metadata__ value of '", m.key(), "' is not a string"));
        }
        (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat(file, ": tensor '", name, "'");
    if (!entry.is_object()) {
      return absl::DataLossError(absl::StrCat(where, ": entry is not a JSON object"));
    }
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return absl::DataLossError(absl::StrCat(where, ": missing or non-string 'dtype'"));
    }
    TensorInfo info;
    info.name = name;
    info.file = file;
    const std::string dtype_name = dtype_it->get<std::string>();
    absl::StatusOr<DType> dtype = DTypeFromSafetensors(dtype_name);
    if (!dtype.ok()) {
      return absl::DataLossError(absl::StrCat(where, ": unknown dtype '", dtype_name, "'"));
    }
    info.dtype = *dtype;
    std::vector<uint64_t> values;
    if (shape_it == entry.end() || !ReadUintArray(*shape_it, &values)) {
      return absl::DataLossError(
          absl::StrCat(where, ": 'shape' is not a list of non-negative integers"));
    }
    uint64_t numel = 1;
    for (uint64_t d : values) {
      if (d > static_cast<uint64_t>(INT64_MAX) || MulOverflows(numel, d, &numel)) {
        return absl::DataLossError(absl::StrCat(where, ": shape is too large"));
      }
      info.shape.push_back(static_cast<int64_t>(d));
    }
    if (offsets_it == entry.end() || !ReadUintArray(*offsets_it, &values) || values.size() != 2 ||
        values[0] > values[1]) {
      return absl::DataLossError(
          absl::StrCat(where, ": 'data_offsets' is not [begin, end] with 0 <= begin <= end"));
    }
    if (values[1] > data_size) {
      return absl::DataLossError(absl::StrCat(where, ": data_offsets end ", values[1],
                                              " is beyond the data section (", data_size,
                                              " bytes)"));
    }
    uint64_t expected_bytes = 0;
    if (MulOverflows(numel, DTypeSize(info.dtype), &expected_bytes) ||
        values[1] - values[0] != expected_bytes) {
      return absl::DataLossError(absl::StrCat(where, ": data_offsets span ", values[1] - values[0],
                                              " bytes but shape ", ShapeToString(info.shape),
                                              " of ", dtype_name, " needs ", expected_bytes));
    }
    info.data_begin = data_offset + values[0];
    info.data_end = data_offset + values[1];
    tensors->push_back(std::move(info));
  }
  std::sort(tensors->begin(), tensors->end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.name < b.name;
  });
  // Non-empty tensors must not overlap (empty ones occupy no bytes).
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : *tensors) {
    if (t.nbytes() == 0) continue;
    if (previous != nullptr && t.data_begin < previous->data_end) {
      return absl::DataLossError(
          absl::StrCat(file, ": tensor '", t.name, "' overlaps tensor '", previous->name, "'"));
    }
    previous = &t;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto mapping = std::make_shared<Mapping>();
  mapping->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (mapping->fd < 0) {
    const std::string text = ErrnoText();
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open: ", text));
  }
  struct stat st;
  if (fstat(mapping->fd, &st) != 0) {
    return absl::InternalError(absl::StrCat(path, ": fstat failed: ", ErrnoText()));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    return absl::DataLossError(absl::StrCat(path, ": file is ", file_size,
                                            " bytes, shorter than the 8-byte safetensors header"
                                            " length"));
  }
  unsigned char len_bytes[8];
  if (pread(mapping->fd, len_bytes, 8, 0) != 8) {
    return absl::DataLossError(absl::StrCat(path, ": cannot read the header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_len,
                                            " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
                                            " bytes"));
  }
  if (header_len > file_size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_len,
                                            " is beyond the end of the file (", file_size,
                                            " bytes)"));
  }
  mapping->size = file_size;
  mapping->addr = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, mapping->fd, 0);
  if (mapping->addr == MAP_FAILED) {
    mapping->addr = nullptr;
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", ErrnoText()));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->file_size_ = file_size;
  file->data_offset_ = 8 + header_len;
  absl::string_view header(static_cast<const char*>(mapping->addr) + 8, header_len);
  RETURN_IF_ERROR(ParseSafetensorsHeader(header, file->data_offset_, file_size - file->data_offset_,
                                         path, &file->tensors_, &file->metadata_));
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->index_[file->tensors_[i].name] = i;
  file->mapping_ = std::move(mapping);
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> SafetensorsFile::View(absl::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  return View(*info);
}

absl::StatusOr<Tensor> SafetensorsFile::View(const TensorInfo& info) const {
  if (mapping_ == nullptr || info.data_end > file_size_ || info.data_begin > info.data_end) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", info.name, "' does not belong to ", path_));
  }
  char* base = static_cast<char*>(mapping_->addr) + info.data_begin;
  auto buffer = WrapBuffer(base, info.nbytes(), Device::Cpu(), mapping_);
  return Tensor::FromBuffer(std::move(buffer), 0, info.shape, info.dtype);
}

absl::Status SafetensorsFile::ReadBytes(uint64_t offset, void* dst, size_t bytes) const {
  if (mapping_ == nullptr) return absl::FailedPreconditionError("ReadBytes on a moved-from file");
  if (offset > file_size_ || bytes > file_size_ - offset) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": read of ", bytes, " bytes at offset ",
                                              offset, " is beyond the end of the file (",
                                              file_size_, " bytes)"));
  }
  char* out = static_cast<char*>(dst);
  while (bytes > 0) {
    ssize_t n = pread(mapping_->fd, out, bytes, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat(path_, ": pread failed: ", ErrnoText()));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path_, ": unexpected end of file at ", offset));
    }
    out += n;
    offset += static_cast<uint64_t>(n);
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace tessera
