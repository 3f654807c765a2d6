// Indexing along one dim: index_select and gather (a thread per output
// element), index_add (rows along dim 0: sorted runs, sorted_index_add.cu;
// otherwise a thread per position of a slice, walking the index in order;
// both deterministic with repeated indices, as an embedding backward must be)
// scatter_add (a thread per source element, atomic adds) and scatter (its
// writes plain stores: of repeated indices, any one wins). An index out
// of range is reported through the device error flag and its element skipped.

#include "common.cuh"
#include "kiln/kernels/cuda.h"
#include "sorted_index_add.h"

namespace kiln::kernels::cuda {

namespace {

struct Shape8 {
  int ndim;
  int64_t sizes[kMaxDims];
};

Shape8 shape_of(const Buffer& b) {
  Shape8 s{b.ndim, {}};
  for (int d = 0; d < b.ndim; ++d) s.sizes[d] = b.sizes[d];
  return s;
}

struct Strides8 {
  int64_t v[kMaxDims];
};

Strides8 strides_of(const Buffer& b) {
  Strides8 s{};
  for (int d = 0; d < b.ndim; ++d) s.v[d] = b.strides[d];
  return s;
}

// For element `linear` of shape: the offsets in a and b, and the coordinate along dim.
__device__ __forceinline__ int64_t decompose(const Shape8& shape, int64_t linear, const Strides8& a, const Strides8& b,
                                             int dim, int64_t* off_a, int64_t* off_b) {
  int64_t coord = 0;
  *off_a = 0;
  *off_b = 0;
  for (int d = shape.ndim - 1; d >= 0; --d) {
    int64_t i = linear % shape.sizes[d];
    linear /= shape.sizes[d];
    if (d == dim) coord = i;
    *off_a += i * a.v[d];
    *off_b += i * b.v[d];
  }
  return coord;
}

// out[.. k ..] = x[.. index[k] ..]: a thread per element of out.
template <typename T, typename I>
__global__ void index_select_kernel(Shape8 shape, int64_t n, T* out, Strides8 so, const T* x, Strides8 sx, int dim,
                                    int64_t size, const I* index, DeviceError* flag) {
  KILN_GRID_STRIDE(i, n) {
    int64_t oo, xo;
    int64_t k = decompose(shape, i, so, sx, dim, &oo, &xo);
    int64_t j = index[k];
    if (j < 0 || j >= size) {
      report(flag, kIndexOutOfRange, j, size);
      continue;
    }
    out[oo] = x[xo + (j - k) * sx.v[dim]];
  }
}

// out[.. index[k] ..] += src[.. k ..] for k in order: a thread per slice position.
template <typename T, typename I>
__global__ void index_add_kernel(Shape8 slice, int64_t n, T* out, Strides8 so, const T* src, Strides8 ss,
                                 int64_t ss_dim, int64_t so_dim, int64_t count, int64_t size, const I* index,
                                 DeviceError* flag) {
  KILN_GRID_STRIDE(p, n) {
    int64_t oo, sofs;
    decompose(slice, p, so, ss, -1, &oo, &sofs);
    for (int64_t k = 0; k < count; ++k) {
      int64_t j = index[k];
      if (j < 0 || j >= size) {
        report(flag, kIndexOutOfRange, j, size);
        continue;
      }
      T* o = out + oo + j * so_dim;
      store(o, load(o) + load(src + sofs + k * ss_dim));
    }
  }
}

// out[i] = x[i with dim replaced by index[i]]: a thread per element of index/out.
template <typename T, typename I>
__global__ void gather_kernel(Shape8 shape, int64_t n, T* out, Strides8 so, const T* x, Strides8 sx, const I* index,
                              Strides8 si, int dim, int64_t size, DeviceError* flag) {
  KILN_GRID_STRIDE(i, n) {
    int64_t oo, io, xo = 0;
    int64_t rem = i;
    oo = io = 0;
    for (int d = shape.ndim - 1; d >= 0; --d) {
      int64_t c = rem % shape.sizes[d];
      rem /= shape.sizes[d];
      oo += c * so.v[d];
      io += c * si.v[d];
      if (d != dim) xo += c * sx.v[d];
    }
    int64_t j = index[io];
    if (j < 0 || j >= size) {
      report(flag, kIndexOutOfRange, j, size);
      continue;
    }
    out[oo] = x[xo + j * sx.v[dim]];
  }
}

template <typename T>
__device__ __forceinline__ void atomic_add(T* p, acc_t<T> v) {
  if constexpr (std::is_same_v<T, BFloat16>) atomicAdd(reinterpret_cast<__nv_bfloat16*>(p), __float2bfloat16_rn(v));
  else if constexpr (std::is_same_v<T, Half>) atomicAdd(reinterpret_cast<__half*>(p), __float2half_rn(v));
  else if constexpr (std::is_same_v<T, int64_t>)
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
  else atomicAdd(p, v);
}

// out[i with dim replaced by index[i]] += src[i] (kAdd) or = src[i]: a thread per element of index/src.
template <typename T, typename I, bool kAdd>
__global__ void scatter_kernel(Shape8 shape, int64_t n, T* out, Strides8 so, const T* src, Strides8 ss,
                               const I* index, Strides8 si, int dim, int64_t size, DeviceError* flag) {
  KILN_GRID_STRIDE(i, n) {
    int64_t oo = 0, io = 0, so_ = 0;
    int64_t rem = i;
    for (int d = shape.ndim - 1; d >= 0; --d) {
      int64_t c = rem % shape.sizes[d];
      rem /= shape.sizes[d];
      so_ += c * ss.v[d];
      io += c * si.v[d];
      if (d != dim) oo += c * so.v[d];
    }
    int64_t j = index[io];
    if (j < 0 || j >= size) {
      report(flag, kIndexOutOfRange, j, size);
      continue;
    }
    if constexpr (kAdd) atomic_add(out + oo + j * so.v[dim], load(src + so_));
    else out[oo + j * so.v[dim]] = src[so_];
  }
}

template <bool kAdd>
void scatter_into(const Buffer& out, int dim, const Buffer& index, const Buffer& src, const char* op) {
  const int64_t n = index.numel();
  if (n == 0) return;
  visit_index(index.dtype, op, [&](auto itag) {
    visit_numeric(out.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      launch(kAdd ? "scatter_add_kernel" : "scatter_kernel", scatter_kernel<T, decltype(itag), kAdd>, blocks_for(n),
             kThreads, 0, shape_of(index), n, out.ptr<T>(), strides_of(out), src.ptr<T>(), strides_of(src),
             index.ptr<decltype(itag)>(), strides_of(index), dim, out.sizes[dim], device_error_flag());
    });
  });
}

}  // namespace

void index_select(const Buffer& out, const Buffer& x, int dim, const Buffer& index) {
  NvtxRange range("kiln::index_select");
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_index(index.dtype, "index_select", [&](auto itag) {
    visit_dtype(x.dtype, "index_select", [&](auto tag) {
      using T = decltype(tag);
      launch("index_select_kernel", index_select_kernel<T, decltype(itag)>, blocks_for(n), kThreads, 0, shape_of(out),
             n, out.ptr<T>(), strides_of(out), x.ptr<T>(), strides_of(x), dim, x.sizes[dim],
             index.ptr<decltype(itag)>(), device_error_flag());
    });
  });
}

void index_add(const Buffer& out, int dim, const Buffer& index, const Buffer& src) {
  NvtxRange range("kiln::index_add");
  // The slice: src's shape without dim.
  Buffer slice_src = src;
  slice_src.sizes[dim] = 1;
  const int64_t n = slice_src.numel(), count = index.numel();
  if (n == 0 || count == 0) return;
  if (dim == 0 && index_add_sorted(out, index, src)) return;
  visit_index(index.dtype, "index_add", [&](auto itag) {
    visit_numeric(out.dtype, "index_add", [&](auto tag) {
      using T = decltype(tag);
      launch("index_add_kernel", index_add_kernel<T, decltype(itag)>, blocks_for(n), kThreads, 0, shape_of(slice_src),
             n, out.ptr<T>(), strides_of(out), src.ptr<T>(), strides_of(src), src.strides[dim], out.strides[dim], count,
             out.sizes[dim], index.ptr<decltype(itag)>(), device_error_flag());
    });
  });
}

void gather(const Buffer& out, const Buffer& x, int dim, const Buffer& index) {
  NvtxRange range("kiln::gather");
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_index(index.dtype, "gather", [&](auto itag) {
    visit_dtype(x.dtype, "gather", [&](auto tag) {
      using T = decltype(tag);
      launch("gather_kernel", gather_kernel<T, decltype(itag)>, blocks_for(n), kThreads, 0, shape_of(out), n,
             out.ptr<T>(), strides_of(out), x.ptr<T>(), strides_of(x), index.ptr<decltype(itag)>(), strides_of(index),
             dim, x.sizes[dim], device_error_flag());
    });
  });
}

void scatter_add(const Buffer& out, int dim, const Buffer& index, const Buffer& src) {
  NvtxRange range("kiln::scatter_add");
  scatter_into<true>(out, dim, index, src, "scatter_add");
}

void scatter(const Buffer& out, int dim, const Buffer& index, const Buffer& src) {
  NvtxRange range("kiln::scatter");
  scatter_into<false>(out, dim, index, src, "scatter");
}

}  // namespace kiln::kernels::cuda
