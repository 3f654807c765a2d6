// index_add along dim 0 with contiguous rows (an embedding's backward):
// deterministic without a thread walking every index. The (index, position)
// pairs are sorted by index with CUB's stable radix sort, so each index's
// positions come in increasing order; then the block that meets the first
// position of a run sums that run's source rows in order and adds the sum to
// its output row. Same result bit for bit on every run, any number of repeats.

#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"
#include "kiln/kernels/cuda.h"
#include "sorted_index_add.h"

namespace kiln::kernels::cuda {

namespace {

__global__ void iota_kernel(int32_t* out, int64_t n) {
  KILN_GRID_STRIDE(i, n) out[i] = static_cast<int32_t>(i);
}

template <typename T, typename I>
__global__ void add_sorted_runs_kernel(T* out, int64_t out_stride, const T* src, int64_t src_stride, int64_t row_len,
                                       const I* keys, const int32_t* positions, int64_t n, int64_t size,
                                       DeviceError* flag) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const I key = keys[i];
    if (i > 0 && keys[i - 1] == key) continue;  // another block owns this run
    if (key < 0 || key >= size) {
      if (threadIdx.x == 0) report(flag, kIndexOutOfRange, key, size);
      continue;
    }
    int64_t end = i + 1;
    while (end < n && keys[end] == key) ++end;
    for (int64_t c = threadIdx.x; c < row_len; c += blockDim.x) {
      acc_t<T> sum = 0;
      for (int64_t j = i; j < end; ++j) sum += load(src + positions[j] * src_stride + c);
      T* o = out + key * out_stride + c;
      store(o, load(o) + sum);
    }
  }
}

// Scratch for one sort, carved from one pool allocation.
template <typename I>
struct SortScratch {
  I* keys;
  int32_t* positions_in;
  int32_t* positions;
  void* temp;
  size_t temp_bytes;
};

}  // namespace

bool index_add_sorted(const Buffer& out, const Buffer& index, const Buffer& src) {
  const int64_t n = index.numel();
  if (n >= INT32_MAX || out.ndim != src.ndim || index.ndim != 1 || index.strides[0] != 1) return false;
  // Rows: everything but dim 0 contiguous, and the same length in out and src.
  int64_t row_len = 1;
  for (int d = out.ndim - 1; d >= 1; --d) {
    if (out.sizes[d] != src.sizes[d]) return false;
    if (out.sizes[d] != 1 && (out.strides[d] != row_len || src.strides[d] != row_len)) return false;
    row_len *= out.sizes[d];
  }
  if (row_len == 0) return true;
  const int device = out.device.index;
  cudaStream_t stream = current_stream();
  visit_index(index.dtype, "index_add", [&](auto itag) {
    using I = decltype(itag);
    size_t temp_bytes = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const I*>(nullptr), static_cast<I*>(nullptr),
                                    static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                    static_cast<int>(n), 0, int(sizeof(I) * 8), stream);
    const size_t key_bytes = round_up(n * sizeof(I)), pos_bytes = round_up(n * sizeof(int32_t));
    const Scratch memory(key_bytes + 2 * pos_bytes + temp_bytes, device);
    char* scratch = memory.get<char>();
    SortScratch<I> s{reinterpret_cast<I*>(scratch), reinterpret_cast<int32_t*>(scratch + key_bytes),
                     reinterpret_cast<int32_t*>(scratch + key_bytes + pos_bytes), scratch + key_bytes + 2 * pos_bytes,
                     temp_bytes};
    launch("iota_kernel", iota_kernel, blocks_for(n), kThreads, 0, s.positions_in, n);
    cudaError_t err = cub::DeviceRadixSort::SortPairs(s.temp, s.temp_bytes, index.ptr<I>(), s.keys, s.positions_in,
                                                      s.positions, static_cast<int>(n), 0, int(sizeof(I) * 8), stream);
    if (err != cudaSuccess) fail("index_add", cudaGetErrorString(err));
    visit_numeric(out.dtype, "index_add", [&](auto tag) {
      using T = decltype(tag);
      const int threads = row_len >= kThreads ? kThreads : 64;
      launch("add_sorted_runs_kernel", add_sorted_runs_kernel<T, I>, blocks_for(n, 1), threads, 0, out.ptr<T>(),
             out.strides[0], src.ptr<T>(), src.strides[0], row_len, s.keys, s.positions, n, out.sizes[0],
             device_error_flag());
    });
  });
  return true;
}

}  // namespace kiln::kernels::cuda
