#pragma once
// fmt support for kiln's base types, for error messages and printing. Kept out
// of dtype.h and device.h so that CUDA sources never include fmt.

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <ostream>

#include "kiln/base/device.h"
#include "kiln/base/dtype.h"

namespace fmt {

template <>
struct formatter<kiln::DType> : formatter<std::string_view> {
  auto format(kiln::DType t, format_context& ctx) const {
    return formatter<std::string_view>::format(kiln::dtype_name(t), ctx);
  }
};

template <>
struct formatter<kiln::Device> : formatter<std::string_view> {
  auto format(const kiln::Device& d, format_context& ctx) const {
    return formatter<std::string_view>::format(d.str(), ctx);
  }
};

}  // namespace fmt

namespace kiln {
// Writes "float32", "cuda:1".
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }
inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }
}  // namespace kiln
