#pragma once
// Loops the compiler can vectorize without -ffast-math: an exp with no libm
// call (float32 to within 2 ulp of std::exp) and sums and maxima over a row
// kept in kLanes independent partials, combined in a fixed order (the result
// depends on the row's length only, never on threads).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace kiln::kernels::cpu {

// e^x in float32 (Cephes' expf polynomial on x - n ln 2, scaled by 2^n):
// 0 below ln(FLT_MIN) (no subnormals), inf above ln(FLT_MAX), NaN for NaN.
[[gnu::always_inline]] inline float exp_f32(float x) {
  constexpr float kMax = 88.72283905206835f, kMin = -87.33654475055310f;
  const float xc = x > kMax ? kMax : (x < kMin ? kMin : x);  // NaN passes through
  // n = round(xc / ln 2), by the 1.5 * 2^23 trick (no rounding call to vectorize).
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as 2^h 2^(n - h), both normal for every n in [-126, 128].
  const int32_t ni = static_cast<int32_t>(n), h = ni >> 1;
  const float e = p * std::bit_cast<float>((h + 127) << 23) * std::bit_cast<float>((ni - h + 127) << 23);
  return x > kMax ? std::numeric_limits<float>::infinity() : (x < kMin ? 0.0f : e);
}

// exp in the type's own precision: exp_f32 for float, std::exp for double.
template <typename F>
[[gnu::always_inline]] inline F exp_of(F x) {
  if constexpr (std::is_same_v<F, float>) return exp_f32(x);
  else return std::exp(x);
}

// 1 / (1 + e^-x).
template <typename F>
[[gnu::always_inline]] inline F sigmoid_of(F x) {
  return F(1) / (F(1) + exp_of(-x));
}

// GPT-2's GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3),
// its tanh as 1 - 2 / (e^(2u) + 1) (exact at both ends, and the absolute
// error near 0 is float rounding).
template <typename F>
[[gnu::always_inline]] inline F gelu_tanh_of(F x) {
  const F u = F(0.7978845608028654) * (x + F(0.044715) * x * x * x);
  return F(0.5) * x * (F(2) - F(2) / (exp_of(F(2) * u) + F(1)));
}

// d gelu_tanh / dx.
template <typename F>
[[gnu::always_inline]] inline F gelu_tanh_grad_of(F x) {
  const F k = F(0.7978845608028654);
  const F u = k * (x + F(0.044715) * x * x * x);
  const F t = F(1) - F(2) / (exp_of(F(2) * u) + F(1));
  return F(0.5) * (F(1) + t) + F(0.5) * x * (F(1) - t * t) * k * (F(1) + F(3) * F(0.044715) * x * x);
}

inline constexpr int kLanes = 8;

// The sum over k < n of f(k) in A.
template <typename A, typename F>
inline A lane_sum(int64_t n, F&& f) {
  A acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<A>(f(k + j));
  A total = 0;
  for (; k < n; ++k) total += static_cast<A>(f(k));
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

// The largest of x[0, n) as F (-inf for none). NaNs are passed over: a row
// holding one gets NaN from its sum of exponentials instead. float and
// double rows compare in vector registers (GCC vectorizes no max reduction
// that must keep NaN's order).
template <typename F, typename T>
[[gnu::always_inline]] inline F row_max(const T* x, int64_t n) {
  constexpr F kLow = -std::numeric_limits<F>::infinity();
  F best = kLow;
  int64_t k = 0;
  if constexpr (std::is_same_v<T, F>) {
    typedef F Lanes __attribute__((vector_size(kLanes * sizeof(F))));
    Lanes acc = Lanes{} + kLow;
    for (; k + kLanes <= n; k += kLanes) {
      Lanes v;
      std::memcpy(&v, x + k, sizeof v);
      acc = v > acc ? v : acc;
    }
    for (int j = 0; j < kLanes; ++j) best = acc[j] > best ? acc[j] : best;
  }
  for (; k < n; ++k) {
    const F v = static_cast<F>(x[k]);
    best = v > best ? v : best;
  }
  return best;
}

}  // namespace kiln::kernels::cpu
