// Kernels with planted bugs, run under tests/cuda_emulation.h to show that its
// checks catch them: a cp.async wait that leaves a group in flight, a
// __syncthreads that half the threads reach from elsewhere, a removed
// barrier, a shuffle that returned lanes never reach, launches past the
// device's limits. The same kernels without the bug pass.
#include "prelude.h"

#include "attention_mma.cuh"

namespace kiln::kernels::cuda {
namespace planted {

namespace {

// 64 floats through shared memory in two cp.async groups of 16-byte copies;
// read after waiting until `kPending` groups are left in flight (0 is right).
template <int kPending>
__global__ void two_copy_groups(const float* in, float* out) {
  __shared__ float tile[64];
  const int t = static_cast<int>(threadIdx.x);
  if (t < 8) cp_async16(tile + 4 * t, in + 4 * t, true);
  cp_async_commit();
  if (t < 8) cp_async16(tile + 32 + 4 * t, in + 32 + 4 * t, true);
  cp_async_commit();
  cp_async_wait<kPending>();
  __syncthreads();
  out[t] = tile[t];
  out[32 + t] = tile[32 + t];
}

// Odd and even threads meet "the" barrier from two different calls.
__global__ void split_barrier(float* out, bool split) {
  if (split && threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.f;
}

// Shifts 64 floats left by one in shared memory: each thread reads its right
// neighbour, then overwrites its own slot. Without the barrier between the
// read and the write, a neighbour that runs first has already overwritten
// the slot (a write-after-read race that threads running in index order
// would never show).
__global__ void shift_left(const float* in, float* out, bool barrier) {
  __shared__ float tile[64];
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = in[t];
  __syncthreads();
  const float right = t + 1 < 64 ? tile[t + 1] : 0.f;
  if (barrier) __syncthreads();
  tile[t] = right;
  __syncthreads();
  out[t] = tile[t];
}

// Half the warp returns, the other half exchanges with a lane that left.
__global__ void shuffle_after_return(float* out, bool early_return) {
  const int t = static_cast<int>(threadIdx.x);
  if (early_return && t >= 16) return;
  out[t] = __shfl_xor_sync(0xffffffffu, static_cast<float>(t), 1);
}

__global__ void nothing() {}

}  // namespace

void copy_in_two_groups(const float* in, float* out, bool wait_one_too_few) {
  if (wait_one_too_few) launch("two_copy_groups", two_copy_groups<1>, 1, 32, 0, in, out);
  else launch("two_copy_groups", two_copy_groups<0>, 1, 32, 0, in, out);
}

void barrier_from_two_sites(float* out, bool split) { launch("split_barrier", split_barrier, 1, 64, 0, out, split); }

void shift_left_in_shared(const float* in, float* out, bool barrier) {
  launch("shift_left", shift_left, 1, 64, 0, in, out, barrier);
}

void shuffle_with_returned_lanes(float* out, bool early_return) {
  launch("shuffle_after_return", shuffle_after_return, 1, 32, 0, out, early_return);
}

void launch_empty(unsigned blocks_x, unsigned blocks_y, unsigned threads, size_t dynamic_bytes, int reserved_bytes) {
  if (reserved_bytes) cudaFuncSetAttribute(nothing, cudaFuncAttributeMaxDynamicSharedMemorySize, reserved_bytes);
  launch("nothing", nothing, dim3(blocks_x, blocks_y), threads, dynamic_bytes);
}

}  // namespace planted
}  // namespace kiln::kernels::cuda
