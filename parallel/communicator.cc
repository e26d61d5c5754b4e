#include "parallel/communicator.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"

namespace tessera {
namespace {

class DoneWork : public Work {
 public:
  explicit DoneWork(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait(absl::Duration) override { return status_; }

 private:
  absl::Status status_;
};

}  // namespace

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

std::unique_ptr<Work> CompletedWork(absl::Status status) {
  return std::make_unique<DoneWork>(std::move(status));
}

absl::Status Communicator::AllReduce(const Tensor& inout, ReduceOp op) {
  return AllReduceAsync(inout, op)->Wait();
}
absl::Status Communicator::AllGather(const Tensor& in, const Tensor& out) {
  return AllGatherAsync(in, out)->Wait();
}
absl::Status Communicator::AllGatherV(const Tensor& in, const Tensor& out,
                                      absl::Span<const int64_t> out_splits) {
  return AllGatherVAsync(in, out, out_splits)->Wait();
}
absl::Status Communicator::ReduceScatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  return ReduceScatterAsync(in, out, op)->Wait();
}
absl::Status Communicator::AllToAllV(const Tensor& in, absl::Span<const int64_t> in_splits,
                                     const Tensor& out, absl::Span<const int64_t> out_splits) {
  return AllToAllVAsync(in, in_splits, out, out_splits)->Wait();
}
absl::Status Communicator::Broadcast(const Tensor& tensor, int root) {
  return BroadcastAsync(tensor, root)->Wait();
}
absl::Status Communicator::Barrier() { return BarrierAsync()->Wait(); }
absl::Status Communicator::Send(const Tensor& tensor, int dst, uint32_t tag) {
  return SendAsync(tensor, dst, tag)->Wait();
}
absl::Status Communicator::Recv(const Tensor& tensor, int src, uint32_t tag) {
  return RecvAsync(tensor, src, tag)->Wait();
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(int color, int key) {
  // Every rank learns every (color, key) pair; the members of each color build their group.
  Tensor mine = Tensor::FromVector(absl::Span<const int64_t>({color, key}), {1, 2});
  ASSIGN_OR_RETURN(Tensor all, Tensor::Empty({size(), 2}, DType::kI64));
  RETURN_IF_ERROR(Annotate(AllGather(mine, all), absl::StrCat("Split(color=", color, ")")));
  if (color < 0) return std::unique_ptr<Communicator>();
  const int64_t* v = all.data<int64_t>();
  std::vector<std::pair<int64_t, int>> members;  // (key, rank)
  for (int r = 0; r < size(); ++r) {
    if (v[2 * r] == color) members.push_back({v[2 * r + 1], r});
  }
  std::sort(members.begin(), members.end());
  std::vector<int> ranks;
  for (const auto& m : members) ranks.push_back(m.second);
  return NewGroup(ranks, absl::StrCat(name(), "/c", color));
}

}  // namespace tessera
