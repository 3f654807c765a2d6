#pragma once
// SGD with momentum, Nesterov and weight decay, as torch.optim.SGD:
//   g = grad + weight_decay * p
//   buf = momentum * buf + (1 - dampening) * g   (buf = g on the first step)
//   p -= lr * (nesterov ? g + momentum * buf : buf)

#include <vector>

#include "kiln/tensor.h"

namespace kiln::optim {

struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class SGD {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& options);
  // Updates every parameter that has a gradient.
  void step();
  void zero_grad(bool set_to_none = true);
  const SGDOptions& options() const { return options_; }
  void set_lr(double lr) { options_.lr = lr; }

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> momentum_;  // per parameter; undefined until its first step
  SGDOptions options_;
};

}  // namespace kiln::optim
