#include "kiln/optim/optimizer.h"

#include <algorithm>
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
  std::vector<ParamGroup> groups;
  for (ParamGroup* g : {&decay, &no_decay})
    if (!g->params.empty()) groups.push_back(std::move(*g));
  return groups;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr, const char* name)
    : groups_(std::move(groups)), lr_(lr), name_(name) {
  set_lr(lr);
  size_t n = 0;
  for (const ParamGroup& g : groups_) {
    KILN_CHECK(g.weight_decay >= 0, "[{}] weight_decay must be >= 0, got {}", name_, g.weight_decay);
    KILN_CHECK(g.lr_scale >= 0 && std::isfinite(g.lr_scale), "[{}] a group's lr_scale must be finite and >= 0, got {}",
               name_, g.lr_scale);
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
    if (!params.empty()) update(params, grads, states, lr_ * group.lr_scale, group.weight_decay);
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
  const std::vector<Tensor> all = params();
  const std::vector<std::string> names = state_names();
  // Checked whole before anything changes: a refused state leaves this optimizer as it was.
  std::vector<std::map<std::string, Tensor>> loaded(state_.size());
  for (const auto& [key, t] : state) {
    if (key == "step") continue;
    size_t dot = key.find('.');
    size_t index = 0;
    try {
      index = std::stoul(key.substr(0, dot));
    } catch (const std::exception&) {
      KILN_FAIL("[{}] unexpected optimizer state key '{}'", name_, key);
    }
    KILN_CHECK(dot != std::string::npos && index < all.size(),
               "[{}] optimizer state key '{}' names parameter {} of {}", name_, key, index, all.size());
    const Tensor& p = all[index];
    const std::string what = key.substr(dot + 1);
    KILN_CHECK(std::find(names.begin(), names.end(), what) != names.end(),
               "[{}] optimizer state '{}' is not one of {}'s ({}): the state of another optimizer, or other settings?",
               name_, key, name_, names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", ")));
    KILN_CHECK(t.sizes() == p.sizes(), "[{}] state '{}' has shape [{}], parameter {} has [{}]", name_, key,
               fmt::join(t.sizes(), ", "), index, fmt::join(p.sizes(), ", "));
    loaded[index][what] = t;
  }
  // A parameter that has stepped has all of this optimizer's state (Lion's exp_avg alone is not AdamW's).
  for (size_t i = 0; i < loaded.size(); ++i)
    for (const std::string& name : names)
      KILN_CHECK(loaded[i].empty() || loaded[i].count(name), "[{}] optimizer state of parameter {} lacks '{}': "
                 "the state of another optimizer?", name_, i, name);
  for (size_t i = 0; i < loaded.size(); ++i)
    for (auto& [name, t] : loaded[i]) t = t.to(all[i].device()).clone();
  state_ = std::move(loaded);
  steps_ = it->second.item<int64_t>();
}

}  // namespace kiln::optim
