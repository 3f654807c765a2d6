#pragma once
// Compiles one of kiln's CUDA kernel files (.cu) with the host compiler for
// tests/cuda_emulation.h: the CPU runs its kernels. The kernels' namespace
// becomes kiln::kernels::cuda_emulated, so nothing clashes with the library's
// own CUDA backend (or its stubs); the two CUDA runtime calls the kernel files
// make directly become host equivalents (the attribute call is remembered for
// the launch checks).

#include <nvtx3/nvToolsExt.h>

#include <cstring>

#include "cuda_emulation.h"

#define cuda cuda_emulated
#define cudaMemcpyAsync(dst, src, bytes, kind, stream) (std::memcpy(dst, src, bytes), cudaSuccess)
#define cudaGetDevice(device) (*(device) = 0, cudaSuccess)
#define cudaFuncSetAttribute(kernel, attribute, value) \
  kiln_emulation::func_set_attribute(reinterpret_cast<const void*>(kernel), attribute, value)
