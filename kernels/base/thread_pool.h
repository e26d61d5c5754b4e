// A fixed-size thread pool for data-parallel kernels.
//
// ParallelFor(n, grain, fn) splits [0, n) into chunks of at least `grain` items, runs
// fn(begin, end) on the pool's workers and the calling thread, and returns as soon as every chunk
// is done (it never waits for a worker that took no chunk, e.g. one still waking up). Workers spin briefly before sleeping so that the many small loops of a decode step do not
// pay a wake-up each. One ParallelFor runs at a time per pool (calls from several threads are
// serialised); nested calls from inside fn run inline on the caller. Thread safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera {

class ThreadPool {
 public:
  // `num_threads` counts the calling thread: a pool of 1 runs everything inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // The process-wide pool used by kernels. Defaults to the number of hardware threads, or
  // TESSERA_NUM_THREADS when set; SetDefaultThreads replaces it (not while kernels run).
  static ThreadPool& Default();
  static void SetDefaultThreads(int num_threads);

 private:
  // One ParallelFor call. Shared with the workers so that a worker waking late (after the call
  // returned) only ever sees an exhausted job and never touches the caller's stack.
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    int64_t n = 0;
    int64_t chunk = 1;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};  // items finished
  };

  void WorkerLoop();
  static void RunChunks(Job& job);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // serialises ParallelFor calls

  std::mutex mutex_;  // guards job_
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::shared_ptr<Job> job_;
};

// Convenience: ThreadPool::Default().ParallelFor(...).
inline void ParallelFor(int64_t n, int64_t grain,
                        const std::function<void(int64_t, int64_t)>& fn) {
  ThreadPool::Default().ParallelFor(n, grain, fn);
}

}  // namespace tessera
