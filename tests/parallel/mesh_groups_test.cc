// CreateMeshGroups over real processes: membership and rank order of tp / dp / ep / pp groups.
#include "parallel/mesh_groups.h"

#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "tests/parallel/multi_process.h"

namespace tessera {
namespace {

using testing::ConnectRank;
using testing::Describe;
using testing::RunRanks;

// Sum over a group of (world rank + 1) * 10^group_rank identifies members and their order.
absl::StatusOr<float> Signature(Communicator& group, int world_rank) {
  float v = static_cast<float>(world_rank + 1);
  for (int i = 0; i < group.rank(); ++i) v *= 10;
  Tensor t = Tensor::FromVector(absl::Span<const float>({v}), {1});
  RETURN_IF_ERROR(group.AllReduce(t, ReduceOp::kSum));
  return t.data<float>()[0];
}

float Expected(std::initializer_list<int> ranks_in_order) {
  float v = 0, scale = 1;
  for (int r : ranks_in_order) {
    v += (r + 1) * scale;
    scale *= 10;
  }
  return v;
}

TEST(MeshGroups, TpDpEpPpGroupsFollowTheMeshCoordinates) {
  // tp=2, dp=2, pp=2, ep=4: ranks = (pp * 2 + dp) * 2 + tp.
  auto results = RunRanks(8, [](int rank, int world, const std::string& dir) -> absl::Status {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    ASSIGN_OR_RETURN(Mesh mesh, Mesh::Create({.tp = 2, .dp = 2, .pp = 2, .ep = 4}));
    ASSIGN_OR_RETURN(MeshGroups g, CreateMeshGroups(*comm, mesh));
    const MeshCoord c = mesh.Coord(rank);
    RANK_EXPECT(g.tp->rank() == c.tp_rank && g.pp->rank() == c.pp_rank &&
                g.dp->rank() == c.dp_rank && g.ep->rank() == c.ep_rank);
    const int base_tp = rank - c.tp_rank;
    ASSIGN_OR_RETURN(float tp, Signature(*g.tp, rank));
    RANK_EXPECT(tp == Expected({base_tp, base_tp + 1}), tp);
    const int base_dp = rank - 2 * c.dp_rank;
    ASSIGN_OR_RETURN(float dp, Signature(*g.dp, rank));
    RANK_EXPECT(dp == Expected({base_dp, base_dp + 2}), dp);
    const int stage = 4 * c.pp_rank;
    ASSIGN_OR_RETURN(float ep, Signature(*g.ep, rank));
    RANK_EXPECT(ep == Expected({stage, stage + 1, stage + 2, stage + 3}), ep);
    const int first = rank % 4;
    ASSIGN_OR_RETURN(float pp, Signature(*g.pp, rank));
    RANK_EXPECT(pp == Expected({first, first + 4}), pp);
    return comm->Barrier();
  });
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << Describe(results);
}

TEST(MeshGroups, MeshThatDoesNotMatchTheWorldIsInvalid) {
  auto results = RunRanks(2, [](int rank, int world, const std::string& dir) -> absl::Status {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    ASSIGN_OR_RETURN(Mesh mesh, Mesh::Create({.tp = 4}));
    auto g = CreateMeshGroups(*comm, mesh);
    RANK_EXPECT(absl::IsInvalidArgument(g.status()), g.status().ToString());
    return absl::OkStatus();
  });
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << Describe(results);
}

}  // namespace
}  // namespace tessera
