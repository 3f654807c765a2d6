#pragma once
// Learning-rate schedules and gradient clipping.

#include <cstdint>
#include <string_view>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::optim {

// Linear warmup from 0 to max_lr over `warmup` steps, then `decay` (constant,
// cosine or linear) from max_lr down to min_lr at step `total`.
struct LRSchedule {
  enum class Decay { Constant, Cosine, Linear };
  double max_lr = 3e-4;
  double min_lr = 0.0;
  int64_t warmup = 0;
  int64_t total = 1;
  Decay decay = Decay::Cosine;

  // The rate for 0-based step.
  double at(int64_t step) const;
  // "constant" | "cosine" | "linear"
  static Decay parse(std::string_view name);
};

// Scales all gradients so that their global L2 norm is at most max_norm;
// returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The pieces, for models whose gradients are spread over ranks: the sum of
// squared gradient entries (in float64), and the scaling by
// max_norm / (norm + 1e-6) applied when norm exceeds max_norm.
double grad_squared_sum(const std::vector<Tensor>& params);
void clip_grads_to(const std::vector<Tensor>& params, double norm, double max_norm);

}  // namespace kiln::optim
