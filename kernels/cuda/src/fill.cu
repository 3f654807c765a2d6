// fill: out = value, any strides, any dtype. A grid-stride loop; each thread
// turns a linear index into an element offset through the buffer's strides.

#include "launch.h"
#include "kiln/base/half.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

template <typename T>
__global__ void fill_kernel(Buffer out, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off = 0, rem = i;
    for (int d = out.ndim - 1; d >= 0; --d) {
      off += (rem % out.sizes[d]) * out.strides[d];
      rem /= out.sizes[d];
    }
    out.ptr<T>()[off] = value;
  }
}

template <typename T>
void launch(const Buffer& out, T value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
  fill_kernel<T><<<blocks, kThreads, 0, current_stream()>>>(out, value, n);
  check_launch("fill_kernel");
}

}  // namespace

void fill(const Buffer& out, double value) {
  NvtxRange range("kiln::fill");
  switch (out.dtype) {
    case DType::Bool: return launch<bool>(out, value != 0);
    case DType::Int32: return launch<int32_t>(out, static_cast<int32_t>(value));
    case DType::Int64: return launch<int64_t>(out, static_cast<int64_t>(value));
    case DType::BFloat16: return launch<BFloat16>(out, BFloat16(static_cast<float>(value)));
    case DType::Float16: return launch<Half>(out, Half(static_cast<float>(value)));
    case DType::Float32: return launch<float>(out, static_cast<float>(value));
    case DType::Float64: return launch<double>(out, value);
  }
}

}  // namespace kiln::kernels::cuda
