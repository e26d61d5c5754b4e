// MeshGroups: the communicators of one rank's parallel layout (DESIGN.md section 4), built from
// the world communicator and a Mesh (parallel/mesh.h).
//
// tp: ranks with the same (dp, pp) coordinates (attention heads, dense MLP shards, all-reduce
// after o_proj / down_proj). dp: ranks with the same (tp, pp). ep: the ranks of one pipeline
// stage (tp * dp of them) when ep > 1 (MoE dispatch / combine), else null. pp: ranks with the
// same (tp, dp), ordered by stage (activations travel by Send/Recv between neighbours).
// Group ranks follow the mesh coordinates: tp->rank() == coord.tp_rank, pp->rank() ==
// coord.pp_rank, ep->rank() == coord.ep_rank. Groups of size 1 are built too (cheap, local), so
// callers never branch on null except for ep.
//
// CreateMeshGroups is collective over `world` (every rank calls it with the same mesh). Thread
// safety: like Communicator.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace tessera {

struct MeshGroups {
  std::unique_ptr<Communicator> tp;
  std::unique_ptr<Communicator> dp;
  std::unique_ptr<Communicator> ep;  // null when mesh.shape().ep == 1
  std::unique_ptr<Communicator> pp;
};

absl::StatusOr<MeshGroups> CreateMeshGroups(Communicator& world, const Mesh& mesh);

}  // namespace tessera
