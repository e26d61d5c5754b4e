// Mesh: a rank's coordinates in the parallel layout (DESIGN.md section 4).
//
// world = pp * tp * dp (attention data parallelism); MoE layers use an expert-parallel group that
// spans tp * dp. Ranks are laid out with tp fastest, then dp, then pp. Immutable, thread safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tessera {

struct MeshShape {
  int tp = 1;
  int dp = 1;
  int pp = 1;
  int ep = 1;  // must equal tp * dp, or 1 (experts replicated)
  int world_size() const { return tp * dp * pp; }
};

struct MeshCoord {
  int rank = 0;
  int tp_rank = 0;
  int dp_rank = 0;
  int pp_rank = 0;
  int ep_rank = 0;
};

class Mesh {
 public:
  // Validates the shape (all sizes >= 1; ep in {1, tp * dp}).
  static absl::StatusOr<Mesh> Create(const MeshShape& shape);
  const MeshShape& shape() const { return shape_; }
  MeshCoord Coord(int rank) const;
  int RankOf(int tp_rank, int dp_rank, int pp_rank) const;
  std::string ToString() const;

 private:
  explicit Mesh(const MeshShape& shape) : shape_(shape) {}
  MeshShape shape_;
};

}  // namespace tessera
