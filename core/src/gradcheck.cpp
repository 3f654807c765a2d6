#include "kiln/gradcheck.h"

#include <algorithm>
#include <cmath>

#include "dispatch.h"

namespace kiln {

double gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                 const GradcheckOptions& options) {
  Generator gen(options.seed);
  const Tensor out = f(inputs);
  KILN_CHECK(out.defined() && out.requires_grad(),
             "[gradcheck] the function's output does not require grad: no input that requires grad reaches it");
  const Tensor w = randn(out.sizes(), gen, TensorOptions(kFloat64).device(out.device()));
  for (Tensor& x : inputs)
    if (x.defined() && x.requires_grad()) x.set_grad(Tensor());
  sum(out.to(kFloat64) * w).backward();
  auto loss = [&] {
    NoGradGuard no_grad;
    return sum(f(inputs).to(kFloat64) * w).item<double>();
  };
  double worst = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    KILN_CHECK(x.dtype() == kFloat64 && x.is_contiguous() && x.device().is_cpu(),
               "[gradcheck] input {} is {}: inputs that require grad must be contiguous float64 on the CPU", k,
               describe(x));
    const Tensor analytic = x.grad().defined() ? x.grad().to(kFloat64).contiguous() : zeros(x.sizes(), kFloat64);
    const double* a = analytic.data_ptr<double>();
    double* p = x.detach().data_ptr<double>();
    double error = 0, scale = 0;
    int64_t at = 0;
    std::vector<double> numeric(static_cast<size_t>(x.numel()));
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = p[i];
      p[i] = saved + options.eps;
      const double up = loss();
      p[i] = saved - options.eps;
      const double down = loss();
      p[i] = saved;
      const double n = (up - down) / (2 * options.eps);
      numeric[static_cast<size_t>(i)] = n;
      const double e = std::isnan(n) != std::isnan(a[i]) ? INFINITY : std::abs(a[i] - n);
      if (e > error) {
        error = e;
        at = i;
      }
      if (std::isfinite(n)) scale = std::max(scale, std::abs(n));
    }
    const double relative = scale == 0 ? error : error / scale;
    KILN_CHECK(!(relative > options.tol), "[gradcheck] input {} ({}): the gradient is off by {:.3g} relative "
               "(tol {:.3g}); worst at flat index {}: autograd {:.10g}, finite differences {:.10g}", k, describe(x),
               relative, options.tol, at, a[at], numeric[static_cast<size_t>(at)]);
    worst = std::max(worst, relative);
  }
  return worst;
}

}  // namespace kiln
