// Minimal NumPy .npy reader/writer (format version 1.0, little-endian, C order) for f32, i32 and
// i64 arrays: `tessera generate --dump-logits` writes logits with it and tests read them back.
// Stateless and thread safe (distinct files).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"

namespace tessera {

// Writes `tensor` (f32, i32 or i64; any strides) to `path` as an .npy array of its shape.
// Errors name the path.
absl::Status WriteNpy(const std::string& path, const Tensor& tensor);

// Reads an .npy file written by WriteNpy (or numpy: '<f4', '<i4', '<i8', C order).
absl::StatusOr<Tensor> ReadNpy(const std::string& path);

}  // namespace tessera
