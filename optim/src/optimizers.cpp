#include "kiln/optim/optimizers.h"

#include <cmath>
#include <tuple>

#include "kiln/ops.h"

namespace kiln::optim {

namespace {
// The named state tensor, zero-initialized in the parameter's dtype.
Tensor& state_of(std::map<std::string, Tensor>& state, const char* name, const Tensor& p) {
  Tensor& t = state[name];
  if (!t.defined()) t = zeros(p.sizes(), TensorOptions(p.dtype()).device(p.device()));
  return t;
}
// Calls f with the indices of each set of parameters one fused call can take:
// the same parameter dtype and device, the same gradient dtype.
template <typename F>
void for_each_kind(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, F&& f) {
  std::map<std::tuple<int, std::string, int>, std::vector<size_t>> kinds;
  for (size_t i = 0; i < params.size(); ++i)
    kinds[{static_cast<int>(params[i].dtype()), params[i].device().str(), static_cast<int>(grads[i].dtype())}]
        .push_back(i);
  for (const auto& [kind, idx] : kinds) f(idx);
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

void SGD::update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<std::map<std::string, Tensor>*>& states, double lr, double wd) {
  const SGDOptions& o = options_;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    Tensor g = wd != 0 ? grads[i] + p * wd : grads[i];
    if (o.momentum != 0) {
      auto& state = *states[i];
      auto it = state.find("momentum");
      if (it == state.end()) {
        it = state.emplace("momentum", g.to(p.dtype() == kFloat64 ? kFloat64 : kFloat32).clone()).first;
      } else {
        it->second.mul_(o.momentum).add_(g, 1.0 - o.dampening);
      }
      g = o.nesterov ? g + it->second * o.momentum : it->second;
    }
    p.add_(g, -lr);
  }
}

std::vector<std::string> SGD::state_names() const {
  return options_.momentum != 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{};
}

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& o)
    : Optimizer(std::move(groups), o.lr, "AdamW"), options_(o) {
  check_beta(o.beta1, "beta1", "AdamW");
  check_beta(o.beta2, "beta2", "AdamW");
  KILN_CHECK(o.eps >= 0, "[AdamW] eps must be >= 0, got {}", o.eps);
}

void AdamW::update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                   const std::vector<std::map<std::string, Tensor>*>& states, double lr, double wd) {
  const AdamWOptions& o = options_;
  const double t = static_cast<double>(steps());
  const AdamWStep step{lr, o.beta1, o.beta2, o.eps, wd, 1 - std::pow(o.beta1, t), 1 - std::pow(o.beta2, t)};
  for_each_kind(params, grads, [&](const std::vector<size_t>& idx) {
    std::vector<Tensor> p, g, m, v;
    for (size_t i : idx) {
      p.push_back(params[i]);
      g.push_back(grads[i]);
      m.push_back(state_of(*states[i], "exp_avg", params[i]));
      v.push_back(state_of(*states[i], "exp_avg_sq", params[i]));
    }
    adamw_update_(p, g, m, v, step);
  });
}

std::vector<std::string> AdamW::state_names() const { return {"exp_avg", "exp_avg_sq"}; }

Lion::Lion(std::vector<ParamGroup> groups, const LionOptions& o) : Optimizer(std::move(groups), o.lr, "Lion"), options_(o) {
  check_beta(o.beta1, "beta1", "Lion");
  check_beta(o.beta2, "beta2", "Lion");
}

void Lion::update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<std::map<std::string, Tensor>*>& states, double lr, double wd) {
  const LionOptions& o = options_;
  for_each_kind(params, grads, [&](const std::vector<size_t>& idx) {
    std::vector<Tensor> p, g, m;
    for (size_t i : idx) {
      p.push_back(params[i]);
      g.push_back(grads[i]);
      m.push_back(state_of(*states[i], "exp_avg", params[i]));
    }
    lion_update_(p, g, m, {lr, o.beta1, o.beta2, wd});
  });
}

std::vector<std::string> Lion::state_names() const { return {"exp_avg"}; }

}  // namespace kiln::optim
