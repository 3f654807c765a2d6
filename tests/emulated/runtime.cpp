// The device runtime the emulated kernel files call: host memory, no streams,
// launch checks that cannot fail, and no sorted index_add (the general
// kernel takes every layout).

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

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
        open_copies.clear();  // a block starts with no copies in flight
        copy_groups.clear();
        body(kernel);
        running->all.arrive_and_drop();
        finish.arrive_and_wait();
      }
    });
  std::string error;  // a breach stops the grid after its block
  for (unsigned z = 0; z < grid.z && error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && error.empty(); ++x) {
        current = std::make_unique<Block>(threads, dynamic_bytes);
        running = current.get();
        at = make_uint3(x, y, z);
        start.arrive_and_wait();
        finish.arrive_and_wait();
        error = current->error;
      }
  stop = true;
  start.arrive_and_wait();
  for (std::thread& th : pool) th.join();
  running = nullptr;
  if (!error.empty()) throw std::runtime_error("emulated launch: " + error);
}

namespace {
std::mutex attributes_mu;
std::map<const void*, int> max_dynamic_shared;  // per kernel, as cudaFuncSetAttribute set it
}  // namespace

cudaError_t func_set_attribute(const void* function, cudaFuncAttribute attribute, int value) {
  if (attribute == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    std::lock_guard<std::mutex> lock(attributes_mu);
    max_dynamic_shared[function] = value;
  }
  return cudaSuccess;
}

void check_launch_limits(dim3 grid, unsigned threads, size_t dynamic_bytes, const void* function) {
  constexpr size_t kDefaultShared = 48 << 10, kMaxShared = 227 << 10;  // Hopper's per-block limits
  auto refuse = [](const std::string& why) { throw std::runtime_error("emulated launch: " + why); };
  if (threads == 0 || threads > 1024) refuse(std::to_string(threads) + " threads per block (1 to 1024)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
    refuse("a grid of " + std::to_string(grid.x) + " x " + std::to_string(grid.y) + " x " + std::to_string(grid.z) +
           " blocks (x up to 2^31 - 1, y and z 1 to 65535)");
  if (dynamic_bytes > kDefaultShared) {
    int allowed = 0;
    {
      std::lock_guard<std::mutex> lock(attributes_mu);
      if (auto it = max_dynamic_shared.find(function); it != max_dynamic_shared.end()) allowed = it->second;
    }
    if (dynamic_bytes > kMaxShared || dynamic_bytes > static_cast<size_t>(allowed))
      refuse(std::to_string(dynamic_bytes) + " bytes of dynamic shared memory: past 48 KiB it needs "
             "cudaFuncAttributeMaxDynamicSharedMemorySize (set: " + std::to_string(allowed) + "), and 227 KiB at most");
  }
}

}  // namespace kiln_emulation
