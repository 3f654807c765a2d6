#include "thread_pool.h"

#include <cblas.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kiln/base/error.h"
#include "kiln/kernels/cpu.h"

namespace kiln::kernels::cpu {

namespace {

// One call's tasks: claimed one at a time from `next`, counted in `done`.
struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t tasks;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex error_mu;
  std::exception_ptr error;
};

thread_local bool in_task = false;

// Returns once `value` differs from `old`. Yields for a moment first, since
// the next job or the last task usually comes within microseconds and a
// futex sleep and wake costs more; then sleeps, so that an idle pool costs a
// busy machine nothing.
template <typename T>
T await_change(const std::atomic<T>& value, T old) {
  constexpr auto kSpin = std::chrono::milliseconds(2);
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    if (T now = value.load(std::memory_order_acquire); now != old) return now;
    if (std::chrono::steady_clock::now() >= until) break;
    std::this_thread::yield();
  }
  for (;;) {
    value.wait(old, std::memory_order_acquire);
    if (T now = value.load(std::memory_order_acquire); now != old) return now;
  }
}

// Claims and runs job's tasks until none is left.
void work(Job& job) {
  in_task = true;
  for (int64_t t; (t = job.next.fetch_add(1, std::memory_order_relaxed)) < job.tasks;) {
    try {
      (*job.fn)(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(job.error_mu);
      if (!job.error) job.error = std::current_exception();
    }
    if (job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.tasks) job.done.notify_all();
  }
  in_task = false;
}

// The cores this process may run on, shared with the other ranks of an MPI
// job on this node (Open MPI's, MPICH's and Slurm's local rank counts).
int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS"))
    if (const int n = std::atoi(env); n > 0) return n;
  cpu_set_t set;
  int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                            : static_cast<int>(std::thread::hardware_concurrency());
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* env = std::getenv(var))
      if (const int ranks = std::atoi(env); ranks > 1) {
        cores /= ranks;
        break;
      }
  return cores > 1 ? cores : 1;
}

class Pool {
 public:
  Pool() {
    openblas_set_num_threads(1);  // BLAS runs inside kiln's tasks
    start(default_threads());
  }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> lock(run_mu_);
    stop();
    start(threads);
  }

  void run(int64_t tasks, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> lock(run_mu_, std::defer_lock);
    if (tasks > 1 && !in_task && !workers_.empty()) lock.try_lock();
    if (!lock.owns_lock()) {
      for (int64_t t = 0; t < tasks; ++t) fn(t);
      return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->tasks = tasks;
    {
      std::lock_guard<std::mutex> publish(job_mu_);
      job_ = job;
    }
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    work(*job);
    for (int64_t d = job->done.load(std::memory_order_acquire); d < tasks;) d = await_change(job->done, d);
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void start(int threads) {
    stopping_ = false;
    // The generation a worker waits past is read here, not when its thread
    // first runs: a stop() before then must still wake it.
    const uint64_t now = generation_.load(std::memory_order_acquire);
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, now] { serve(now); });
  }

  void stop() {
    stopping_ = true;
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (std::thread& w : workers_) w.join();
    workers_.clear();
  }

  // A worker waits until a job is published, takes part in it, and waits again.
  void serve(uint64_t seen) {
    for (;;) {
      seen = await_change(generation_, seen);
      if (stopping_) return;
      std::shared_ptr<Job> job;
      {
        std::lock_guard<std::mutex> lock(job_mu_);
        job = job_;
      }
      if (job) work(*job);
    }
  }

  std::mutex run_mu_;  // one job at a time
  std::mutex job_mu_;  // guards job_
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void parallel_tasks(int64_t tasks, const std::function<void(int64_t)>& fn) { pool().run(tasks, fn); }

void set_num_threads(int threads) {
  KILN_CHECK(threads >= 1, "[set_num_threads] needs at least one thread, got {}", threads);
  pool().resize(threads);
}

int num_threads() { return pool().size(); }

}  // namespace kiln::kernels::cpu
