// The device runtime the emulated kernel files call: host memory, no streams,
// launch checks that cannot fail, and no sorted index_add (the general
// kernel takes every layout); and the device's launch limits.

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
