#pragma once
// Dispatch over dtypes for the kernels (CPU and CUDA): visit_*(dtype, op, f)
// calls f(T{}) with the C++ type of the dtype, or raises "[op] ... dtype".
// Free of fmt, so .cu files include it too.

#include <cstdint>

#include "kiln/base/dtype.h"
#include "kiln/base/half.h"

namespace kiln {

namespace detail {
// Raises kiln::Error: "[op] is not defined for dtype <dtype>".
[[noreturn]] void unsupported_dtype(const char* op, DType dtype);
}  // namespace detail

// Every dtype.
template <typename F>
decltype(auto) visit_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::Bool: return f(bool{});
    case DType::Int32: return f(int32_t{});
    case DType::Int64: return f(int64_t{});
    case DType::BFloat16: return f(BFloat16{});
    case DType::Float16: return f(Half{});
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
  }
  detail::unsupported_dtype(op, t);
}

// The floating dtypes.
template <typename F>
decltype(auto) visit_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::BFloat16: return f(BFloat16{});
    case DType::Float16: return f(Half{});
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    default: detail::unsupported_dtype(op, t);
  }
}

// The dtypes with arithmetic: all but bool.
template <typename F>
decltype(auto) visit_numeric(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::Int32: return f(int32_t{});
    case DType::Int64: return f(int64_t{});
    default: break;
  }
  return visit_floating(t, op, static_cast<F&&>(f));
}

// Index dtypes: int32 and int64.
template <typename F>
decltype(auto) visit_index(DType t, const char* op, F&& f) {
  if (t == DType::Int32) return f(int32_t{});
  if (t == DType::Int64) return f(int64_t{});
  detail::unsupported_dtype(op, t);
}

// An optimizer update: f(P{}, G{}) with the master weights' type (float32 or
// float64) and the gradient's (any floating dtype).
template <typename F>
void visit_master(DType master, DType grad, const char* op, F&& f) {
  auto with_master = [&](auto ptag) { visit_floating(grad, op, [&](auto gtag) { f(ptag, gtag); }); };
  if (master == DType::Float64) return with_master(double{});
  if (master == DType::Float32) return with_master(float{});
  detail::unsupported_dtype(op, master);
}

}  // namespace kiln
