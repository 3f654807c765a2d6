#include "kiln/optim/optimizer.h"

#include <cmath>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::optim {

std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Tensor>>& named_params,
                                     double weight_decay) {
  ParamGroup decay{{}, weight_decay}, no_decay{{}, 0.0};
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) continue;  // frozen
    (p.dim() >= 2 ? decay : no_decay).params.push_back(p);
  }
  return {decay, no_decay};
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr, const char* name)
    : groups_(std::move(groups)), lr_(lr), name_(name) {
  set_lr(lr);
  size_t n = 0;
  for (const ParamGroup& g : groups_) {
    KILN_CHECK(g.weight_decay >= 0, "[{}] weight_decay must be >= 0, got {}", name_, g.weight_decay);
    for (const Tensor& p : g.params)
      KILN_CHECK(p.defined() && p.is_leaf() && p.requires_grad(),
                 "[{}] parameters must be leaf tensors that require grad", name_);
    n += g.params.size();
  }
  state_.resize(n);
}

void Optimizer::set_lr(double lr) {
  KILN_CHECK(lr >= 0 && std::isfinite(lr), "[{}] learning rate must be finite and >= 0, got {}", name_, lr);
  lr_ = lr;
}

void Optimizer::step() {
  NoGradGuard no_grad;
  ++steps_;
  size_t i = 0;
  for (ParamGroup& group : groups_) {
    std::vector<Tensor> params, grads;
    std::vector<std::map<std::string, Tensor>*> states;
    for (Tensor& p : group.params) {
      auto& state = state_[i++];
      if (!p.grad().defined()) continue;
      params.push_back(p);
      grads.push_back(p.grad());
      states.push_back(&state);
    }
    if (!params.empty()) update(params, grads, states, group.weight_decay);
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  for (const ParamGroup& g : groups_) autograd::zero_grad(g.params, set_to_none);
}

std::vector<Tensor> Optimizer::params() const {
  std::vector<Tensor> out;
  for (const ParamGroup& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  out["step"] = scalar_tensor(steps_, kInt64);
  for (size_t i = 0; i < state_.size(); ++i)
    for (const auto& [name, t] : state_[i]) out[fmt::format("{}.{}", i, name)] = t;
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  NoGradGuard no_grad;
  auto it = state.find("step");
  KILN_CHECK(it != state.end(), "[{}] optimizer state has no 'step'", name_);
  steps_ = it->second.item<int64_t>();
  std::vector<const Tensor*> params;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) params.push_back(&p);
  for (auto& s : state_) s.clear();
  for (const auto& [key, t] : state) {
    if (key == "step") continue;
    size_t dot = key.find('.');
    size_t index = 0;
    try {
      index = std::stoul(key.substr(0, dot));
    } catch (const std::exception&) {
      KILN_FAIL("[{}] unexpected optimizer state key '{}'", name_, key);
    }
    KILN_CHECK(dot != std::string::npos && index < params.size(),
               "[{}] optimizer state key '{}' names parameter {} of {}", name_, key, index, params.size());
    const Tensor& p = *params[index];
    KILN_CHECK(t.sizes() == p.sizes(), "[{}] state '{}' has shape [{}], parameter {} has [{}]", name_, key,
               fmt::join(t.sizes(), ", "), index, fmt::join(p.sizes(), ", "));
    state_[index][key.substr(dot + 1)] = t.to(p.device()).clone();
  }
}

}  // namespace kiln::optim
