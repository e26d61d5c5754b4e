#include "kernels/base/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "kernels/base/logging.h"

namespace tessera {
namespace {

thread_local bool t_inside_pool = false;

std::unique_ptr<ThreadPool>& DefaultPoolStorage() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
std::mutex& DefaultPoolMutex() {
  static std::mutex mu;
  return mu;
}

int DefaultThreadCount() {
  if (const char* env = std::getenv("TESSERA_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

inline void CpuRelax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(Job& job) {
  while (true) {
    const int64_t begin = job.next.fetch_add(job.chunk, std::memory_order_acq_rel);
    if (begin >= job.n) break;
    const int64_t end = std::min(job.n, begin + job.chunk);
    (*job.fn)(begin, end);
    job.done.fetch_add(end - begin, std::memory_order_acq_rel);
  }
}

void ThreadPool::WorkerLoop() {
  t_inside_pool = true;
  uint64_t seen = 0;
  while (true) {
    // Spin a little: consecutive loops in a decode step arrive microseconds apart.
    for (int spin = 0; spin < 20000 && generation_.load(std::memory_order_acquire) == seen;
         ++spin) {
      CpuRelax();
    }
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stop_.load()) return;
      job = job_;
    }
    if (job) RunChunks(*job);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (num_threads_ == 1 || n <= grain || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  auto job = std::make_shared<Job>();
  // About 4 chunks per thread balances load without much overhead.
  const int64_t target_chunks = static_cast<int64_t>(num_threads_) * 4;
  job->chunk = std::max(grain, (n + target_chunks - 1) / target_chunks);
  job->fn = &fn;
  job->n = n;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = job;
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  t_inside_pool = true;
  RunChunks(*job);
  t_inside_pool = false;
  // Wait only for chunks other threads took; a worker that has not woken yet finds the job
  // exhausted and never calls fn.
  while (job->done.load(std::memory_order_acquire) != n) CpuRelax();
  std::lock_guard<std::mutex> lock(mutex_);
  if (job_ == job) job_.reset();
}

ThreadPool& ThreadPool::Default() {
  std::lock_guard<std::mutex> lock(DefaultPoolMutex());
  auto& pool = DefaultPoolStorage();
  if (!pool) pool = std::make_unique<ThreadPool>(DefaultThreadCount());
  return *pool;
}

void ThreadPool::SetDefaultThreads(int num_threads) {
  std::lock_guard<std::mutex> lock(DefaultPoolMutex());
  auto& pool = DefaultPoolStorage();
  if (pool && pool->num_threads() == num_threads) return;
  pool.reset();
  pool = std::make_unique<ThreadPool>(num_threads);
}

}  // namespace tessera
