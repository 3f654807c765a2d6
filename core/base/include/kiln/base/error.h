#pragma once
// kiln::Error and KILN_CHECK: the one way kiln reports bad input and failed calls.

#include "kiln/base/format.h"

#include <stdexcept>
#include <string>

namespace kiln {

// Raised for every user error and every failed library call. The message starts
// with "[op]" and names the offending shapes, dtypes and devices.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}  // what() returns the message
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace kiln

// KILN_CHECK(cond, "[op] format {}", args...): throws kiln::Error when cond is false.
#define KILN_CHECK(cond, ...)                                                       \
  do {                                                                              \
    if (!(cond)) [[unlikely]]                                                       \
      ::kiln::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__));  \
  } while (0)

// KILN_FAIL("[op] format {}", args...): throws unconditionally.
#define KILN_FAIL(...) ::kiln::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
