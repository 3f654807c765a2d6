#pragma once
// ReduceGeometry: a reduction of x over a set of dims into out (x's rank,
// size 1 on reduced dims) split into kept dims (one output element each) and
// reduced dims (walked per output). Shared by the CPU and CUDA reductions.

#include <cstdint>

#include "kiln/base/buffer.h"
#include "kiln/base/macros.h"

namespace kiln {

// A reduction's loop (above).
struct ReduceGeometry {
  int nk = 0, nr = 0;  // kept and reduced dims (reduced ones merged where they can be)
  int64_t ksize[kMaxDims] = {}, kx[kMaxDims] = {}, kout[kMaxDims] = {};  // kept dims: size, x stride, out stride
  int64_t rsize[kMaxDims] = {}, rx[kMaxDims] = {};                       // reduced dims: size, x stride
  int64_t n_out = 1, n_red = 1;  // output elements, and elements reduced into each

  // Reduces dims whose bit is set in dims_mask.
  ReduceGeometry(const Buffer& out, const Buffer& x, uint32_t dims_mask) {
    for (int d = 0; d < x.ndim; ++d) {
      if (dims_mask & (1u << d)) {
        rsize[nr] = x.sizes[d];
        rx[nr++] = x.strides[d];
        n_red *= x.sizes[d];
      } else {
        ksize[nk] = x.sizes[d];
        kx[nk] = x.strides[d];
        kout[nk++] = out.strides[d];
        n_out *= x.sizes[d];
      }
    }
    // Dims that x (and, for kept dims, out) walk as one (an outer dim's
    // stride is the inner's extent) merge, in the same order: a contiguous
    // block becomes one run. Dims of size 1 drop out.
    int merged = 0;
    for (int i = 0; i < nr; ++i) {
      if (rsize[i] == 1) continue;
      if (merged > 0 && rx[merged - 1] == rx[i] * rsize[i]) {
        rsize[merged - 1] *= rsize[i];
        rx[merged - 1] = rx[i];
      } else {
        rsize[merged] = rsize[i];
        rx[merged++] = rx[i];
      }
    }
    nr = merged;
    merged = 0;
    for (int i = 0; i < nk; ++i) {
      if (ksize[i] == 1) continue;
      if (merged > 0 && kx[merged - 1] == kx[i] * ksize[i] && kout[merged - 1] == kout[i] * ksize[i]) {
        ksize[merged - 1] *= ksize[i];
        kx[merged - 1] = kx[i];
        kout[merged - 1] = kout[i];
      } else {
        ksize[merged] = ksize[i];
        kx[merged] = kx[i];
        kout[merged++] = kout[i];
      }
    }
    nk = merged;
  }

  // Offsets in x and out of output element o.
  KILN_HOST_DEVICE void output_offsets(int64_t o, int64_t& xoff, int64_t& ooff) const {
    xoff = 0;
    ooff = 0;
    for (int d = nk - 1; d >= 0; --d) {
      int64_t i = o % ksize[d];
      o /= ksize[d];
      xoff += i * kx[d];
      ooff += i * kout[d];
    }
  }

  // Steps `off` to the next reduced element: an odometer over the reduced
  // dims, their indices in `idx` (zeros to start), walking them in order.
  KILN_HOST_DEVICE void next_reduced(int64_t (&idx)[kMaxDims], int64_t& off) const {
    for (int d = nr - 1; d >= 0; --d) {
      off += rx[d];
      if (++idx[d] < rsize[d]) break;
      off -= rx[d] * rsize[d];
      idx[d] = 0;
    }
  }

  // Offset in x of reduced element r, relative to its output's base.
  KILN_HOST_DEVICE int64_t reduced_offset(int64_t r) const {
    int64_t off = 0;
    for (int d = nr - 1; d >= 0; --d) {
      off += (r % rsize[d]) * rx[d];
      r /= rsize[d];
    }
    return off;
  }
};

}  // namespace kiln
