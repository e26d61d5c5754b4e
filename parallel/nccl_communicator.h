// NcclCommunicator: the Communicator (parallel/communicator.h) for CUDA device tensors, over NCCL.
//
// Bootstrap: rank 0 creates an ncclUniqueId and publishes it in the KvStore (a directory for
// local runs, the coordinator's Rendezvous service in a cluster) under "<name>/nccl_id"; the other
// ranks read it (bounded by the timeout). The communicator is created non-blocking
// (ncclCommInitRankConfig with config.blocking = 0) and initialisation is polled with
// ncclCommGetAsyncError until it completes or the timeout passes, in which case it is aborted
// (ncclCommAbort) and Create returns DEADLINE_EXCEEDED naming the group and rank.
//
// Ops are enqueued on the device's DeviceContext stream (kernels/cuda/cuda_device.h), so they are
// ordered with the kernels that produce and consume their tensors without extra events. An async
// op returns a Work that records a CUDA event after the op; Wait polls the event and
// ncclCommGetAsyncError. An op still unfinished when the communicator timeout passes, or an
// asynchronous NCCL error, aborts the communicator (ncclCommAbort: the peers' pending ops fail
// too, no rank hangs) and marks it broken: later ops fail fast with FAILED_PRECONDITION quoting
// the first error; the owner rebuilds the group.
//
// Algorithms: all-reduce, all-gather, reduce-scatter and broadcast are NCCL's collectives;
// all-gather-v is a group of broadcasts; all-to-all-v is a group of ncclSend/ncclRecv pairs (one
// per peer, the rank's own block copied on the stream); send/recv are ncclSend/ncclRecv (NCCL
// matches them by order per peer: `tag` is only checked to be the same on both sides by the
// caller's issue order). Reductions accept f32, bf16, f16, i32, i64, i8, u8; data movement any
// dtype (as bytes). Tensors must be contiguous and on this communicator's device.
// NewGroup builds a fresh communicator over the member ranks through the same store (key
// "<name>/group/<ranks>/<n>", n counting the groups built from that rank list).
//
// CPU-only builds: CreateNcclCommunicator returns UNIMPLEMENTED.
// Thread safety: see communicator.h (issue from one thread; Wait from any).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/kv_store.h"

namespace tessera {

struct NcclCommOptions {
  std::shared_ptr<KvStore> store;  // required: the rendezvous store shared by every rank
  int rank = 0;
  int size = 1;
  int device = 0;                // CUDA device of this rank
  std::string name = "world";    // store namespace and error messages
  absl::Duration timeout = kDefaultCommTimeout;  // bootstrap and every op
};

// Creates this rank's communicator (blocks until every rank joined, at most options.timeout).
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommOptions& options);

}  // namespace tessera
