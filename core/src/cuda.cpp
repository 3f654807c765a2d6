#include "kiln/cuda.h"

#include "dispatch.h"

namespace kiln::cuda {

bool is_available() { return kernels::cuda::is_available(); }
int device_count() { return kernels::cuda::device_count(); }
void synchronize(int device) { kernels::cuda::synchronize(device); }

MemoryStats memory_stats(int device) {
  uint64_t v[4] = {};
  kernels::cuda::memory_stats(device, v);
  return {v[0], v[1], v[2], v[3]};
}

void reset_peak_memory_stats(int device) { kernels::cuda::reset_peak_memory(device); }

}  // namespace kiln::cuda
