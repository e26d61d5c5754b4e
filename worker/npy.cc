#include "worker/npy.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/base/status.h"

namespace tessera {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

absl::StatusOr<const char*> Descr(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "<f4";
    case DType::kI32:
      return "<i4";
    case DType::kI64:
      return "<i8";
    default:
      return absl::InvalidArgumentError(absl::StrCat("npy: unsupported dtype ",
                                                     DTypeName(dtype)));
  }
}

}  // namespace

absl::Status WriteNpy(const std::string& path, const Tensor& tensor) {
  ASSIGN_OR_RETURN(const char* descr, Descr(tensor.dtype()));
  Tensor t = tensor;
  if (!t.is_contiguous()) {
    ASSIGN_OR_RETURN(t, tensor.Clone());
  }
  std::string shape = "(";
  for (int d = 0; d < t.ndim(); ++d) absl::StrAppend(&shape, t.dim(d), ",");
  if (t.ndim() > 1) shape.pop_back();
  shape += ")";
  std::string header =
      absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  // magic(6) + version(2) + len(2) + header + '\n' padded to a multiple of 64.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  File f(std::fopen(path.c_str(), "wb"));
  if (!f) return absl::InternalError(absl::StrCat("cannot open ", path, " for writing"));
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  const uint16_t len = static_cast<uint16_t>(header.size());
  bool ok = std::fwrite(magic, 1, 8, f.get()) == 8 &&
            std::fwrite(&len, 1, 2, f.get()) == 2 &&
            std::fwrite(header.data(), 1, header.size(), f.get()) == header.size();
  if (t.numel() > 0) ok = ok && std::fwrite(t.raw_data(), 1, t.nbytes(), f.get()) == t.nbytes();
  if (!ok) return absl::InternalError(absl::StrCat("write to ", path, " failed"));
  if (std::fclose(f.release()) != 0) {
    return absl::InternalError(absl::StrCat("closing ", path, " failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  char magic[8];
  uint16_t len = 0;
  if (std::fread(magic, 1, 8, f.get()) != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0 ||
      magic[6] != 1 || std::fread(&len, 1, 2, f.get()) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an .npy v1 file"));
  }
  std::string header(len, '\0');
  if (std::fread(header.data(), 1, len, f.get()) != len) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated header"));
  }
  DType dtype;
  if (header.find("'<f4'") != std::string::npos) {
    dtype = DType::kF32;
  } else if (header.find("'<i4'") != std::string::npos) {
    dtype = DType::kI32;
  } else if (header.find("'<i8'") != std::string::npos) {
    dtype = DType::kI64;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported descr in ", header));
  }
  if (header.find("'fortran_order': False") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": Fortran order is not supported"));
  }
  size_t open = header.find("'shape': (");
  size_t close = open == std::string::npos ? open : header.find(')', open);
  if (close == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no shape in header"));
  }
  std::string dims = header.substr(open + 10, close - open - 10);
  Shape shape;
  for (absl::string_view part : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad shape '", dims, "'"));
    }
    shape.push_back(v);
  }
  ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(shape, dtype));
  if (t.numel() > 0 && std::fread(t.raw_data(), 1, t.nbytes(), f.get()) != t.nbytes()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated data"));
  }
  return t;
}

}  // namespace tessera
