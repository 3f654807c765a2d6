#pragma once
// The hyperparameters of one fused optimizer update, as the kernels take them.

namespace kiln {

struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  double bias_correction1, bias_correction2;  // 1 - beta^t
};

struct LionStep {
  double lr, beta1, beta2, weight_decay;
};

}  // namespace kiln
