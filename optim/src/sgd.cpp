#include "kiln/optim/sgd.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::optim {

SGD::SGD(std::vector<Tensor> params, const SGDOptions& o) : params_(std::move(params)), options_(o) {
  KILN_CHECK(o.lr >= 0, "[SGD] learning rate must be >= 0, got {}", o.lr);
  KILN_CHECK(o.momentum >= 0, "[SGD] momentum must be >= 0, got {}", o.momentum);
  KILN_CHECK(o.weight_decay >= 0, "[SGD] weight_decay must be >= 0, got {}", o.weight_decay);
  KILN_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
             "[SGD] Nesterov momentum needs momentum > 0 and dampening = 0");
  for (const Tensor& p : params_)
    KILN_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "[SGD] parameters must be leaf tensors that require grad");
  momentum_.resize(params_.size());
}

void SGD::step() {
  NoGradGuard no_grad;
  const SGDOptions& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    Tensor g = p.grad();
    if (o.weight_decay != 0) g = g + p * o.weight_decay;
    if (o.momentum != 0) {
      Tensor& buf = momentum_[i];
      if (!buf.defined()) buf = g.clone();
      else buf.mul_(o.momentum).add_(g, 1.0 - o.dampening);
      g = o.nesterov ? g + buf * o.momentum : buf;
    }
    p.add_(g, -o.lr);
  }
}

void SGD::zero_grad(bool set_to_none) { autograd::zero_grad(params_, set_to_none); }

}  // namespace kiln::optim
