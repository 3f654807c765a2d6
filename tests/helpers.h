#pragma once
// Test helpers: random shapes and inputs, float64 reference evaluation by index,
// a central-difference gradcheck, and comparisons with per-dtype tolerances.

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include <kiln/kiln.h>

namespace kt {

using kiln::Shape;
using kiln::Tensor;

// Values of t as float64 in row-major order.
inline std::vector<double> values(const Tensor& t) {
  kiln::NoGradGuard no_grad;
  Tensor c = t.to(kiln::kCPU, kiln::kFloat64).contiguous();
  const double* p = c.data_ptr<double>();
  return {p, p + c.numel()};
}

// Calls f(index) for every multi-index of shape, row-major.
inline void for_each_index(const Shape& shape, const std::function<void(const Shape&)>& f) {
  int64_t n = kiln::shape_numel(shape);
  Shape idx(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    f(idx);
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

// A float64 view of t for reading by multi-index, broadcasting like numpy.
struct Ref {
  std::vector<double> v;
  Shape shape, strides;
  explicit Ref(const Tensor& t) : v(values(t)), shape(t.sizes()), strides(kiln::contiguous_strides(t.sizes())) {}
  // Reads at an index of a (possibly larger) broadcast shape.
  double at(const Shape& idx) const {
    int64_t off = 0;
    size_t lead = idx.size() - shape.size();
    for (size_t d = 0; d < shape.size(); ++d)
      if (shape[d] != 1) off += idx[lead + d] * strides[d];
    return v[static_cast<size_t>(off)];
  }
};

// Max |a - b| over max |b| (the norm-relative error used across kiln's tests).
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (std::isnan(a[i])) continue;
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return INFINITY;
      continue;
    }
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return den == 0 ? num : num / den;
}

// Tolerance of the norm-relative error for a result computed in dtype.
inline double tolerance(kiln::DType t) {
  switch (t) {
    case kiln::DType::Float64: return 1e-12;
    case kiln::DType::Float32: return 1e-5;
    case kiln::DType::Float16: return 2e-3;
    case kiln::DType::BFloat16: return 1.6e-2;
    default: return 0;
  }
}

#define KT_CHECK_CLOSE(actual, expected, tol)                                 \
  do {                                                                        \
    double kt_err_ = ::kt::rel_error(::kt::values(actual), (expected));       \
    INFO("relative error " << kt_err_ << " (tolerance " << (tol) << ")");     \
    CHECK(kt_err_ <= (tol));                                                  \
  } while (0)

// Random shapes with odd sizes and size-1 dims, rank in [min_rank, max_rank].
inline Shape random_shape(std::mt19937& rng, int min_rank = 1, int max_rank = 4, int64_t max_size = 7) {
  int rank = std::uniform_int_distribution<int>(min_rank, max_rank)(rng);
  Shape s;
  for (int i = 0; i < rank; ++i) s.push_back(std::uniform_int_distribution<int64_t>(1, max_size)(rng));
  return s;
}

// A random tensor of shape; non-contiguous (a transposed copy viewed back) when asked.
inline Tensor random_tensor(const Shape& shape, kiln::Generator& gen, kiln::DType dtype = kiln::kFloat64,
                            bool contiguous = true) {
  if (contiguous || shape.size() < 2) return kiln::randn(shape, gen, dtype);
  Shape swapped = shape;
  std::swap(swapped[0], swapped[1]);
  return kiln::randn(swapped, gen, dtype).transpose(0, 1);
}

// kiln::gradcheck as a test assertion: a failure is reported with its message.
inline void check_grad(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                      double eps = 1e-6, double tol = 1e-6) {
  CHECK_NOTHROW(kiln::gradcheck(f, std::move(inputs), {.eps = eps, .tol = tol}));
}

// A contiguous float64 leaf requiring grad.
inline Tensor leaf(const Shape& shape, kiln::Generator& gen) {
  return kiln::randn(shape, gen, kiln::kFloat64).requires_grad_();
}

}  // namespace kt
