#pragma once
// The threads the CPU kernels run on: kiln's own pool instead of OpenMP's, so
// that idle threads soon sleep rather than spin (OpenMP's default spinning starves a
// busy machine) and BLAS runs single-threaded inside kiln's split of each GEMM.

#include <cstdint>
#include <functional>

namespace kiln::kernels::cpu {

// Runs fn(task) for every task in [0, tasks) over the pool's threads, the
// caller's among them, and returns when all are done; a task's exception is
// raised here (the first one) after the rest have finished. Runs serially when
// called from inside a task or while another thread is using the pool.
void parallel_tasks(int64_t tasks, const std::function<void(int64_t)>& fn);

}  // namespace kiln::kernels::cpu
