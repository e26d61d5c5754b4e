// Communicator: collective and point-to-point communication among the ranks of a group.
//
// The interface the model layers (tensor / expert / pipeline parallelism) program against. It is
// implemented by GlooCommunicator (host tensors over TCP, parallel/gloo_communicator.h) and by
// the NCCL communicator (device tensors). Semantics follow NCCL / torch.distributed:
//
// * Ordering. Every rank of a group issues the same collectives, with matching shapes and
//   dtypes, in the same order (sync and async calls alike). Issue calls on one communicator from
//   one thread at a time (or order them yourself); Work::Wait may be called from any thread.
//   Point-to-point Send/Recv pairs match by (peer, tag) and, for one (peer, tag), in issue order.
// * Tensors. Host tensors for Gloo, device tensors for NCCL; contiguous; any dtype for data
//   movement (gather, all-to-all, broadcast, send/recv); reductions accept f32, bf16, f16, i32,
//   i64, i8, u8. A Tensor is a handle to a shared buffer: "inout"/"out" tensors are written
//   through the handle, and async ops keep the buffers alive until they finish. Do not touch
//   the memory of an async op before its Wait returned.
// * Reductions in 16-bit floats. bf16/f16 are reduced like NCCL does: every pairwise combine is
//   computed in f32 and rounded back to the 16-bit type (so a sum over n ranks carries up to n-1
//   roundings; relative error ~ (n-1) * 2^-8 for bf16). Accumulating in f32 end to end would need
//   f32 on the wire (2x the bytes) and would disagree with the GPU path; callers that need exact
//   f32 accumulation reduce f32 tensors.
// * Errors. Every call returns absl::Status; nothing hangs forever. Each op is bounded by the
//   communicator's timeout (default 30 s, SetTimeout). A peer that died fails the op with
//   UNAVAILABLE, a peer that stopped making progress with DEADLINE_EXCEEDED; messages name the op,
//   the group, this rank and, when known, the peer. Invalid arguments (shape, dtype, rank) give
//   INVALID_ARGUMENT before anything is sent. After a transport failure the communicator is
//   broken (like an aborted NCCL communicator): every later op fails fast with
//   FAILED_PRECONDITION quoting the first error; the owner rebuilds the group.
// * Async. XAsync issues the op and returns a Work handle at once (never null; an argument error
//   comes back from Wait). Ops of one communicator start in issue order and may overlap; ops of
//   different communicators (tp and ep groups) run independently.
// * Groups. NewGroup(ranks) builds a communicator over a subset, called by exactly the member
//   ranks; Split(color, key) is the collective form (MPI_Comm_split) called by every rank.
//
// Thread safety: see Ordering. rank(), size(), name(), timeout() and health() are safe anywhere.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"

namespace tessera {

enum class ReduceOp { kSum, kMax, kMin };
absl::string_view ReduceOpName(ReduceOp op);

// Default bound of every collective.
inline constexpr absl::Duration kDefaultCommTimeout = absl::Seconds(30);

// The completion handle of an async op.
class Work {
 public:
  // Destroying an unfinished handle waits for the op (bounded by the communicator timeout), so
  // the buffers it reads and writes are never used after the handle is gone.
  virtual ~Work() = default;
  // Blocks until the op finished or `timeout` passed. Returns the op's status, or
  // DEADLINE_EXCEEDED when it is still running after `timeout` (the op goes on; Wait again).
  // The op itself fails once the communicator timeout passes, so the default never hangs.
  virtual absl::Status Wait(absl::Duration timeout = absl::InfiniteDuration()) = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "world", "world/tp0", ...: used in error messages and as the rendezvous namespace.
  virtual const std::string& name() const = 0;
  // "gloo", "nccl".
  virtual absl::string_view backend() const = 0;
  virtual absl::Duration timeout() const = 0;
  // Applies to ops issued afterwards.
  virtual void SetTimeout(absl::Duration timeout) = 0;
  // OK, or the error that broke the communicator.
  virtual absl::Status health() const = 0;

  // ---- Collectives (blocking) ------------------------------------------------------------------
  // The default implementations issue the async form and wait.

  // inout: any shape; every rank's inout becomes the elementwise reduction over ranks.
  virtual absl::Status AllReduce(const Tensor& inout, ReduceOp op);
  // in: [rows, ...] on every rank; out: [size * rows, ...], rank r's rows at [r * rows, ...).
  virtual absl::Status AllGather(const Tensor& in, const Tensor& out);
  // in: [rows_r, ...] (rows_r = out_splits[rank]); out: [sum(out_splits), ...], rank r's rows in
  // rank order. out_splits: rows contributed by each rank (size entries; zeros allowed).
  virtual absl::Status AllGatherV(const Tensor& in, const Tensor& out,
                                  absl::Span<const int64_t> out_splits);
  // in: [size * rows, ...]; out: [rows, ...] = reduction over ranks of in's block `rank`.
  virtual absl::Status ReduceScatter(const Tensor& in, const Tensor& out, ReduceOp op);
  // in: [sum(in_splits), cols...]; out: [sum(out_splits), cols...]. in_splits[r] rows go to rank
  // r, in rank order; out_splits[r] rows come from rank r, in rank order. out_splits on rank a
  // must equal in_splits[a] on each rank r, entry r. Ranks with zero rows in or out take part.
  virtual absl::Status AllToAllV(const Tensor& in, absl::Span<const int64_t> in_splits,
                                 const Tensor& out, absl::Span<const int64_t> out_splits);
  // tensor: root's values are copied to every rank's tensor (same shape everywhere).
  virtual absl::Status Broadcast(const Tensor& tensor, int root);
  virtual absl::Status Barrier();

  // ---- Point to point (blocking) ---------------------------------------------------------------
  // Send may block until the peer posted the matching Recv (rendezvous protocol): a ring of
  // blocking Sends deadlocks; use SendAsync, then Recv, then Wait.
  virtual absl::Status Send(const Tensor& tensor, int dst, uint32_t tag);
  // tensor: preallocated with the sender's shape and dtype (bytes must match).
  virtual absl::Status Recv(const Tensor& tensor, int src, uint32_t tag);

  // ---- Async forms -----------------------------------------------------------------------------
  virtual std::unique_ptr<Work> AllReduceAsync(const Tensor& inout, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> AllGatherAsync(const Tensor& in, const Tensor& out) = 0;
  virtual std::unique_ptr<Work> AllGatherVAsync(const Tensor& in, const Tensor& out,
                                                absl::Span<const int64_t> out_splits) = 0;
  virtual std::unique_ptr<Work> ReduceScatterAsync(const Tensor& in, const Tensor& out,
                                                   ReduceOp op) = 0;
  virtual std::unique_ptr<Work> AllToAllVAsync(const Tensor& in,
                                               absl::Span<const int64_t> in_splits,
                                               const Tensor& out,
                                               absl::Span<const int64_t> out_splits) = 0;
  virtual std::unique_ptr<Work> BroadcastAsync(const Tensor& tensor, int root) = 0;
  virtual std::unique_ptr<Work> BarrierAsync() = 0;
  virtual std::unique_ptr<Work> SendAsync(const Tensor& tensor, int dst, uint32_t tag) = 0;
  virtual std::unique_ptr<Work> RecvAsync(const Tensor& tensor, int src, uint32_t tag) = 0;

  // ---- Groups ----------------------------------------------------------------------------------
  // A communicator over `ranks` (ranks of this communicator, distinct; the new rank of a member
  // is its index in `ranks`). Called by every member, and only by members, with the same list;
  // creating the same list again gives a fresh, independent group. `name` ("" = derived from the
  // ranks) names the group in errors. Inherits the timeout.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> NewGroup(absl::Span<const int> ranks,
                                                                 absl::string_view name) = 0;
  // Collective over every rank: ranks with the same color >= 0 form one group, ordered by (key,
  // rank). A negative color takes part in the exchange but joins no group (returns nullptr).
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key);
};

// A Work that is already complete with `status` (argument errors of async calls, ops that move
// nothing).
std::unique_ptr<Work> CompletedWork(absl::Status status);

}  // namespace tessera
