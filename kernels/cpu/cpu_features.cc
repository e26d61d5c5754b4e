// Run-time CPU feature detection (see cpu_features.h).
#include "kernels/cpu/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera::cpu {
namespace {

bool DetectAvx2Fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool DetectAvx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return DetectAvx2Fma() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

// Sentinel for "no programmatic override".
constexpr int kNoOverride = -1;
std::atomic<int> g_override{kNoOverride};

int EnvOverride() {
  static const int value = [] {
    const char* env = std::getenv("TESSERA_CPU_ISA");
    if (env == nullptr || *env == '\0') return static_cast<int>(Isa::kAvx512);
    absl::StatusOr<Isa> isa = ParseIsa(env);
    if (!isa.ok()) {
      LOG(WARNING) << "ignoring TESSERA_CPU_ISA: " << isa.status().message();
      return static_cast<int>(Isa::kAvx512);
    }
    return static_cast<int>(*isa);
  }();
  return value;
}

}  // namespace

bool HasAvx2Fma() {
  static const bool value = DetectAvx2Fma();
  return value;
}

bool HasAvx512() {
  static const bool value = DetectAvx512();
  return value;
}

bool HasAvx512Bf16() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool value = HasAvx512() && __builtin_cpu_supports("avx512bf16");
  return value;
#else
  return false;
#endif
}

bool HasAvx512Vnni() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool value = HasAvx512() && __builtin_cpu_supports("avx512vnni");
  return value;
#else
  return false;
#endif
}

Isa BestSupportedIsa() {
  if (HasAvx512()) return Isa::kAvx512;
  if (HasAvx2Fma()) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa ActiveIsa() {
  int cap = g_override.load(std::memory_order_relaxed);
  if (cap == kNoOverride) cap = EnvOverride();
  return static_cast<Isa>(std::min(cap, static_cast<int>(BestSupportedIsa())));
}

bool ActiveIsaHasBf16() { return ActiveIsa() == Isa::kAvx512 && HasAvx512Bf16(); }

absl::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

absl::string_view ActiveIsaName() { return IsaName(ActiveIsa()); }

absl::StatusOr<Isa> ParseIsa(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "scalar") return Isa::kScalar;
  if (lower == "avx2") return Isa::kAvx2;
  if (lower == "avx512") return Isa::kAvx512;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown CPU ISA '", name, "' (expected scalar, avx2 or avx512)"));
}

void SetIsaOverride(std::optional<Isa> isa) {
  g_override.store(isa.has_value() ? static_cast<int>(*isa) : kNoOverride,
                   std::memory_order_relaxed);
}

}  // namespace tessera::cpu
