// libFuzzer target for the safetensors header parser and file reader. Not part of the default
// build (tests/CMakeLists.txt only collects *_test.cc); the normal suite runs the deterministic
// tests/worker/safetensors_fuzz_test.cc instead. Build and run by hand, e.g.:
//
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
//     tests/fuzz/safetensors_fuzzer.cc worker/checkpoint/safetensors.cc kernels/base/*.cc \
//     $(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format \
//       absl_synchronization absl_raw_hash_set absl_hash) -o /tmp/safetensors_fuzzer
//   /tmp/safetensors_fuzzer -max_total_time=60 -max_len=4096
//
// Input: the bytes of a whole .safetensors file. The target checks the invariants of accepted
// files (every tensor inside the file, sizes consistent) and touches every tensor byte.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "worker/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tessera::SafetensorsFile;
  using tessera::TensorInfo;
  static const std::string path =
      "/tmp/tessera_safetensors_fuzzer_" + std::to_string(::getpid()) + ".safetensors";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  volatile uint64_t sink = 0;
  for (const TensorInfo& t : (*file)->tensors()) {
    if (t.data_end > (*file)->file_size() || t.data_begin < (*file)->data_offset() ||
        t.nbytes() != static_cast<uint64_t>(t.numel()) * tessera::DTypeSize(t.dtype)) {
      std::abort();
    }
    auto view = (*file)->View(t.name);
    if (!view.ok()) std::abort();
    const uint8_t* p = static_cast<const uint8_t*>(view->raw_data());
    for (uint64_t i = 0; i < t.nbytes(); ++i) sink = sink + p[i];
  }
  return 0;
}
