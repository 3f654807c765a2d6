#pragma once
// The CUDA kernels and device runtime. Without CUDA (KILN_CUDA=OFF or no nvcc)
// every entry point raises "built without CUDA"; is_available() says which.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/base/buffer.h"
#include "kiln/base/gemm_options.h"
#include "kiln/base/op_kinds.h"
#include "kiln/base/optimizer_step.h"

namespace kiln::kernels::cuda {
#include "kiln/base/kernel_api.inc"

// True when kiln was built with CUDA and a device is visible.
bool is_available();
int device_count();
// Stream-ordered allocation on the device's current stream.
void* allocate(size_t nbytes, int device);
void deallocate(void* ptr, int device);
// Copies nbytes between host and device memory in any direction (blocking).
void memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void synchronize(int device);
// The device's memory pool: bytes in use, their peak, bytes reserved, their peak.
void memory_stats(int device, uint64_t out[4]);
// Starts the peaks over from the current values.
void reset_peak_memory(int device);
}  // namespace kiln::kernels::cuda
