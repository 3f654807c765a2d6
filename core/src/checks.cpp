// Argument checks and descriptions shared by the op front-ends.

#include "dispatch.h"

namespace kiln::detail {

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return fmt::format("{}{} on {}", t.dtype(), shape_str(t.sizes()), t.device());
}

void check_defined(const Tensor& t, const char* op, const char* arg) {
  KILN_CHECK(t.defined(), "[{}] argument '{}' is an undefined tensor", op, arg);
}

void check_same_device(const char* op, const std::vector<Tensor>& ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    if (t.device() != first->device()) {
      std::vector<std::string> all;
      for (const Tensor& u : ts) all.push_back(describe(u));
      KILN_FAIL("[{}] expects all tensors on one device, got {}", op, fmt::join(all, ", "));
    }
  }
}

void check_floating(const Tensor& t, const char* op) {
  KILN_CHECK(is_floating(t.dtype()), "[{}] expects a floating tensor, got {}", op, describe(t));
}

}  // namespace kiln::detail
