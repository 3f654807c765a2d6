#pragma once
// Checks a differentiable function's gradients against finite differences,
// for custom ops and Functions (torch.autograd.gradcheck's job):
//
//   kiln::Tensor x = kiln::randn({3, 4}, gen, kiln::kFloat64).requires_grad_();
//   kiln::gradcheck([](const std::vector<kiln::Tensor>& v) { return kiln::tanh(v[0]) * v[0]; }, {x});

#include <cstdint>
#include <functional>
#include <vector>

#include "kiln/tensor.h"

namespace kiln {

// gradcheck's step and tolerances.
struct GradcheckOptions {
  double eps = 1e-6;  // the central difference's step
  double tol = 1e-6;  // the largest error allowed: max |analytic - numeric| over max |numeric|, per input
  uint64_t seed = 99;  // of the random upstream gradient
};

// For a fixed random w (from seed), compares the gradient autograd gives
// sum(f(inputs) * w) with respect to each input that requires grad with its
// central differences, entry by entry. Inputs that require grad must be
// contiguous float64 CPU tensors; the others are held fixed. Raises
// kiln::Error naming the input and its worst entry when an input's error
// exceeds tol; returns the largest error over the inputs.
double gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                 const GradcheckOptions& options = {});

}  // namespace kiln
