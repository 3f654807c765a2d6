#pragma once
// Scalar: a number passed to an op (a + 2.5). Knows whether it was written as a
// bool, an integer or a floating value, which type promotion needs.

#include <cstdint>
#include <type_traits>

#include "kiln/base/dtype.h"
#include "kiln/base/half.h"

namespace kiln {

// A number that is an integer, a floating value or a bool, as ops that take one accept.
class Scalar {
 public:
  // How the number was written.
  enum class Kind : uint8_t { Bool, Int, Float };

  Scalar() : Scalar(int64_t{0}) {}  // integer 0
  // From any arithmetic type, implicitly, so that a + 2.5 reads as PyTorch's.
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
  Scalar(T v) {  // NOLINT(google-explicit-constructor)
    if constexpr (std::is_same_v<T, bool>) {
      kind_ = Kind::Bool;
      i_ = v;
      d_ = v;
    } else if constexpr (std::is_integral_v<T>) {
      kind_ = Kind::Int;
      i_ = static_cast<int64_t>(v);
      d_ = static_cast<double>(v);
    } else {
      kind_ = Kind::Float;
      d_ = static_cast<double>(v);
      // Truncated toward zero, saturated at int64's ends; NaN counts as 0.
      i_ = d_ != d_ ? 0 : d_ >= 0x1p63 ? INT64_MAX : d_ < -0x1p63 ? INT64_MIN : static_cast<int64_t>(d_);
    }
  }
  // Half-precision values count as floating.
  Scalar(BFloat16 v) : Scalar(static_cast<float>(v)) {}  // NOLINT
  Scalar(Half v) : Scalar(static_cast<float>(v)) {}      // NOLINT

  Kind kind() const { return kind_; }  // how it was written
  bool is_floating() const { return kind_ == Kind::Float; }  // written as a floating value
  // The value as each type (a floating value truncated toward zero as an integer, saturated; NaN as 0).
  double to_double() const { return d_; }
  int64_t to_int() const { return i_; }
  bool to_bool() const { return kind_ == Kind::Float ? d_ != 0.0 : i_ != 0; }
  // The dtype a tensor holding just this value would default to.
  DType default_dtype() const {
    return kind_ == Kind::Bool ? kBool : kind_ == Kind::Int ? kInt64 : kFloat32;
  }

 private:
  Kind kind_;
  double d_ = 0;
  int64_t i_ = 0;
};

}  // namespace kiln
