// Checkpoint over a Hugging Face model directory (see checkpoint.h).
#include "worker/checkpoint/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "nlohmann/json.hpp"

namespace tessera {

namespace fs = std::filesystem;

namespace {

std::string JoinPath(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON: ", e.what()));
  }
}

// Reads `bytes` at `offset` of `file` into `dst` with the default thread pool: copying weights
// into fresh memory is bound by page faults (zeroing, and on VMs the nested-paging exits), so
// several threads fill a large tensor much faster than one.
absl::Status ReadBytesParallel(const SafetensorsFile& file, uint64_t offset, void* dst,
                               size_t bytes) {
  constexpr size_t kPiece = size_t{1} << 20;
  if (bytes < 2 * kPiece) return file.ReadBytes(offset, dst, bytes);
  const int64_t pieces = static_cast<int64_t>((bytes + kPiece - 1) / kPiece);
  absl::Mutex mu;
  absl::Status first_error;
  ParallelFor(pieces, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const size_t start = static_cast<size_t>(p) * kPiece;
      const size_t len = std::min(kPiece, bytes - start);
      absl::Status s = file.ReadBytes(offset + start, static_cast<char*>(dst) + start, len);
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = std::move(s);
        return;
      }
    }
  });
  return first_error;
}

}  // namespace

absl::StatusOr<WeightResidency> ParseWeightResidency(absl::string_view text,
                                                     absl::string_view flag) {
  if (text == "mmap") return WeightResidency::kMapped;
  if (text == "copy") return WeightResidency::kCopied;
  return absl::InvalidArgumentError(absl::StrCat(
      flag, " '", text, "': expected 'copy' (read into huge-page memory, fastest decode) or "
      "'mmap' (use the page cache in place, fastest start, shared between processes)"));
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir,
                                                             WeightResidency residency) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory ", dir, " does not exist"));
  }
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = dir;
  ckpt->residency_ = residency;
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (fs::exists(index_path, ec)) {
    ASSIGN_OR_RETURN(nlohmann::json index, ReadJsonFile(index_path));
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing 'weight_map' object"));
    }
    const nlohmann::json& weight_map = index["weight_map"];
    // Open each shard once, in order of first appearance.
    absl::flat_hash_map<std::string, const SafetensorsFile*> shards;
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map entry for tensor '", it.key(), "' is not a file name"));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for '",
                                                       it.key(), "' names invalid file '", shard,
                                                       "'"));
      }
      if (!shards.contains(shard)) {
        const std::string shard_path = JoinPath(dir, shard);
        if (!fs::exists(shard_path, ec)) {
          return absl::NotFoundError(absl::StrCat(index_path, " names shard ", shard, " (tensor '",
                                                  it.key(), "') which does not exist"));
        }
        ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(shard_path));
        shards[shard] = file.get();
        ckpt->files_.push_back(std::move(file));
      }
      const SafetensorsFile* file = shards[shard];
      const TensorInfo* info = file->Find(it.key());
      if (info == nullptr) {
        return absl::NotFoundError(absl::StrCat(index_path, ": tensor '", it.key(),
                                                "' is not in its shard ", file->path()));
      }
      ckpt->tensors_[it.key()] = Location{file, info};
    }
    return ckpt;
  }

  std::vector<std::string> paths;
  const std::string single = JoinPath(dir, "model.safetensors");
  if (fs::exists(single, ec)) {
    paths.push_back(single);
  } else {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
        paths.push_back(entry.path().string());
      }
    }
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no *.safetensors files in checkpoint directory ", dir));
  }
  for (const std::string& path : paths) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
    for (const TensorInfo& info : file->tensors()) {
      auto [it, inserted] = ckpt->tensors_.try_emplace(info.name, Location{file.get(), &info});
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' appears in both ",
                                                       it->second.file->path(), " and ", path));
      }
    }
    ckpt->files_.push_back(std::move(file));
  }
  return ckpt;
}

bool Checkpoint::Has(absl::string_view name) const { return tensors_.contains(name); }

absl::StatusOr<Checkpoint::Location> Checkpoint::Locate(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in checkpoint ", dir_));
  }
  {
    absl::MutexLock lock(&used_mu_);
    used_.insert(it->first);
  }
  return it->second;
}

std::vector<std::string> Checkpoint::UnusedTensorNames() const {
  std::vector<std::string> unused;
  absl::MutexLock lock(&used_mu_);
  for (const auto& [name, loc] : tensors_) {
    if (!used_.contains(name)) unused.push_back(name);
  }
  std::sort(unused.begin(), unused.end());
  return unused;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Info(absl::string_view name) const {
  ASSIGN_OR_RETURN(Location loc, Locate(name));
  return loc.info;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, loc] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, loc] : tensors_) total += loc.info->nbytes();
  return total;
}

absl::StatusOr<Tensor> Checkpoint::Fetch(const Location& loc) const {
  if (residency_ == WeightResidency::kMapped) {
    bytes_mapped_.fetch_add(loc.info->nbytes(), std::memory_order_relaxed);
    return loc.file->View(*loc.info);
  }
  const TensorInfo& info = *loc.info;
  ASSIGN_OR_RETURN(Tensor out, NewOwned(info.shape, info.dtype));
  RETURN_IF_ERROR(ReadBytesParallel(*loc.file, info.data_begin, out.raw_data(), info.nbytes()));
  bytes_read_.fetch_add(info.nbytes(), std::memory_order_relaxed);
  return out;
}

absl::StatusOr<Tensor> Checkpoint::NewOwned(const Shape& shape, DType dtype) const {
  size_t bytes = DTypeSize(dtype);
  for (int64_t d : shape) bytes *= static_cast<size_t>(d);
  ASSIGN_OR_RETURN(std::shared_ptr<Buffer> buffer, arena_.Allocate(bytes));
  return Tensor::FromBuffer(std::move(buffer), 0, shape, dtype);
}

absl::StatusOr<Tensor> Checkpoint::Get(absl::string_view name) const {
  ASSIGN_OR_RETURN(Location loc, Locate(name));
  return Fetch(loc);
}

absl::StatusOr<Tensor> Checkpoint::GetSlice(absl::string_view name, int dim, int64_t start,
                                            int64_t end) const {
  ASSIGN_OR_RETURN(Location loc, Locate(name));
  const TensorInfo& info = *loc.info;
  const int ndim = static_cast<int>(info.shape.size());
  bool contiguous = dim >= 0 && dim < ndim;
  for (int d = 0; contiguous && d < dim; ++d) contiguous = info.shape[d] == 1;
  if (residency_ == WeightResidency::kCopied || !contiguous || start < 0 || start > end ||
      end > info.shape[dim]) {
    return ReadSlice(name, dim, start, end);  // copies; reports a bad dim or range
  }
  ASSIGN_OR_RETURN(Tensor whole, loc.file->View(info));
  Tensor view = whole.Slice(dim, start, end);
  bytes_mapped_.fetch_add(view.nbytes(), std::memory_order_relaxed);
  return view;
}

absl::StatusOr<Tensor> Checkpoint::GetChecked(absl::string_view name,
                                              absl::Span<const int64_t> expected_shape,
                                              std::optional<DType> expected_dtype) const {
  ASSIGN_OR_RETURN(Location loc, Locate(name));
  const TensorInfo& info = *loc.info;
  if (!std::equal(info.shape.begin(), info.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' in ", info.file,
                                                   " has shape ", ShapeToString(info.shape),
                                                   ", expected ", ShapeToString(expected_shape)));
  }
  if (expected_dtype.has_value() && *expected_dtype != info.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' in ", info.file,
                                                   " has dtype ", DTypeName(info.dtype),
                                                   ", expected ", DTypeName(*expected_dtype)));
  }
  return Fetch(loc);
}

absl::StatusOr<Tensor> Checkpoint::GetAs(absl::string_view name, DType dtype) const {
  ASSIGN_OR_RETURN(Location loc, Locate(name));
  const TensorInfo& info = *loc.info;
  ASSIGN_OR_RETURN(Tensor out, NewOwned(info.shape, dtype));
  if (info.dtype == dtype) {
    RETURN_IF_ERROR(loc.file->ReadBytes(info.data_begin, out.raw_data(), info.nbytes()));
  } else {
    ASSIGN_OR_RETURN(Tensor raw, Tensor::Empty(info.shape, info.dtype));
    RETURN_IF_ERROR(loc.file->ReadBytes(info.data_begin, raw.raw_data(), info.nbytes()));
    ConvertBuffer(raw.raw_data(), info.dtype, out.raw_data(), dtype,
                  static_cast<size_t>(info.numel()));
  }
  bytes_read_.fetch_add(info.nbytes(), std::memory_order_relaxed);
  return out;
}

absl::StatusOr<Tensor> Checkpoint::ReadSlice(absl::string_view name, int dim, int64_t start,
                                             int64_t end) const {
  return ReadSliceTo(name, dim, start, end, /*scratch=*/false);
}

absl::StatusOr<Tensor> Checkpoint::ReadSliceScratch(absl::string_view name, int dim,
                                                    int64_t start, int64_t end) const {
  return ReadSliceTo(name, dim, start, end, /*scratch=*/true);
}

absl::StatusOr<Tensor> Checkpoint::ReadSliceTo(absl::string_view name, int dim, int64_t start,
                                               int64_t end, bool scratch) const {
  ASSIGN_OR_RETURN(Location loc, Locate(name));
  const TensorInfo& info = *loc.info;
  const int ndim = static_cast<int>(info.shape.size());
  if (dim < 0 || dim >= ndim) {
    return absl::InvalidArgumentError(absl::StrCat("ReadSlice of tensor '", name, "' in ",
                                                   info.file, ": dim ", dim, " out of range for ",
                                                   ShapeToString(info.shape)));
  }
  if (start < 0 || start > end || end > info.shape[dim]) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadSlice of tensor '", name, "' in ", info.file, ": range [", start, ", ",
                     end, ") out of bounds for dim ", dim, " of ", ShapeToString(info.shape)));
  }
  Shape out_shape = info.shape;
  out_shape[dim] = end - start;
  ASSIGN_OR_RETURN(Tensor out, scratch ? Tensor::Empty(out_shape, info.dtype)
                                       : NewOwned(out_shape, info.dtype));
  int64_t outer = 1;
  for (int d = 0; d < dim; ++d) outer *= info.shape[d];
  uint64_t inner_bytes = DTypeSize(info.dtype);
  for (int d = dim + 1; d < ndim; ++d) inner_bytes *= static_cast<uint64_t>(info.shape[d]);
  const uint64_t run = static_cast<uint64_t>(end - start) * inner_bytes;  // bytes per outer row
  const uint64_t row_stride = static_cast<uint64_t>(info.shape[dim]) * inner_bytes;
  char* dst = static_cast<char*>(out.raw_data());
  if (run > 0) {
    if (run == row_stride) {  // the slice is the whole extent: one contiguous read
      RETURN_IF_ERROR(ReadBytesParallel(*loc.file, info.data_begin, dst, run * outer));
    } else {
      for (int64_t o = 0; o < outer; ++o) {
        const uint64_t offset = info.data_begin + static_cast<uint64_t>(o) * row_stride +
                                static_cast<uint64_t>(start) * inner_bytes;
        RETURN_IF_ERROR(ReadBytesParallel(*loc.file, offset, dst + o * run, run));
      }
    }
  }
  bytes_read_.fetch_add(run * static_cast<uint64_t>(outer), std::memory_order_relaxed);
  return out;
}

}  // namespace tessera
