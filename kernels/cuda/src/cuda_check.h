#pragma once
// Turning CUDA runtime failures into kiln::Error (host .cpp files only: it
// includes fmt, which .cu files must not).

#include <cuda_runtime.h>

#include "kiln/base/error.h"
#include "launch.h"

// KILN_CUDA_CHECK(cudaMemcpy(...)): raises with the call and CUDA's own message.
#define KILN_CUDA_CHECK(call)                                                                   \
  do {                                                                                          \
    cudaError_t kiln_cuda_err_ = (call);                                                        \
    if (kiln_cuda_err_ != cudaSuccess) [[unlikely]]                                             \
      KILN_FAIL("[cuda] {} failed: {} ({})", #call, cudaGetErrorString(kiln_cuda_err_),         \
                cudaGetErrorName(kiln_cuda_err_));                                              \
  } while (0)

namespace kiln::kernels::cuda {

// Raises "[op] cuda:N does not exist (M devices visible)" unless cuda:device is
// usable (runtime.cpp).
void check_device(int device, const char* op);

}  // namespace kiln::kernels::cuda
