// The device runtime the emulated kernel files call: host memory, no streams,
// launch checks that cannot fail, and no sorted index_add (the general
// kernel takes every layout).

#include <cstdlib>

#include "prelude.h"

#include "device_error.h"
#include "kiln/base/error.h"
#include "kiln/kernels/cuda.h"
#include "launch.h"
#include "sorted_index_add.h"

namespace kiln::kernels::cuda {

void* allocate(size_t nbytes, int, void*) { return std::aligned_alloc(256, (nbytes + 255) / 256 * 256); }
void deallocate(void* ptr, int, void*) { std::free(ptr); }
cudaStream_t current_stream() { return nullptr; }
void check_launch(const char*) {}
void fail(const char* op, const char* message) { KILN_FAIL("[{}] {}", op, message); }

DeviceError* device_error_flag() {
  static DeviceError flag{};
  return &flag;
}

bool index_add_sorted(const Buffer&, const Buffer&, const Buffer&) { return false; }

}  // namespace kiln::kernels::cuda

namespace kiln_emulation {

void run_grid(dim3 grid, unsigned threads, size_t dynamic_bytes, void (*body)(void*), void* kernel) {
  if (threads == 0 || threads % 32 != 0) throw std::invalid_argument("emulated blocks are whole warps");
  gridDim = grid;
  blockDim = dim3(threads);
  std::barrier<> start(threads + 1), finish(threads + 1);
  std::unique_ptr<Block> current;
  uint3 at{};
  bool stop = false;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIdx = make_uint3(t, 0, 0);
      for (;;) {
        start.arrive_and_wait();
        if (stop) return;
        blockIdx = at;
        body(kernel);
        running->all.arrive_and_drop();
        finish.arrive_and_wait();
      }
    });
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        current = std::make_unique<Block>(threads, dynamic_bytes);
        running = current.get();
        at = make_uint3(x, y, z);
        start.arrive_and_wait();
        finish.arrive_and_wait();
      }
  stop = true;
  start.arrive_and_wait();
  for (std::thread& th : pool) th.join();
  running = nullptr;
}

}  // namespace kiln_emulation
