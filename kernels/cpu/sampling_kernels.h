// ISA-specific loops of the CPU sampler (kernels/cpu/sampling.cc). The AVX-512 variant may only
// be called after a run-time check (cpu::ActiveIsa()). Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace tessera::cpu::sampling_internal {

// sum_i exp(x[i] - max_value) for x[i] <= max_value (x[i] = -inf contributes 0); relative error
// about 1e-6.
double SumExpAvx512(const float* x, int64_t n, float max_value);

// w[i] = exp((x[i] - max_value) / temperature) for x[i] <= max_value; relative error about 1e-6,
// exactly 0 where the exponent is below -87.
void WeightsAvx512(const float* x, int64_t n, float max_value, float temperature, float* w);

}  // namespace tessera::cpu::sampling_internal
