#include "kiln/optim/optimizers.h"

#include <cmath>

#include "kiln/ops.h"

namespace kiln::optim {

namespace {
// The named state tensor, zero-initialized in the parameter's dtype.
Tensor& state_of(std::map<std::string, Tensor>& state, const char* name, const Tensor& p) {
  Tensor& t = state[name];
  if (!t.defined()) t = zeros(p.sizes(), TensorOptions(p.dtype()).device(p.device()));
  return t;
}
void check_beta(double b, const char* name, const char* op) {
  KILN_CHECK(b >= 0 && b < 1, "[{}] {} must be in [0, 1), got {}", op, name, b);
}
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& o) : Optimizer(std::move(groups), o.lr, "SGD"), options_(o) {
  KILN_CHECK(o.momentum >= 0, "[SGD] momentum must be >= 0, got {}", o.momentum);
  KILN_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
             "[SGD] Nesterov momentum needs momentum > 0 and dampening = 0");
}

void SGD::update(Tensor& p, const Tensor& grad, std::map<std::string, Tensor>& state, double wd) {
  const SGDOptions& o = options_;
  Tensor g = wd != 0 ? grad + p * wd : grad;
  if (o.momentum != 0) {
    auto it = state.find("momentum");
    if (it == state.end()) {
      it = state.emplace("momentum", g.to(p.dtype() == kFloat64 ? kFloat64 : kFloat32).clone()).first;
    } else {
      it->second.mul_(o.momentum).add_(g, 1.0 - o.dampening);
    }
    g = o.nesterov ? g + it->second * o.momentum : it->second;
  }
  p.add_(g, -lr());
}

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& o)
    : Optimizer(std::move(groups), o.lr, "AdamW"), options_(o) {
  check_beta(o.beta1, "beta1", "AdamW");
  check_beta(o.beta2, "beta2", "AdamW");
  KILN_CHECK(o.eps >= 0, "[AdamW] eps must be >= 0, got {}", o.eps);
}

void AdamW::update(Tensor& p, const Tensor& g, std::map<std::string, Tensor>& state, double wd) {
  const AdamWOptions& o = options_;
  Tensor& m = state_of(state, "exp_avg", p);
  Tensor& v = state_of(state, "exp_avg_sq", p);
  const double t = static_cast<double>(steps());
  adamw_update_(p, g, m, v, {lr(), o.beta1, o.beta2, o.eps, wd, 1 - std::pow(o.beta1, t), 1 - std::pow(o.beta2, t)});
}

Lion::Lion(std::vector<ParamGroup> groups, const LionOptions& o) : Optimizer(std::move(groups), o.lr, "Lion"), options_(o) {
  check_beta(o.beta1, "beta1", "Lion");
  check_beta(o.beta2, "beta2", "Lion");
}

void Lion::update(Tensor& p, const Tensor& g, std::map<std::string, Tensor>& state, double wd) {
  const LionOptions& o = options_;
  lion_update_(p, g, state_of(state, "exp_avg", p), {lr(), o.beta1, o.beta2, wd});
}

}  // namespace kiln::optim
