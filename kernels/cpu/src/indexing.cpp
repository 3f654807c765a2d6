// Indexing kernels along one dim: index_select / index_add (whole slices) and
// gather / scatter_add (element by element). Indices are checked before any
// write, so a bad index raises without touching the output.

#include <algorithm>
#include <cstring>

#include "kiln/kernels/cpu.h"
#include "loops.h"

namespace kiln::kernels::cpu {

namespace {

// The slice b.select(dim, i).
Buffer select(const Buffer& b, int dim, int64_t i) {
  Buffer s = b;
  s.data = static_cast<char*>(b.data) + i * b.strides[dim] * static_cast<int64_t>(element_size(b.dtype));
  s.ndim = b.ndim - 1;
  for (int d = dim; d < s.ndim; ++d) {
    s.sizes[d] = b.sizes[d + 1];
    s.strides[d] = b.strides[d + 1];
  }
  return s;
}

// Raises unless every element of a contiguous index buffer is in [0, size).
void check_indices(const Buffer& index, int64_t size, const char* op) {
  visit_index(index.dtype, op, [&](auto tag) {
    const auto* p = index.ptr<decltype(tag)>();
    for (int64_t k = 0; k < index.numel(); ++k)
      KILN_CHECK(p[k] >= 0 && p[k] < size, "[{}] index {} is out of range for a dimension of size {}", op,
                 int64_t(p[k]), size);
  });
}

// Calls f(k, index[k]) for every element of a contiguous index buffer after
// checking all of them against [0, size).
template <typename F>
void for_each_index(const Buffer& index, int64_t size, const char* op, F&& f) {
  check_indices(index, size, op);
  visit_index(index.dtype, op, [&](auto tag) {
    const auto* p = index.ptr<decltype(tag)>();
    for (int64_t k = 0; k < index.numel(); ++k) f(k, static_cast<int64_t>(p[k]));
  });
}

// x viewed with out's shape and a zero stride along dim: gather's base pointers.
Buffer along(const Buffer& x, const Buffer& shape, int dim) {
  Buffer v = x;
  for (int d = 0; d < x.ndim; ++d) v.sizes[d] = shape.sizes[d];
  v.strides[dim] = 0;
  return v;
}

template <typename F>
void element_indexed(const Buffer& target, const Buffer& other, const Buffer& index, int dim, const char* op,
                     bool serial, F&& f) {
  // Checks every index against target's size along dim, then walks
  // (target along dim, other, index) calling f(target_ptr, other_ptr) per element.
  Buffer t = along(target, index, dim);
  const int64_t size = target.sizes[dim], step = target.strides[dim];
  visit_index(index.dtype, op, [&](auto itag) {
    using I = decltype(itag);
    bool bad = false;
    int64_t offending = 0;
    for_each<1>({&index}, [&](auto off, int64_t n, auto st) {
      const I* ip = index.ptr<I>() + off[0];
      for (int64_t k = 0; k < n && !bad; ++k) {
        offending = static_cast<int64_t>(ip[k * st[0]]);
        bad = offending < 0 || offending >= size;
      }
    }, /*serial=*/true);
    KILN_CHECK(!bad, "[{}] index {} is out of range for a dimension of size {}", op, offending, size);
    visit_dtype(target.dtype, "gather", [&](auto tag) {
      using T = decltype(tag);
      for_each<3>({&t, &other, &index}, [&](auto off, int64_t n, auto st) {
        T* tp = t.ptr<T>() + off[0];
        T* op_ = other.ptr<T>() + off[1];
        const I* ip = index.ptr<I>() + off[2];
        for (int64_t k = 0; k < n; ++k) f(tp + k * st[0] + int64_t(ip[k * st[2]]) * step, op_ + k * st[1]);
      }, serial);
    });
  });
}

}  // namespace

void index_select(const Buffer& out, const Buffer& x, int dim, const Buffer& index) {
  if (dim == 0 && x.is_contiguous() && out.is_contiguous() && out.dtype == x.dtype) {
    // Whole contiguous rows (an embedding's lookup): one memcpy each, split among threads.
    const size_t row_bytes = static_cast<size_t>(out.numel() / std::max<int64_t>(out.sizes[0], 1)) * element_size(x.dtype);
    check_indices(index, x.sizes[0], "index_select");
    visit_index(index.dtype, "index_select", [&](auto tag) {
      const auto* idx = index.ptr<decltype(tag)>();
      parallel_for(out.sizes[0], static_cast<int64_t>(row_bytes / 4), [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; ++k)
          std::memcpy(static_cast<char*>(out.data) + k * row_bytes,
                      static_cast<const char*>(x.data) + static_cast<int64_t>(idx[k]) * row_bytes, row_bytes);
      });
    });
    return;
  }
  for_each_index(index, x.sizes[dim], "index_select", [&](int64_t k, int64_t i) {
    copy(select(out, dim, k), select(x, dim, i));
  });
}

void index_add(const Buffer& out, int dim, const Buffer& index, const Buffer& src) {
  for_each_index(index, out.sizes[dim], "index_add", [&](int64_t k, int64_t i) {
    Buffer o = select(out, dim, i);
    binary(BinaryOp::Add, o, o, select(src, dim, k));
  });
}

void gather(const Buffer& out, const Buffer& x, int dim, const Buffer& index) {
  element_indexed(x, out, index, dim, "gather", false, [](auto* xp, auto* op) { *op = *xp; });
}

void scatter_add(const Buffer& out, int dim, const Buffer& index, const Buffer& src) {
  KILN_CHECK(out.dtype != DType::Bool, "[scatter_add] does not support bool tensors");
  element_indexed(out, src, index, dim, "scatter_add", true, [](auto* op, auto* sp) {
    using T = std::remove_pointer_t<decltype(op)>;
    *op = T(acc_t<T>(*op) + acc_t<T>(*sp));
  });
}

void scatter(const Buffer& out, int dim, const Buffer& index, const Buffer& src) {
  element_indexed(out, src, index, dim, "scatter", true, [](auto* op, auto* sp) { *op = *sp; });
}

}  // namespace kiln::kernels::cpu
