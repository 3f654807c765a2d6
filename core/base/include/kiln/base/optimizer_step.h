#pragma once
// The hyperparameters of one fused optimizer update, as the kernels take them.

namespace kiln {

// AdamW's step t: decoupled weight decay, then Adam's bias-corrected update.
struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;  // as optim::AdamWOptions
  double bias_correction1, bias_correction2;   // 1 - beta^t
};

// Lion's step: the sign of the interpolated momentum, decoupled weight decay.
struct LionStep {
  double lr, beta1, beta2, weight_decay;  // as optim::LionOptions
};

}  // namespace kiln
