#pragma once
// Core-internal helpers shared by the op front-ends: the one dispatch point to
// the device kernels, and argument checks that name the op.

#include <string>
#include <vector>

#include "kiln/autograd.h"
#include "kiln/kernels/cpu.h"
#include "kiln/kernels/cuda.h"
#include "kiln/ops.h"

// Calls kernels::cpu::fn or kernels::cuda::fn by device; a CUDA call runs with
// its device current (the scope object lives to the end of the expression).
#define KILN_DISPATCH(device, fn, ...)                                                                  \
  ((device).is_cpu() ? ::kiln::kernels::cpu::fn(__VA_ARGS__)                                            \
                     : (::kiln::kernels::cuda::DeviceScope((device).index), ::kiln::kernels::cuda::fn(__VA_ARGS__)))

namespace kiln {
using autograd::Grads;
using autograd::Needs;
}  // namespace kiln

namespace kiln::detail {

// "[2, 3]" for messages.
std::string shape_str(const Shape& s);
// "float32[2, 3] on cpu" for messages.
std::string describe(const Tensor& t);

void check_defined(const Tensor& t, const char* op, const char* arg);
// All defined tensors on one device; raises naming each otherwise.
void check_same_device(const char* op, const std::vector<Tensor>& ts);
void check_floating(const Tensor& t, const char* op);

// A Buffer of t (t defined), or an empty Buffer (data == nullptr) for an undefined t.
inline Buffer buffer_or_null(const Tensor& t) { return t.defined() ? t.buffer() : Buffer{}; }

// Saves t for backward under op's name.
inline autograd::SavedTensor save(const Tensor& t, const char* op) { return autograd::SavedTensor(t, op); }

}  // namespace kiln::detail

namespace kiln {
using detail::buffer_or_null;
using detail::describe;
using detail::save;
using detail::shape_str;
}  // namespace kiln
