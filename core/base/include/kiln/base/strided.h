#pragma once
// StridedIndex: the geometry of an elementwise loop over N buffers of one shape
// (strides may differ), with size-1 dims dropped and dims that are contiguous
// for every operand merged. Shared by the CPU and CUDA loops.

#include <cstdint>

#include "kiln/base/buffer.h"
#include "kiln/base/macros.h"

namespace kiln {

// An elementwise loop's geometry (above).
template <int N>
struct StridedIndex {
  int ndim = 0;                       // the dims left after dropping and merging
  int64_t sizes[kMaxDims] = {};       // their sizes
  int64_t strides[N][kMaxDims] = {};  // their strides, per operand
  bool narrow = false;  // every linear index and offset fits in 32 bits: offsets() divides in 32 bits

  // The loop over bufs[0]'s shape; every buffer must have that shape.
  static StridedIndex make(const Buffer* const (&bufs)[N]) {
    StridedIndex it;
    const Buffer& ref = *bufs[0];
    for (int d = 0; d < ref.ndim; ++d) {
      if (ref.sizes[d] == 1) continue;
      bool merge = it.ndim > 0;
      for (int j = 0; j < N && merge; ++j) merge = it.strides[j][it.ndim - 1] == bufs[j]->strides[d] * ref.sizes[d];
      if (merge) {
        it.sizes[it.ndim - 1] *= ref.sizes[d];
        for (int j = 0; j < N; ++j) it.strides[j][it.ndim - 1] = bufs[j]->strides[d];
      } else {
        it.sizes[it.ndim] = ref.sizes[d];
        for (int j = 0; j < N; ++j) it.strides[j][it.ndim] = bufs[j]->strides[d];
        ++it.ndim;
      }
    }
    constexpr uint64_t kLimit = 0x7fffffff;
    uint64_t total = 1;
    for (int d = 0; d < it.ndim; ++d) total *= static_cast<uint64_t>(it.sizes[d]);
    it.narrow = total <= kLimit;
    for (int j = 0; j < N && it.narrow; ++j) {
      uint64_t reach = 0;  // the farthest offset from the start
      for (int d = 0; d < it.ndim; ++d)
        reach += static_cast<uint64_t>(it.sizes[d] - 1) *
                 static_cast<uint64_t>(it.strides[j][d] < 0 ? -it.strides[j][d] : it.strides[j][d]);
      it.narrow = reach <= kLimit;
    }
    return it;
  }

  // Element offsets of every operand for a row-major linear index over dims [0, ndim - skip).
  // A GPU's 64-bit division costs many times its 32-bit one: a narrow loop
  // divides in 32 bits.
  KILN_HOST_DEVICE void offsets(int64_t linear, int64_t* off, int skip = 0) const {
    for (int j = 0; j < N; ++j) off[j] = 0;
    if (narrow) {
      uint32_t rest = static_cast<uint32_t>(linear);
      for (int d = ndim - 1 - skip; d >= 0; --d) {
        const uint32_t size = static_cast<uint32_t>(sizes[d]), i = rest % size;
        rest /= size;
        for (int j = 0; j < N; ++j) off[j] += static_cast<int64_t>(i) * strides[j][d];
      }
      return;
    }
    for (int d = ndim - 1 - skip; d >= 0; --d) {
      int64_t i = linear % sizes[d];
      linear /= sizes[d];
      for (int j = 0; j < N; ++j) off[j] += i * strides[j][d];
    }
  }
};

}  // namespace kiln
