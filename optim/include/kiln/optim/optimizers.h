#pragma once
// SGD, AdamW and Lion with PyTorch's update rules and decoupled weight decay.

#include "kiln/optim/optimizer.h"

namespace kiln::optim {

// SGD's settings (PyTorch's names).
struct SGDOptions {
  double lr = 1e-2;         // the base rate, which schedules scale
  double momentum = 0.0;    // 0: plain SGD
  double dampening = 0.0;   // of the gradient's share of the momentum
  bool nesterov = false;    // Nesterov momentum
};

// torch.optim.SGD:  g += wd p;  buf = momentum buf + (1 - dampening) g (buf = g at first);
//                   p -= lr (nesterov ? g + momentum buf : buf)
class SGD : public Optimizer {
 public:
  // Over parameter groups, a weight decay and a rate scale each.
  SGD(std::vector<ParamGroup> groups, const SGDOptions& options);
  // Over params, one group of one weight decay.
  SGD(std::vector<Tensor> params, const SGDOptions& options, double weight_decay = 0.0)
      : SGD(std::vector<ParamGroup>{{std::move(params), weight_decay}}, options) {}

 protected:
  void update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<std::map<std::string, Tensor>*>& states, double lr, double weight_decay) override;
  std::vector<std::string> state_names() const override;

 private:
  SGDOptions options_;
};

// AdamW's settings (PyTorch's names).
struct AdamWOptions {
  double lr = 1e-3;      // the base rate, which schedules scale
  double beta1 = 0.9;    // the first moment's decay
  double beta2 = 0.999;  // the second moment's decay
  double eps = 1e-8;     // added to the second moment's root
};

// torch.optim.AdamW:  p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//                     p -= lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)
class AdamW : public Optimizer {
 public:
  // Over parameter groups, a weight decay and a rate scale each.
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options);
  // Over params, one group of one weight decay.
  AdamW(std::vector<Tensor> params, const AdamWOptions& options, double weight_decay = 0.0)
      : AdamW(std::vector<ParamGroup>{{std::move(params), weight_decay}}, options) {}

 protected:
  void update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<std::map<std::string, Tensor>*>& states, double lr, double weight_decay) override;
  std::vector<std::string> state_names() const override;

 private:
  AdamWOptions options_;
};

// Lion's settings (Chen et al. 2023).
struct LionOptions {
  double lr = 1e-4;     // the base rate, which schedules scale
  double beta1 = 0.9;   // the interpolation whose sign is the update
  double beta2 = 0.99;  // the momentum's decay
};

// Lion (Chen et al. 2023):  c = b1 m + (1 - b1) g;  p *= 1 - lr wd;  p -= lr sign(c);
//                           m = b2 m + (1 - b2) g
class Lion : public Optimizer {
 public:
  // Over parameter groups, a weight decay and a rate scale each.
  Lion(std::vector<ParamGroup> groups, const LionOptions& options);
  // Over params, one group of one weight decay.
  Lion(std::vector<Tensor> params, const LionOptions& options, double weight_decay = 0.0)
      : Lion(std::vector<ParamGroup>{{std::move(params), weight_decay}}, options) {}

 protected:
  void update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<std::map<std::string, Tensor>*>& states, double lr, double weight_decay) override;
  std::vector<std::string> state_names() const override;

 private:
  LionOptions options_;
};

}  // namespace kiln::optim
