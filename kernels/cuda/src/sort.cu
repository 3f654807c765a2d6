// argsort: every row sorted at once by CUB's segmented radix sort of
// (value, column) pairs; a radix sort is stable, so equal values keep their
// column order. NaNs sort by their bit pattern (a positive NaN after +inf),
// where the CPU puts every NaN last.

#include <cub/device/device_segmented_radix_sort.cuh>

#include "common.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

__global__ void row_columns_kernel(int64_t* columns, int* offsets, int64_t rows, int64_t C) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * C) columns[i] = i % C;
  if (i <= rows) offsets[i] = static_cast<int>(i * C);
}

}  // namespace

void argsort(const Buffer& indices, const Buffer& x, bool descending) {
  NvtxRange range("kiln::argsort");
  const int64_t rows = x.sizes[0], C = x.sizes[1], n = rows * C;
  if (n == 0) return;
  if (n >= INT32_MAX) fail("sort", "CUDA sorts fewer than 2^31 elements at once");
  const int device = x.device.index;
  cudaStream_t stream = current_stream();
  visit_numeric(x.dtype, "sort", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Half>) {
      fail("sort", "16-bit keys reach the kernel as float32");
    } else {
      auto sort = [&](void* temp, size_t& temp_bytes, T* keys_out, const int64_t* columns, const int* offsets) {
        const int segments = static_cast<int>(rows);
        return descending
                   ? cub::DeviceSegmentedRadixSort::SortPairsDescending(
                         temp, temp_bytes, x.ptr<T>(), keys_out, columns, indices.ptr<int64_t>(), static_cast<int>(n),
                         segments, offsets, offsets + 1, 0, int(sizeof(T) * 8), stream)
                   : cub::DeviceSegmentedRadixSort::SortPairs(temp, temp_bytes, x.ptr<T>(), keys_out, columns,
                                                              indices.ptr<int64_t>(), static_cast<int>(n), segments,
                                                              offsets, offsets + 1, 0, int(sizeof(T) * 8), stream);
      };
      size_t temp_bytes = 0;
      sort(nullptr, temp_bytes, nullptr, nullptr, nullptr);
      const size_t key_bytes = round_up(n * sizeof(T)), column_bytes = round_up(n * sizeof(int64_t)),
                   offset_bytes = round_up((rows + 1) * sizeof(int));
      const Scratch memory(key_bytes + column_bytes + offset_bytes + temp_bytes, device);
      char* scratch = memory.get<char>();
      T* keys = reinterpret_cast<T*>(scratch);
      int64_t* columns = reinterpret_cast<int64_t*>(scratch + key_bytes);
      int* offsets = reinterpret_cast<int*>(scratch + key_bytes + column_bytes);
      launch("row_columns_kernel", row_columns_kernel, blocks_for(n + 1), kThreads, 0, columns, offsets, rows, C);
      const cudaError_t err = sort(scratch + key_bytes + column_bytes + offset_bytes, temp_bytes, keys, columns, offsets);
      if (err != cudaSuccess) fail("sort", cudaGetErrorString(err));
    }
  });
}

}  // namespace kiln::kernels::cuda
