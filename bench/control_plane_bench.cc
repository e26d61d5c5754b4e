// Control-plane cost of one engine step over the cluster protocol: the coordinator's
// ClusterExecutor sends a StepPlan to every rank of an instance over their Cluster.Connect
// streams and waits for all StepResults. Two real `tessera worker` processes on 127.0.0.1 form
// one instance of world size 2 (both ranks hold the whole tiny model, so each step is executed
// twice, as an SPMD step would be).
//
// Reports, in microseconds per step:
//   empty   — a plan with no sequences (pure round trip: serialise, 2 streams out, 2 results back)
//   decode  — a decode step of --seqs sequences over the cluster, and the same plans run by an
//             in-process StepRunner; the difference is the control-plane overhead per step.
//
// Usage: control_plane_bench [--steps N] [--seqs S] [--tessera PATH]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/cluster/cluster_service.h"
#include "coordinator/cluster/local_workers.h"
#include "coordinator/cluster/rendezvous_service.h"
#include "grpcpp/grpcpp.h"
#include "kernels/base/logging.h"
#include "kernels/base/thread_pool.h"
#include "worker/make_model.h"
#include "worker/models/model.h"
#include "worker/step_runner.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Prefills `seqs` prompts of 16 tokens, then returns the decode plans' driver.
class Driver {
 public:
  Driver(int seqs, int block_size) : seqs_(seqs), bs_(block_size), last_(seqs, 0), len_(seqs, 16) {}
  v1::StepPlan Prefill(uint64_t step) {
    v1::StepPlan plan;
    plan.set_step_id(step);
    for (int i = 0; i < seqs_; ++i) {
      v1::NewSeq* s = plan.add_new_seqs();
      s->set_seq_id(i);
      for (int t = 0; t < 16; ++t) s->add_token_ids((i * 31 + t * 7) % 500);
      s->set_num_scheduled_tokens(16);
      for (int b = 0; b < 16 / bs_ + 1; ++b) s->add_block_ids(next_block_++);
      blocks_.push_back(16 / bs_ + 1);
      s->mutable_sampling()->set_top_p(1);
      s->mutable_sampling()->set_repetition_penalty(1);
      s->mutable_sampling()->set_seed(1);
    }
    return plan;
  }
  v1::StepPlan Decode(uint64_t step) {
    v1::StepPlan plan;
    plan.set_step_id(step);
    for (int i = 0; i < seqs_; ++i) {
      v1::CachedSeq* s = plan.add_cached_seqs();
      s->set_seq_id(i);
      s->add_append_token_ids(last_[i]);
      s->set_num_scheduled_tokens(1);
      ++len_[i];
      while (blocks_[i] * bs_ < len_[i]) {
        s->add_new_block_ids(next_block_++);
        ++blocks_[i];
      }
    }
    return plan;
  }
  void Accept(const v1::StepResult& r) {
    for (const auto& t : r.sampled()) last_[t.seq_id()] = t.token_id();
  }

 private:
  int seqs_, bs_;
  std::vector<int32_t> last_;
  std::vector<int64_t> len_;
  std::vector<int> blocks_;
  int next_block_ = 0;
};

int Main(int argc, char** argv) {
  int steps = 500, seqs = 8;
  std::string tessera = "build/cli/tessera";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--steps") steps = atoi(argv[i + 1]);
    if (flag == "--seqs") seqs = atoi(argv[i + 1]);
    if (flag == "--tessera") tessera = argv[i + 1];
  }
  ThreadPool::SetDefaultThreads(1);  // as the workers (--threads 1)
  MakeModelOptions mo;
  mo.arch = "qwen3_moe";
  mo.out_dir = "/tmp/tessera_control_plane_bench_model";
  mo.preset = "tiny";
  mo.dtype = "f32";
  mo.force = true;
  CHECK(MakeModel(mo).ok());

  ClusterService cluster({});
  RendezvousService rendezvous;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&cluster);
  builder.RegisterService(&rendezvous);
  auto server = builder.BuildAndStart();
  InstanceSpec spec;
  spec.instance_id = "bench-0";
  spec.model_dir = mo.out_dir;
  spec.world_size = 2;
  spec.mesh.set_tp(1);  // both ranks hold the whole model (replicated SPMD)
  spec.kv_cache_bytes = 64 << 20;
  spec.block_size = 16;
  ClusterExecutor* executor = cluster.AddInstance(spec);
  std::vector<std::vector<std::string>> args;
  for (int i = 0; i < 2; ++i) {
    args.push_back({"worker", "--coordinator", absl::StrCat("127.0.0.1:", port), "--threads", "1",
                    "--worker-id", absl::StrCat("bench-", i)});
  }
  LocalWorkerSupervisor workers(2, args, tessera);
  CHECK(workers.Start().ok());
  CHECK(cluster.WaitAllReady(std::chrono::seconds(60))) << "workers did not become ready";

  // Empty plans: the pure round trip.
  std::vector<double> empty_us;
  for (int s = 0; s < steps; ++s) {
    v1::StepPlan plan;
    plan.set_step_id(s);
    const auto t0 = Clock::now();
    CHECK(executor->Execute(plan).ok());
    empty_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }

  // Decode steps, over the cluster and in process.
  auto run = [&](StepExecutor& ex, uint64_t first) {
    Driver d(seqs, 16);
    CHECK(ex.Execute(d.Prefill(first)).ok());
    std::vector<double> us;
    for (int s = 1; s <= steps; ++s) {
      v1::StepPlan plan = d.Decode(first + s);
      const auto t0 = Clock::now();
      absl::StatusOr<v1::StepResult> r = ex.Execute(plan);
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      CHECK(r.ok()) << r.status();
      d.Accept(*r);
    }
    v1::StepPlan release;
    release.set_step_id(first + steps + 1);
    for (int i = 0; i < seqs; ++i) release.add_finished_seq_ids(i);
    CHECK(ex.Execute(release).ok());
    return us;
  };
  auto loaded = LoadModelFromDirectory(mo.out_dir);
  CHECK(loaded.ok());
  StepRunnerOptions ro;
  ro.block_size = 16;
  ro.num_blocks = executor->capacity().num_blocks;
  auto local = StepRunner::Create(std::move(*loaded), ro);
  CHECK(local.ok());
  std::vector<double> cluster_us, local_us;
  // Interleave two rounds to spread machine noise over both.
  for (int round = 0; round < 2; ++round) {
    auto c = run(*executor, 100000 * (round + 1));
    auto l = run(**local, 100000 * (round + 1));
    cluster_us.insert(cluster_us.end(), c.begin(), c.end());
    local_us.insert(local_us.end(), l.begin(), l.end());
  }
  std::printf("control_plane_bench: 2 workers (1 instance, world size 2), %d steps\n", steps);
  std::printf("  empty plan round trip     : median %.1f us, p90 %.1f us\n", Median(empty_us),
              Percentile(empty_us, 0.9));
  std::printf("  decode %d seqs, cluster   : median %.1f us, p90 %.1f us\n", seqs,
              Median(cluster_us), Percentile(cluster_us, 0.9));
  std::printf("  decode %d seqs, in-process: median %.1f us, p90 %.1f us\n", seqs,
              Median(local_us), Percentile(local_us, 0.9));
  std::printf("  control-plane overhead    : %.1f us per step (median difference)\n",
              Median(cluster_us) - Median(local_us));
  cluster.Shutdown("bench over");
  workers.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
