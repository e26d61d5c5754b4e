// CUDA MoE expert computation (kernels/cuda/moe.cu): routing, permutation, both expert
// projections with SiLU-and-mul in between, and the weighted un-permutation on the device, against
// the same layer computed on the CPU token by token with Linear. Decode-sized and prefill-sized
// batches, bf16 and fp8 (block-scaled) expert weights. Skips without a CUDA device.
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test_util.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {
namespace {

#ifdef TESSERA_WITH_CUDA
using ::tessera::testing::PoisonedCuda;
using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

LinearWeight MakeWeight(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  LinearWeight w;
  if (dtype == DType::kF8E4M3) {
    w.weight = RandomTensor({n, k}, seed, -300.0f, 300.0f).To(dtype).value();
    w.scale_inv = RandomTensor({(n + 127) / 128, (k + 127) / 128}, seed + 1, 1e-3f, 3e-3f);
  } else {
    w.weight = RandomTensor({n, k}, seed, -0.3f, 0.3f).To(dtype).value();
  }
  return w;
}

LinearWeight OnCuda(const LinearWeight& w) {
  LinearWeight d = w;
  d.weight = ToCuda(w.weight);
  d.scale_inv = ToCuda(w.scale_inv);
  return d;
}

struct MoeCase {
  int64_t tokens;
  DType dtype;
};

class CudaMoeLayerTest : public testing::CudaKernelParamTest<MoeCase> {};

TEST_P(CudaMoeLayerTest, MatchesTokenByTokenCpu) {
  const auto [tokens, dtype] = GetParam();
  const int num_experts = 16, top_k = 4;
  const int64_t hidden = 64, inter = 96;
  std::vector<LinearWeight> gate_up, down, gate_up_dev, down_dev;
  for (int e = 0; e < num_experts; ++e) {
    gate_up.push_back(MakeWeight(dtype, 2 * inter, hidden, 100 + 2 * e));
    down.push_back(MakeWeight(dtype, hidden, inter, 200 + 2 * e));
    gate_up_dev.push_back(OnCuda(gate_up.back()));
    down_dev.push_back(OnCuda(down.back()));
  }
  const Tensor x = RandomTensor({tokens, hidden}, 1);
  const Tensor logits = RandomTensor({tokens, num_experts}, 2, -3.0f, 3.0f);
  RouterConfig config;
  config.top_k = top_k;
  config.renormalize = true;

  // CPU: route, then every (token, slot) through its expert.
  Tensor w_ref = Tensor::Empty({tokens, top_k}, DType::kF32).value();
  Tensor ids_ref = Tensor::Empty({tokens, top_k}, DType::kI32).value();
  ASSERT_TRUE(MoeRoute(logits, Tensor(), config, w_ref, ids_ref).ok());
  Tensor ref = Tensor::Zeros({tokens, hidden}, DType::kF32).value();
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const int e = ids_ref.data<int32_t>()[t * top_k + j];
      Tensor h = Tensor::Empty({1, 2 * inter}, DType::kF32).value();
      Tensor a = Tensor::Empty({1, inter}, DType::kF32).value();
      Tensor y = Tensor::Empty({1, hidden}, DType::kF32).value();
      ASSERT_TRUE(Linear(x.Slice(0, t, t + 1), gate_up[e], Tensor(), h).ok());
      ASSERT_TRUE(SiluAndMul(h, a).ok());
      ASSERT_TRUE(Linear(a, down[e], Tensor(), y).ok());
      Tensor row = ref.Slice(0, t, t + 1);
      ASSERT_TRUE(Axpy(w_ref.data<float>()[t * top_k + j], y, row).ok());
    }
  }

  // Device: the same layer without a host round trip.
  const Tensor dx = ToCuda(x);
  Tensor w = PoisonedCuda({tokens, top_k});
  Tensor ids = ToCuda(Tensor::Zeros({tokens, top_k}, DType::kI32).value());
  ASSERT_TRUE(MoeRoute(ToCuda(logits), Tensor(), config, w, ids).ok());
  absl::StatusOr<cuda::MoePermutation> perm = cuda::MoePermute(ids, num_experts);
  ASSERT_TRUE(perm.ok()) << perm.status();
  Tensor h = PoisonedCuda({tokens * top_k, 2 * inter});
  Tensor a = PoisonedCuda({tokens * top_k, inter});
  Tensor y = PoisonedCuda({tokens * top_k, hidden});
  Tensor out = PoisonedCuda({tokens, hidden});
  ASSERT_TRUE(cuda::MoeExpertLinear(dx, true, *perm, gate_up_dev, {}, h).ok());
  ASSERT_TRUE(SiluAndMul(h, a).ok());
  ASSERT_TRUE(cuda::MoeExpertLinear(a, false, *perm, down_dev, {}, y).ok());
  ASSERT_TRUE(cuda::MoeUnpermute(y, *perm, w, out).ok());
  EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5);

  // The permutation is complete: offsets end at num_slots and every slot has a row.
  const Tensor offsets = ToHost(perm->expert_offsets);
  EXPECT_EQ(offsets.data<int32_t>()[num_experts], tokens * top_k);
  const Tensor slot_pos = ToHost(perm->slot_pos);
  std::vector<int> seen(tokens * top_k, 0);
  for (int64_t s = 0; s < tokens * top_k; ++s) {
    const int p = slot_pos.data<int32_t>()[s];
    ASSERT_GE(p, 0);
    ASSERT_LT(p, tokens * top_k);
    ++seen[p];
  }
  for (int c : seen) EXPECT_EQ(c, 1);
}

INSTANTIATE_TEST_SUITE_P(Batches, CudaMoeLayerTest,
                         ::testing::Values(MoeCase{3, DType::kBF16}, MoeCase{3, DType::kF8E4M3},
                                           MoeCase{150, DType::kBF16},
                                           MoeCase{150, DType::kF32}),
                         [](const ::testing::TestParamInfo<MoeCase>& info) {
                           return absl::StrCat("t", info.param.tokens, "_",
                                               DTypeName(info.param.dtype));
                         });

class CudaMoePermuteTest : public testing::CudaKernelTest {};

TEST_F(CudaMoePermuteTest, OutOfRangeExpertIdsAreDropped) {
  const std::vector<int32_t> ids = {0, 7, 2, 99, -1, 2};
  Tensor d = ToCuda(Tensor::FromVector(absl::MakeConstSpan(ids), {3, 2}));
  absl::StatusOr<cuda::MoePermutation> perm = cuda::MoePermute(d, 8);
  ASSERT_TRUE(perm.ok()) << perm.status();
  const Tensor offsets = ToHost(perm->expert_offsets);
  EXPECT_EQ(offsets.data<int32_t>()[8], 4);  // slots with ids 0, 7, 2, 2
  const Tensor slot_pos = ToHost(perm->slot_pos);
  EXPECT_EQ(slot_pos.data<int32_t>()[3], -1);
  EXPECT_EQ(slot_pos.data<int32_t>()[4], -1);
  EXPECT_EQ(offsets.data<int32_t>()[2], 1);  // expert 0 has one row
  EXPECT_EQ(offsets.data<int32_t>()[3], 3);  // expert 2 has two
}
#endif  // TESSERA_WITH_CUDA

}  // namespace
}  // namespace tessera
