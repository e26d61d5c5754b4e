// Run-time CPU feature detection and the ISA override used by the CPU kernels.
//
// The CPU kernels come in scalar, AVX2+FMA and AVX-512 variants, compiled into separate files
// (*_avx2.cc, *_avx512.cc) and chosen at run time by ActiveIsa(): the best ISA this CPU supports,
// capped by the environment variable TESSERA_CPU_ISA=scalar|avx2|avx512 (read once) or by
// SetIsaOverride() (tests use it to exercise every path on one machine). An override above what
// the CPU supports is clamped to what it supports.
//
// Thread safety: the Has*() queries are pure. SetIsaOverride() may race with kernels that are
// running; call it only between kernel calls (tests do).
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera::cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// AVX2 together with FMA3 and F16C.
bool HasAvx2Fma();
// AVX-512 F + BW + VL + DQ (and the AVX2+FMA baseline).
bool HasAvx512();
// AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16).
bool HasAvx512Bf16();
// AVX512_VNNI.
bool HasAvx512Vnni();

// The best ISA this CPU supports, ignoring any override.
Isa BestSupportedIsa();
// The ISA the kernels use now: min(BestSupportedIsa(), override).
Isa ActiveIsa();
// True when the AVX-512 kernels may also use AVX512_BF16 instructions (ActiveIsa() is kAvx512
// and the CPU has them).
bool ActiveIsaHasBf16();
// "scalar", "avx2" or "avx512".
absl::string_view IsaName(Isa isa);
absl::string_view ActiveIsaName();
// Parses "scalar", "avx2", "avx512" (case-insensitive).
absl::StatusOr<Isa> ParseIsa(absl::string_view name);

// Caps the ISA (std::nullopt: back to TESSERA_CPU_ISA, or no cap without it).
void SetIsaOverride(std::optional<Isa> isa);

}  // namespace tessera::cpu
