#include "parallel/mesh.h"

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera {

absl::StatusOr<Mesh> Mesh::Create(const MeshShape& shape) {
  if (shape.tp < 1 || shape.dp < 1 || shape.pp < 1 || shape.ep < 1) {
    return absl::InvalidArgumentError(absl::StrCat("mesh sizes must be >= 1 (tp=", shape.tp,
                                                   " dp=", shape.dp, " pp=", shape.pp,
                                                   " ep=", shape.ep, ")"));
  }
  if (shape.ep != 1 && shape.ep != shape.tp * shape.dp) {
    return absl::InvalidArgumentError(
        absl::StrCat("ep=", shape.ep, " must be 1 or tp*dp=", shape.tp * shape.dp));
  }
  return Mesh(shape);
}

MeshCoord Mesh::Coord(int rank) const {
  CHECK(rank >= 0 && rank < shape_.world_size()) << "rank " << rank;
  MeshCoord c;
  c.rank = rank;
  c.tp_rank = rank % shape_.tp;
  c.dp_rank = (rank / shape_.tp) % shape_.dp;
  c.pp_rank = rank / (shape_.tp * shape_.dp);
  c.ep_rank = shape_.ep == 1 ? 0 : c.dp_rank * shape_.tp + c.tp_rank;
  return c;
}

int Mesh::RankOf(int tp_rank, int dp_rank, int pp_rank) const {
  return (pp_rank * shape_.dp + dp_rank) * shape_.tp + tp_rank;
}

std::string Mesh::ToString() const {
  return absl::StrCat("tp=", shape_.tp, " dp=", shape_.dp, " pp=", shape_.pp, " ep=", shape_.ep);
}

}  // namespace tessera
