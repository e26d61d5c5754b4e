#include "parallel/mesh.h"

#include <set>
#include <tuple>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(Mesh, CoordinatesAreABijectionOverTheWorld) {
  absl::StatusOr<Mesh> mesh = Mesh::Create({.tp = 2, .dp = 2, .pp = 3, .ep = 4});
  ASSERT_TRUE(mesh.ok());
  std::set<std::tuple<int, int, int>> seen;
  std::set<int> ep_ranks_stage0;
  for (int r = 0; r < mesh->shape().world_size(); ++r) {
    MeshCoord c = mesh->Coord(r);
    EXPECT_EQ(mesh->RankOf(c.tp_rank, c.dp_rank, c.pp_rank), r);
    seen.insert({c.tp_rank, c.dp_rank, c.pp_rank});
    if (c.pp_rank == 0) ep_ranks_stage0.insert(c.ep_rank);
  }
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_EQ(ep_ranks_stage0, (std::set<int>{0, 1, 2, 3}));
}

TEST(Mesh, RejectsInvalidShapes) {
  EXPECT_FALSE(Mesh::Create({.tp = 0}).ok());
  EXPECT_FALSE(Mesh::Create({.tp = 2, .dp = 2, .ep = 3}).ok());
  EXPECT_TRUE(Mesh::Create({.tp = 2, .dp = 2, .ep = 1}).ok());
}

}  // namespace
}  // namespace tessera
