#pragma once
// Building blocks of the CPU kernels: dispatch over dtypes, and one strided
// N-operand loop that coalesces dimensions and parallelizes the outer ones.

#include <array>
#include <cstdint>
#include <type_traits>

#include "kiln/base/buffer.h"
#include "kiln/base/error.h"
#include "kiln/base/half.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace kiln::kernels::cpu {

// The type arithmetic runs in: float for the 16-bit floats, else the type itself.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, BFloat16> || std::is_same_v<T, Half>, float, T>;

template <typename T>
inline constexpr bool is_float_v = std::is_floating_point_v<acc_t<T>>;

// Calls f(T{}) with the C++ type of t.
template <typename F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Bool: return f(bool{});
    case DType::Int32: return f(int32_t{});
    case DType::Int64: return f(int64_t{});
    case DType::BFloat16: return f(BFloat16{});
    case DType::Float16: return f(Half{});
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
  }
  KILN_FAIL("[cpu] unknown dtype");
}

// As visit_dtype, for the floating dtypes only.
template <typename F>
decltype(auto) visit_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::BFloat16: return f(BFloat16{});
    case DType::Float16: return f(Half{});
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    default: KILN_FAIL("[{}] expects a floating dtype, got {}", op, t);
  }
}

// As visit_dtype, for the dtypes with arithmetic (all but bool).
template <typename F>
decltype(auto) visit_numeric(DType t, const char* op, F&& f) {
  if (t == DType::Bool) KILN_FAIL("[{}] does not support bool tensors", op);
  return visit_dtype(t, std::forward<F>(f));
}

// Index type of an index buffer.
template <typename F>
decltype(auto) visit_index(DType t, const char* op, F&& f) {
  if (t == DType::Int32) return f(int32_t{});
  if (t == DType::Int64) return f(int64_t{});
  KILN_FAIL("[{}] indices must be int32 or int64, got {}", op, t);
}

constexpr int64_t kParallelGrain = 32768;

// Visits every element of bufs[0]'s shape (all bufs share it, strides may differ):
// body(offsets, n, inner_strides) handles a run of n elements, where operand j's
// run starts at element offset offsets[j] and steps by inner_strides[j].
// Runs serially when `serial` (an accumulation with possible collisions).
template <size_t N, typename F>
void for_each(const std::array<const Buffer*, N>& bufs, F&& body, bool serial = false) {
  const Buffer& ref = *bufs[0];
  // Coalesce: drop size-1 dims, merge dims that are contiguous for every operand.
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];
  int nd = 0;
  for (int d = 0; d < ref.ndim; ++d) {
    if (ref.sizes[d] == 1) continue;
    bool merge = nd > 0;
    for (size_t j = 0; j < N && merge; ++j)
      merge = strides[j][nd - 1] == bufs[j]->strides[d] * ref.sizes[d];
    if (merge) {
      sizes[nd - 1] *= ref.sizes[d];
      for (size_t j = 0; j < N; ++j) strides[j][nd - 1] = bufs[j]->strides[d];
    } else {
      sizes[nd] = ref.sizes[d];
      for (size_t j = 0; j < N; ++j) strides[j][nd] = bufs[j]->strides[d];
      ++nd;
    }
  }
  std::array<int64_t, N> inner{};
  int64_t n_inner = 1;
  if (nd > 0) {
    n_inner = sizes[nd - 1];
    for (size_t j = 0; j < N; ++j) inner[j] = strides[j][nd - 1];
  }
  int64_t total = ref.numel();
  if (total == 0) return;
  int64_t n_outer = total / n_inner;
  auto run = [&](int64_t o) {
    std::array<int64_t, N> off{};
    int64_t rem = o;
    for (int d = nd - 2; d >= 0; --d) {
      int64_t i = rem % sizes[d];
      rem /= sizes[d];
      for (size_t j = 0; j < N; ++j) off[j] += i * strides[j][d];
    }
    body(off, n_inner, inner);
  };
  if (!serial && total >= kParallelGrain && n_outer > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < n_outer; ++o) run(o);
  } else {
    for (int64_t o = 0; o < n_outer; ++o) run(o);
  }
}

// Runs f(begin, end) over [0, n) split across threads when the work is large.
template <typename F>
void parallel_for(int64_t n, int64_t work_per_item, F&& f) {
  if (n * work_per_item >= kParallelGrain && n > 1) {
#pragma omp parallel
    {
#ifdef _OPENMP
      int nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
      int nt = 1, t = 0;
#endif
      int64_t chunk = (n + nt - 1) / nt;
      int64_t b = t * chunk, e = b + chunk < n ? b + chunk : n;
      if (b < e) f(b, e);
    }
  } else {
    f(0, n);
  }
}

}  // namespace kiln::kernels::cpu
