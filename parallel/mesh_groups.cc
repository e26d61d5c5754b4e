#include "parallel/mesh_groups.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"

namespace tessera {

absl::StatusOr<MeshGroups> CreateMeshGroups(Communicator& world, const Mesh& mesh) {
  const MeshShape& s = mesh.shape();
  if (s.world_size() != world.size()) {
    return absl::InvalidArgumentError(absl::StrCat("mesh ", mesh.ToString(), " has ",
                                                   s.world_size(), " ranks but group '",
                                                   world.name(), "' has ", world.size()));
  }
  const MeshCoord c = mesh.Coord(world.rank());
  // Every rank creates its groups in the same order: tp, dp, ep, pp.
  MeshGroups groups;
  std::vector<int> ranks;
  for (int t = 0; t < s.tp; ++t) ranks.push_back(mesh.RankOf(t, c.dp_rank, c.pp_rank));
  ASSIGN_OR_RETURN(groups.tp,
                   world.NewGroup(ranks, absl::StrCat(world.name(), "/tp", c.dp_rank, ".",
                                                      c.pp_rank)));
  ranks.clear();
  for (int d = 0; d < s.dp; ++d) ranks.push_back(mesh.RankOf(c.tp_rank, d, c.pp_rank));
  ASSIGN_OR_RETURN(groups.dp,
                   world.NewGroup(ranks, absl::StrCat(world.name(), "/dp", c.tp_rank, ".",
                                                      c.pp_rank)));
  if (s.ep > 1) {
    ranks.clear();
    for (int d = 0; d < s.dp; ++d) {
      for (int t = 0; t < s.tp; ++t) ranks.push_back(mesh.RankOf(t, d, c.pp_rank));
    }
    ASSIGN_OR_RETURN(groups.ep,
                     world.NewGroup(ranks, absl::StrCat(world.name(), "/ep", c.pp_rank)));
  }
  ranks.clear();
  for (int p = 0; p < s.pp; ++p) ranks.push_back(mesh.RankOf(c.tp_rank, c.dp_rank, p));
  ASSIGN_OR_RETURN(groups.pp,
                   world.NewGroup(ranks, absl::StrCat(world.name(), "/pp", c.tp_rank, ".",
                                                      c.dp_rank)));
  return groups;
}

}  // namespace tessera
