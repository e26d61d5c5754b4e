// Checkpoint: the tensors of a Hugging Face model directory.
//
// A directory holds either a single model.safetensors, a sharded checkpoint described by
// model.safetensors.index.json (every file it names must exist and every tensor in its weight_map
// must be found in the named shard), or several *.safetensors files without an index (tensor
// names must then be unique across files). Open() maps and validates every shard.
//
// Residency: with WeightResidency::kMapped, Get() returns zero-copy views over the mappings (the
// weights live in the page cache, shared by every process mapping the file; nothing is read until
// first touched). With kCopied, Get() reads the tensor with pread into owned host memory, which
// kernels/base/device.cc backs with transparent huge pages for buffers of 2 MiB and more: decode
// GEMVs stream weights measurably faster without a TLB miss every 4 KiB (docs/performance.md).
// GetAs() and ReadSlice() return owned copies
// read with pread, touching only the bytes they need (ReadSlice of dim 0 is one contiguous read;
// slices along later dims read one contiguous run per outer row), so a rank that owns a slice of
// a weight or a subset of experts never faults in the rest of the file. bytes_read() counts the
// bytes fetched that way, so tests can prove unowned experts are never read. GetSlice() is the
// loader's entry point: a zero-copy view when the slice is contiguous in the file, else
// ReadSlice. bytes_loaded() counts every byte handed out, as views (Get, GetChecked, GetSlice:
// the view's own bytes, which become resident once used) or as copies (bytes_read): a model
// loader that asks only for what it keeps makes it equal its resident weight bytes.
//
// Errors name the tensor and the directory or shard file, e.g.
//   "tensor 'x' not found in checkpoint DIR",
//   "tensor 'w' in DIR/model-00001.safetensors has shape [8, 64], expected [16, 64]".
//
// Thread safety: all const methods may be called concurrently (bytes_read is atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/base/dtype.h"
#include "kernels/base/host_arena.h"
#include "kernels/base/tensor.h"
#include "worker/checkpoint/safetensors.h"

namespace tessera {

// Where the tensors returned by Checkpoint::Get() live.
enum class WeightResidency {
  kMapped,  // zero-copy views of the memory-mapped files (page cache)
  kCopied,  // owned copies read with pread (huge-page backed when large)
};

// Parses "mmap" / "copy"; otherwise INVALID_ARGUMENT naming `flag` and the value.
absl::StatusOr<WeightResidency> ParseWeightResidency(absl::string_view text,
                                                     absl::string_view flag = "--weights");
// The --help text of a --weights flag.
inline constexpr char kWeightResidencyHelp[] =
    "copy: read weights into huge-page memory (faster decode); mmap: use them in place from the "
    "page cache (faster start, shared between processes)";

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::string& dir, WeightResidency residency = WeightResidency::kMapped);
  WeightResidency residency() const { return residency_; }

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& dir() const { return dir_; }
  bool Has(absl::string_view name) const;
  // NOT_FOUND "tensor 'x' not found in checkpoint DIR".
  absl::StatusOr<const TensorInfo*> Info(absl::string_view name) const;
  // Sorted tensor names.
  std::vector<std::string> TensorNames() const;
  // Names of the tensors nobody has read or inspected (Info, Get*, ReadSlice) since Open, sorted.
  // After a single-rank model load these are tensors the architecture does not know: a sign that
  // config.json does not declare a feature the weights have (e.g. mlp_bias).
  std::vector<std::string> UnusedTensorNames() const;
  // The shard files, in the order they were opened.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // Total bytes of tensor data over all shards.
  uint64_t total_bytes() const;

  // The tensor on the host: a zero-copy view (kMapped) or an owned copy (kCopied, counted in
  // bytes_read()).
  absl::StatusOr<Tensor> Get(absl::string_view name) const;
  // Get() plus shape (and optionally dtype) checks; INVALID_ARGUMENT names tensor, file, shapes.
  absl::StatusOr<Tensor> GetChecked(absl::string_view name,
                                    absl::Span<const int64_t> expected_shape,
                                    std::optional<DType> expected_dtype = std::nullopt) const;
  // Owned contiguous copy converted to `dtype` (e.g. norm weights to f32).
  absl::StatusOr<Tensor> GetAs(absl::string_view name, DType dtype) const;
  // Owned contiguous copy of [start, end) along `dim`, in the checkpoint dtype, read with pread
  // touching only those bytes. INVALID_ARGUMENT for a bad dim or range.
  absl::StatusOr<Tensor> ReadSlice(absl::string_view name, int dim, int64_t start,
                                   int64_t end) const;
  // ReadSlice into ordinary heap memory that is freed with the tensor (the arena never gives
  // memory back): for data a loader only reads once to build weights in another layout.
  absl::StatusOr<Tensor> ReadSliceScratch(absl::string_view name, int dim, int64_t start,
                                          int64_t end) const;
  // [start, end) along `dim`: with kMapped a zero-copy view when those bytes are one contiguous
  // run of the file (dim 0, or every dim before `dim` has size 1), else (and with kCopied)
  // ReadSlice. INVALID_ARGUMENT for a
  // bad dim or range.
  absl::StatusOr<Tensor> GetSlice(absl::string_view name, int dim, int64_t start,
                                  int64_t end) const;
  // An uninitialised owned tensor in the same memory as kCopied weights (huge-page arena, also
  // under kMapped): for weights a loader stores in another layout than the file (gpt-oss's
  // stacked experts, transposed). Not counted in bytes_read().
  absl::StatusOr<Tensor> NewWeightTensor(const Shape& shape, DType dtype) const {
    return NewOwned(shape, dtype);
  }
  // Bytes fetched by ReadSlice / GetAs (and Get / GetChecked / GetSlice when kCopied) so far.
  uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }
  // Bytes handed out so far: views (Get, GetChecked, GetSlice) plus bytes_read().
  uint64_t bytes_loaded() const {
    return bytes_mapped_.load(std::memory_order_relaxed) + bytes_read();
  }

 private:
  Checkpoint() = default;
  struct Location {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  absl::StatusOr<Location> Locate(absl::string_view name) const;

  // Get() for a located tensor: a view or a pread copy, by residency_.
  absl::StatusOr<Tensor> Fetch(const Location& loc) const;
  // An uninitialised owned tensor carved from arena_ (huge-page backed).
  absl::StatusOr<Tensor> NewOwned(const Shape& shape, DType dtype) const;
  // ReadSlice into the arena, or into heap memory when `scratch`.
  absl::StatusOr<Tensor> ReadSliceTo(absl::string_view name, int dim, int64_t start, int64_t end,
                                     bool scratch) const;

  std::string dir_;
  WeightResidency residency_ = WeightResidency::kMapped;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, Location> tensors_;
  mutable absl::Mutex used_mu_;
  mutable absl::flat_hash_set<std::string> used_;  // guarded by used_mu_
  mutable std::atomic<uint64_t> bytes_read_{0};
  mutable std::atomic<uint64_t> bytes_mapped_{0};
  // Owned copies (Fetch when kCopied, GetAs, ReadSlice) live here; the model keeps the chunks
  // alive through its tensors.
  mutable HostArena arena_;
};

}  // namespace tessera
