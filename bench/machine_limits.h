// Measures this machine's limits in the same run as a benchmark, so results are ratios.
#pragma once

namespace tessera::bench {

// Sustained read bandwidth in bytes/s over a buffer far larger than the caches, using
// `num_threads` threads (AVX2 loads when available).
double MeasureReadBandwidth(int num_threads, double seconds = 1.0);
// Peak f32 FMA throughput in FLOP/s with `num_threads` threads (independent FMA chains in
// registers, the widest vectors the CPU has).
double MeasureFmaPeak(int num_threads, double seconds = 0.5);

}  // namespace tessera::bench
