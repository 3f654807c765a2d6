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
