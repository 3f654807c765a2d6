#pragma once
// Buffer: what a kernel sees of a tensor. A pointer to its first element, shape,
// strides (in elements), dtype and device; no ownership, no autograd. Keeps the
// kernels independent of Tensor and cheap to compile.

#include <cstdint>

#include "kiln/base/device.h"
#include "kiln/base/dtype.h"
#include "kiln/base/macros.h"

namespace kiln {

inline constexpr int kMaxDims = 8;

struct Buffer {
  void* data = nullptr;
  DType dtype = DType::Float32;
  Device device;
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  KILN_HOST_DEVICE int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= sizes[i];
    return n;
  }
  KILN_HOST_DEVICE bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (sizes[i] != 1 && strides[i] != expected) return false;
      expected *= sizes[i];
    }
    return true;
  }
  template <typename T>
  KILN_HOST_DEVICE T* ptr() const {
    return static_cast<T*>(data);
  }
};

}  // namespace kiln
