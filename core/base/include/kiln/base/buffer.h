#pragma once
// Buffer: what a kernel sees of a tensor. A pointer to its first element, shape,
// strides (in elements), dtype and device; no ownership, no autograd. Keeps the
// kernels independent of Tensor and cheap to compile.

#include <cstdint>

#include "kiln/base/device.h"
#include "kiln/base/dtype.h"
#include "kiln/base/macros.h"

namespace kiln {

// The most dimensions a tensor has.
inline constexpr int kMaxDims = 8;

// A kernel's view of a tensor (above).
struct Buffer {
  void* data = nullptr;          // the first element
  DType dtype = DType::Float32;  // the elements' type
  Device device;                 // where data lives
  int ndim = 0;                  // dimensions used of sizes and strides
  int64_t sizes[kMaxDims] = {};    // the first ndim are the shape
  int64_t strides[kMaxDims] = {};  // in elements

  // The number of elements.
  KILN_HOST_DEVICE int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= sizes[i];
    return n;
  }
  // Whether the elements lie row-major without gaps (size-1 dimensions' strides ignored).
  KILN_HOST_DEVICE bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (sizes[i] != 1 && strides[i] != expected) return false;
      expected *= sizes[i];
    }
    return true;
  }
  // data as T*; the caller has checked dtype.
  template <typename T>
  KILN_HOST_DEVICE T* ptr() const {
    return static_cast<T*>(data);
  }
};

}  // namespace kiln
