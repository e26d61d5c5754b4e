// CudaGraph (kernels/cuda/cuda_device.h): a decode-step-shaped sequence of kernels (RMSNorm, GEMV
// projections, SiLU-and-mul, residual add, split-K paged attention) captured once and replayed on
// new inputs copied into the captured buffers must give the CPU result for those inputs; a failing
// body returns its error and leaves the device usable. Skips without a CUDA device.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/device.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test_util.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

namespace tessera {
namespace {

#ifdef TESSERA_WITH_CUDA
using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

class CudaGraphTest : public testing::CudaKernelTest {};

// Copies host `src` into the existing device tensor `dst` (same shape, contiguous).
void Upload(const Tensor& src, Tensor& dst) {
  ASSERT_TRUE(CopyBytes(dst.raw_data(), dst.device(), src.raw_data(), Device::Cpu(), src.nbytes())
                  .ok());
}

TEST_F(CudaGraphTest, ReplayOnNewInputsMatchesCpu) {
  const int64_t m = 4, hidden = 256, inter = 384;
  LinearWeight up, down;
  up.weight = RandomTensor({2 * inter, hidden}, 1, -0.2f, 0.2f).To(DType::kBF16).value();
  down.weight = RandomTensor({hidden, inter}, 2, -0.2f, 0.2f).To(DType::kBF16).value();
  const Tensor norm_w = RandomTensor({hidden}, 3, 0.5f, 1.5f);
  LinearWeight up_d = up, down_d = down;
  up_d.weight = ToCuda(up.weight);
  down_d.weight = ToCuda(down.weight);
  const Tensor norm_d = ToCuda(norm_w);

  auto mlp = [&](const Tensor& x, Tensor& residual, Tensor& normed, Tensor& h, Tensor& a,
                 Tensor& y) -> absl::Status {
    if (absl::Status s = RmsNorm(x, x.device().is_cpu() ? norm_w : norm_d, 1e-6f, normed); !s.ok())
      return s;
    if (absl::Status s = Linear(normed, x.device().is_cpu() ? up : up_d, Tensor(), h); !s.ok())
      return s;
    if (absl::Status s = SiluAndMul(h, a); !s.ok()) return s;
    if (absl::Status s = Linear(a, x.device().is_cpu() ? down : down_d, Tensor(), y); !s.ok())
      return s;
    return Axpy(1.0f, y, residual);
  };

  Tensor x = ToCuda(RandomTensor({m, hidden}, 4)), residual = ToCuda(RandomTensor({m, hidden}, 5));
  Tensor normed = ToCuda(Tensor::Zeros({m, hidden}, DType::kF32).value());
  Tensor h = ToCuda(Tensor::Zeros({m, 2 * inter}, DType::kF32).value());
  Tensor a = ToCuda(Tensor::Zeros({m, inter}, DType::kF32).value());
  Tensor y = ToCuda(Tensor::Zeros({m, hidden}, DType::kF32).value());
  ASSERT_TRUE(mlp(x, residual, normed, h, a, y).ok());  // warm-up outside the capture
  absl::StatusOr<cuda::CudaGraph> graph =
      cuda::CudaGraph::Capture(0, [&] { return mlp(x, residual, normed, h, a, y); });
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_GE(graph->num_nodes(), 5u);

  for (uint64_t round = 0; round < 3; ++round) {
    const Tensor new_x = RandomTensor({m, hidden}, 10 + round);
    const Tensor new_res = RandomTensor({m, hidden}, 20 + round);
    Upload(new_x, x);
    Upload(new_res, residual);
    ASSERT_TRUE(graph->Replay().ok());
    Tensor ref_res = new_res.Clone().value();
    Tensor rn = Tensor::Empty({m, hidden}, DType::kF32).value();
    Tensor rh = Tensor::Empty({m, 2 * inter}, DType::kF32).value();
    Tensor ra = Tensor::Empty({m, inter}, DType::kF32).value();
    Tensor ry = Tensor::Empty({m, hidden}, DType::kF32).value();
    ASSERT_TRUE(mlp(new_x, ref_res, rn, rh, ra, ry).ok());
    EXPECT_LT(RelativeError(ToHost(residual), ref_res), 1e-5) << "round " << round;
  }
}

TEST_F(CudaGraphTest, SplitKAttentionScratchSurvivesOtherAllocations) {
  // Batch 1 over 3000 keys takes the split-K path, whose partial buffer is freed inside the
  // capture: it must stay reserved for the graph while other tensors are allocated.
  const int64_t heads = 8, kv_heads = 2, d = 64, ctx = 3000, bs = 32, blocks = (ctx + bs - 1) / bs;
  const Tensor kc = RandomTensor({blocks, bs, kv_heads, d}, 30);
  const Tensor vc = RandomTensor({blocks, bs, kv_heads, d}, 31);
  std::vector<int32_t> table(blocks);
  for (int64_t i = 0; i < blocks; ++i) table[i] = static_cast<int32_t>(blocks - 1 - i);
  const Tensor bt = Tensor::FromVector(absl::MakeConstSpan(table), {1, blocks});
  const Tensor sl = Tensor::FromVector(std::vector<int32_t>{static_cast<int32_t>(ctx)}, {1});
  const Tensor qsl = Tensor::FromVector(std::vector<int32_t>{0, 1}, {2});
  AttentionParams params;
  params.scale = 0.125f;
  const Tensor kc_d = ToCuda(kc), vc_d = ToCuda(vc), bt_d = ToCuda(bt), sl_d = ToCuda(sl);
  const Tensor qsl_d = ToCuda(qsl);
  Tensor q = ToCuda(RandomTensor({1, heads, d}, 32));
  Tensor out = ToCuda(Tensor::Zeros({1, heads, d}, DType::kF32).value());
  auto step = [&] { return PagedAttention(q, kc_d, vc_d, bt_d, sl_d, qsl_d, params, out); };
  ASSERT_TRUE(step().ok());
  absl::StatusOr<cuda::CudaGraph> graph = cuda::CudaGraph::Capture(0, step);
  ASSERT_TRUE(graph.ok()) << graph.status();
  // Other work allocates and writes same-sized buffers between replays.
  std::vector<Tensor> noise;
  for (int i = 0; i < 4; ++i) noise.push_back(ToCuda(RandomTensor({heads * 32 * (d + 2)}, 40 + i)));
  const Tensor new_q = RandomTensor({1, heads, d}, 33);
  Upload(new_q, q);
  ASSERT_TRUE(graph->Replay().ok());
  Tensor ref = Tensor::Zeros({1, heads, d}, DType::kF32).value();
  ASSERT_TRUE(PagedAttention(new_q, kc, vc, bt, sl, qsl, params, ref).ok());
  EXPECT_LT(RelativeError(ToHost(out), ref), 2e-5);
}

TEST_F(CudaGraphTest, FailingBodyReturnsItsErrorAndTheDeviceStaysUsable) {
  absl::StatusOr<cuda::CudaGraph> graph = cuda::CudaGraph::Capture(
      0, [] { return absl::InvalidArgumentError("body refused"); });
  ASSERT_FALSE(graph.ok());
  EXPECT_EQ(graph.status().message(), "body refused");
  const Tensor host = RandomTensor({100}, 50);
  EXPECT_EQ(RelativeError(ToHost(ToCuda(host)), host), 0.0);
}
#endif  // TESSERA_WITH_CUDA

}  // namespace
}  // namespace tessera
