#pragma once
// Block-wide sum and maximum through warp shuffles; every thread of the block
// gets the result. Called by all threads of a block (blockDim.x <= 1024).

namespace kiln::kernels::cuda {

// Sum over the block; every thread gets the result.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A partial[32];
  __syncthreads();  // partial may still be read from a previous call
  for (int s = 16; s > 0; s >>= 1) v += __shfl_down_sync(0xffffffffu, v, s);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>((blockDim.x + 31) / 32) ? partial[lane] : A(0);
    for (int s = 16; s > 0; s >>= 1) v += __shfl_down_sync(0xffffffffu, v, s);
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  return partial[0];
}

template <typename A>
__device__ A block_max(A v) {
  __shared__ A partial[32];
  __syncthreads();
  for (int s = 16; s > 0; s >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, s));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>((blockDim.x + 31) / 32) ? partial[lane] : A(-INFINITY);
    for (int s = 16; s > 0; s >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, s));
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  return partial[0];
}

}  // namespace kiln::kernels::cuda
