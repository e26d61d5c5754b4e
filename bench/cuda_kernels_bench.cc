// CUDA kernel benchmark (issue 7): every number as a ratio to a limit measured in the same run.
//
//   cuda_kernels_bench [--device 0] [--reps 20]
//
// Limits: device copy bandwidth (a 1 GiB cudaMemcpyAsync device-to-device, counting bytes read
// plus written) and the cuBLASLt bf16 matrix rate (the prefill Linear at 8192^3, used as the
// "matrix peak" the prefill rows are compared with). Then:
//  - decode GEMV (bf16, fp8 e4m3 with block scales; m = 1 and 8) over a 16384 x 8192 weight
//    (256 / 128 MiB, far above L2): weight bytes per second / copy bandwidth;
//  - prefill GEMM (m = 2048, bf16 weights 8192 x 8192): TFLOP/s;
//  - paged attention decode (32 heads, 8 kv heads, head_dim 128, 4096-token contexts, batch 1, 8,
//    64): KV bytes read per second / copy bandwidth;
//  - sampling (vocab 151936; greedy and top-k 50 + top-p 0.9; batch 1 and 64): microseconds.
// Inputs are random (never zeros); each case is warmed up and the median of --reps timed runs
// (CUDA events on the device stream) is printed. Without a GPU (or in a CPU-only build) it says
// so and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {
namespace {

#ifdef TESSERA_WITH_CUDA

Tensor RandomDevice(std::vector<int64_t> shape, DType dtype, uint64_t seed, float lo = -1.0f,
                    float hi = 1.0f) {
  Tensor host = Tensor::Empty(shape, DType::kF32).value();
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  float* p = host.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    p[i] = lo + (hi - lo) * static_cast<float>(state >> 40) / static_cast<float>(1 << 24);
  }
  Tensor typed = dtype == DType::kF32 ? host : host.To(dtype).value();
  return typed.ToDevice(Device::Cuda(0)).value();
}

// Median milliseconds of `reps` runs of fn (after two warm-ups), timed with events.
double MedianMs(cuda::DeviceContext* ctx, int reps, const std::function<void()>& fn) {
  fn();
  fn();
  std::vector<double> ms;
  cuda::Event start = cuda::Event::Create(true).value(), stop = cuda::Event::Create(true).value();
  for (int r = 0; r < reps; ++r) {
    CHECK_OK(start.Record(ctx->stream()));
    fn();
    CHECK_OK(stop.Record(ctx->stream()));
    CHECK_OK(stop.Synchronize());
    ms.push_back(cuda::Event::ElapsedMs(start, stop).value());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int Run(int reps) {
  cuda::DeviceContext* ctx = cuda::Activate(0).value();
  // Copy bandwidth.
  const size_t copy_bytes = size_t{1} << 30;
  Tensor a = Tensor::Empty({static_cast<int64_t>(copy_bytes)}, DType::kU8, Device::Cuda(0)).value();
  Tensor b = Tensor::Empty({static_cast<int64_t>(copy_bytes)}, DType::kU8, Device::Cuda(0)).value();
  const double copy_ms = MedianMs(ctx, reps, [&] {
    CHECK_EQ(cudaMemcpyAsync(b.raw_data(), a.raw_data(), copy_bytes, cudaMemcpyDeviceToDevice,
                             ctx->stream()),
             cudaSuccess);
  });
  const double copy_bw = 2.0 * copy_bytes / (copy_ms * 1e-3);
  std::printf("device copy bandwidth: %.0f GB/s (read + write)\n", copy_bw / 1e9);

  // Prefill GEMM and its matrix rate.
  {
    const int64_t m = 8192, n = 8192, k = 8192;
    LinearWeight w;
    w.weight = RandomDevice({n, k}, DType::kBF16, 1);
    Tensor x = RandomDevice({m, k}, DType::kF32, 2);
    Tensor out = Tensor::Empty({m, n}, DType::kF32, Device::Cuda(0)).value();
    const double ms = MedianMs(ctx, reps, [&] { CHECK_OK(Linear(x, w, Tensor(), out)); });
    std::printf("matrix rate (Linear bf16 8192^3, incl. x rounding): %.1f TFLOP/s\n",
                2.0 * m * n * k / (ms * 1e-3) / 1e12);
  }
  {
    const int64_t m = 2048, n = 8192, k = 8192;
    LinearWeight w;
    w.weight = RandomDevice({n, k}, DType::kBF16, 3);
    Tensor x = RandomDevice({m, k}, DType::kF32, 4);
    Tensor out = Tensor::Empty({m, n}, DType::kF32, Device::Cuda(0)).value();
    const double ms = MedianMs(ctx, reps, [&] { CHECK_OK(Linear(x, w, Tensor(), out)); });
    std::printf("prefill GEMM m=2048 n=k=8192 bf16: %.3f ms, %.1f TFLOP/s\n", ms,
                2.0 * m * n * k / (ms * 1e-3) / 1e12);
  }
  // Decode GEMV.
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    const int64_t n = 16384, k = 8192;
    LinearWeight w;
    w.weight = RandomDevice({n, k}, dtype, 5, -200.0f, 200.0f);
    if (dtype == DType::kF8E4M3) w.scale_inv = RandomDevice({n / 128, k / 128}, DType::kF32, 6);
    for (int64_t m : {1, 8}) {
      Tensor x = RandomDevice({m, k}, DType::kF32, 7);
      Tensor out = Tensor::Empty({m, n}, DType::kF32, Device::Cuda(0)).value();
      const double ms = MedianMs(ctx, reps, [&] { CHECK_OK(Linear(x, w, Tensor(), out)); });
      const double bytes = static_cast<double>(w.weight.nbytes());
      std::printf("decode GEMV %s m=%ld: %.3f ms, %.0f GB/s = %.2f of copy bandwidth\n",
                  std::string(DTypeName(dtype)).c_str(), static_cast<long>(m), ms,
                  bytes / (ms * 1e-3) / 1e9, bytes / (ms * 1e-3) / copy_bw);
    }
  }
  // Paged attention decode.
  for (int64_t batch : {1, 8, 64}) {
    const int64_t heads = 32, kv_heads = 8, d = 128, ctx_len = 4096, bs = 16;
    const int64_t blocks_per_seq = ctx_len / bs, num_blocks = batch * blocks_per_seq;
    Tensor k_cache = RandomDevice({num_blocks, bs, kv_heads, d}, DType::kF32, 8);
    Tensor v_cache = RandomDevice({num_blocks, bs, kv_heads, d}, DType::kF32, 9);
    std::vector<int32_t> table(batch * blocks_per_seq), lens(batch, ctx_len), qsl(batch + 1);
    for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
    for (int64_t s = 0; s <= batch; ++s) qsl[s] = static_cast<int32_t>(s);
    Tensor bt = Tensor::FromVector(table, {batch, blocks_per_seq}).ToDevice(Device::Cuda(0)).value();
    Tensor sl = Tensor::FromVector(lens, {batch}).ToDevice(Device::Cuda(0)).value();
    Tensor ql = Tensor::FromVector(qsl, {batch + 1}).ToDevice(Device::Cuda(0)).value();
    Tensor q = RandomDevice({batch, heads, d}, DType::kF32, 10);
    Tensor out = Tensor::Empty({batch, heads, d}, DType::kF32, Device::Cuda(0)).value();
    AttentionParams params;
    params.scale = 0.088f;
    const double ms = MedianMs(ctx, reps, [&] {
      CHECK_OK(PagedAttention(q, k_cache, v_cache, bt, sl, ql, params, out));
    });
    const double bytes = 2.0 * batch * ctx_len * kv_heads * d * sizeof(float);
    std::printf("paged attention decode batch=%ld ctx=4096: %.3f ms, %.0f GB/s = %.2f of copy "
                "bandwidth\n",
                static_cast<long>(batch), ms, bytes / (ms * 1e-3) / 1e9,
                bytes / (ms * 1e-3) / copy_bw);
  }
  // Sampling.
  for (int64_t rows : {1, 64}) {
    const int64_t vocab = 151936;
    Tensor logits = RandomDevice({rows, vocab}, DType::kF32, 11, -10.0f, 10.0f);
    for (bool greedy : {true, false}) {
      std::vector<SamplingParams> params(rows);
      for (auto& p : params) {
        p.temperature = greedy ? 0.0f : 0.8f;
        p.top_k = greedy ? 0 : 50;
        p.top_p = greedy ? 1.0f : 0.9f;
        p.seed = 1;
      }
      std::vector<absl::Span<const int32_t>> none(rows);
      std::vector<uint64_t> steps(rows, 0);
      std::vector<double> u(rows, 0.5);
      const double ms = MedianMs(ctx, reps, [&] {
        CHECK_OK(cuda::SampleRows(logits, params, none, none, steps, u).status());
      });
      std::printf("sampling %s rows=%ld vocab=151936: %.1f us (incl. the result copy)\n",
                  greedy ? "greedy" : "top-k 50 + top-p 0.9", static_cast<long>(rows),
                  ms * 1e3);
    }
  }
  return 0;
}

#endif  // TESSERA_WITH_CUDA

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  int reps = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::max(1, std::atoi(argv[i + 1]));
  }
  if (tessera::CudaDeviceCount() == 0) {
    std::printf("cuda_kernels_bench: no CUDA device (built with CUDA: %s); nothing to measure\n",
                tessera::BuiltWithCuda() ? "yes" : "no");
    return 0;
  }
#ifdef TESSERA_WITH_CUDA
  CHECK_OK(tessera::InitBackends());
  return tessera::Run(reps);
#else
  return 0;
#endif
}
