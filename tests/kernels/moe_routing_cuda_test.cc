// CUDA MoE router (kernels/cuda/moe_routing.cu) against the CPU router: every scoring mode with
// the real models' expert counts, group-limited selection with correction bias, renormalisation
// and routed scaling. The selected experts must be identical, the weights within f32 rounding.
// Skips without a CUDA device.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::PoisonedCuda;
using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

struct RouteCase {
  std::string name;
  int num_experts;
  RouterConfig config;
  bool bias = false;
};

class CudaMoeRouteTest : public testing::CudaKernelParamTest<RouteCase> {};

TEST_P(CudaMoeRouteTest, MatchesCpu) {
  const RouteCase& c = GetParam();
  const int64_t tokens = 37, k = c.config.top_k;
  const Tensor logits = RandomTensor({tokens, c.num_experts}, 21, -4.0f, 4.0f);
  const Tensor bias = c.bias ? RandomTensor({c.num_experts}, 22, -0.5f, 0.5f) : Tensor();
  Tensor ref_w = Tensor::Empty({tokens, k}, DType::kF32).value();
  Tensor ref_i = Tensor::Empty({tokens, k}, DType::kI32).value();
  ASSERT_TRUE(MoeRoute(logits, bias, c.config, ref_w, ref_i).ok());
  Tensor w = PoisonedCuda({tokens, k});
  Tensor ids = ToCuda(Tensor::Zeros({tokens, k}, DType::kI32).value());
  const absl::Status s = MoeRoute(ToCuda(logits), ToCuda(bias), c.config, w, ids);
  ASSERT_TRUE(s.ok()) << s;
  const Tensor got_i = ToHost(ids);
  for (int64_t i = 0; i < tokens * k; ++i) {
    ASSERT_EQ(got_i.data<int32_t>()[i], ref_i.data<int32_t>()[i]) << "entry " << i;
  }
  EXPECT_LT(RelativeError(ToHost(w), ref_w), 1e-5);
}

RouterConfig Config(RouterConfig::Scoring scoring, int top_k, bool renormalize) {
  RouterConfig c;
  c.scoring = scoring;
  c.top_k = top_k;
  c.renormalize = renormalize;
  return c;
}

std::vector<RouteCase> Cases() {
  using S = RouterConfig::Scoring;
  std::vector<RouteCase> cases;
  cases.push_back({"mixtral", 8, Config(S::kSoftmax, 2, true)});
  cases.push_back({"qwen3_moe", 128, Config(S::kSoftmax, 8, true)});
  cases.push_back({"qwen2_moe_no_renorm", 60, Config(S::kSoftmax, 4, false)});
  cases.push_back({"gpt_oss", 32, Config(S::kSoftmaxTopK, 4, false)});
  RouterConfig ds = Config(S::kSigmoid, 8, true);
  ds.n_group = 8;
  ds.topk_group = 4;
  ds.routed_scaling_factor = 2.5f;
  cases.push_back({"deepseek_v3", 256, ds, true});
  RouterConfig kimi = Config(S::kSigmoid, 8, true);
  kimi.routed_scaling_factor = 2.827f;
  cases.push_back({"kimi_k2", 384, kimi, true});
  RouterConfig glm = Config(S::kSigmoid, 8, true);
  glm.routed_scaling_factor = 2.5f;
  cases.push_back({"glm45", 160, glm, true});
  cases.push_back({"sigmoid_no_bias", 64, Config(S::kSigmoid, 6, false)});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Models, CudaMoeRouteTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<RouteCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace tessera
