#pragma once
// What every kiln CUDA kernel file shares: element access in the compute type
// (float for bfloat16/float16), the strided-loop geometry, launch sizing and
// dtype dispatch (kiln/base/visit.h). No fmt and no kiln::Error here (nvcc and
// fmt's consteval format strings do not mix): errors go through fail().

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "device_error.h"
#include "kiln/base/buffer.h"
#include "kiln/base/half.h"
#include "kiln/base/strided.h"
#include "kiln/base/visit.h"
#include "launch.h"
#include "scratch.h"

namespace kiln::kernels::cuda {

template <typename T>
struct Acc {
  using type = T;
};
template <>
struct Acc<BFloat16> {
  using type = float;
};
template <>
struct Acc<Half> {
  using type = float;
};
template <typename T>
using acc_t = typename Acc<T>::type;

template <typename T>
__device__ __forceinline__ acc_t<T> load(const T* p) {
  if constexpr (std::is_same_v<T, BFloat16>) return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
  else if constexpr (std::is_same_v<T, Half>) return __half2float(*reinterpret_cast<const __half*>(p));
  else return *p;
}

template <typename T, typename A>
__device__ __forceinline__ void store(T* p, A v) {
  if constexpr (std::is_same_v<T, BFloat16>) *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(float(v));
  else if constexpr (std::is_same_v<T, Half>) *reinterpret_cast<__half*>(p) = __float2half_rn(float(v));
  else if constexpr (std::is_same_v<T, bool>) *p = v != A(0);
  else *p = static_cast<T>(v);
}

// V elements of T, loaded and stored as one access (V * sizeof(T) <= 16 bytes).
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// 16-byte vector access: one load or store moves 16 / sizeof(T) elements.
template <typename T>
struct Pack : Vec<T, 16 / sizeof(T)> {
  static constexpr int size = 16 / sizeof(T);
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements.
inline int blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

// The block's dynamic shared memory (the launch's third parameter).
#ifndef KILN_DYNAMIC_SHARED
#define KILN_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#define KILN_GRID_STRIDE(i, n)                                                         \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n);            \
       i += int64_t(gridDim.x) * blockDim.x)

// kernel<<<grid, block, shared_bytes, current stream>>>(args...), then the
// launch check under `name`. Under KILN_CUDA_EMULATION (tests/cuda_emulation.h)
// the CPU runs the kernel instead.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, Args&&... args) {
#ifdef KILN_CUDA_EMULATION
  kiln_emulation::launch(grid, block.x, shared_bytes, reinterpret_cast<const void*>(kernel), [&] { kernel(args...); });
#else
  kernel<<<grid, block, shared_bytes, current_stream()>>>(std::forward<Args>(args)...);
#endif
  check_launch(name);
}

// Records the first device-side error (see device_error.h).
__device__ __forceinline__ void report(DeviceError* flag, int code, int64_t value, int64_t bound) {
  if (atomicCAS(&flag->code, 0, code) == 0) {
    flag->value = value;
    flag->bound = bound;
  }
}

}  // namespace kiln::kernels::cuda
