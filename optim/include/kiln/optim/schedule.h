#pragma once
// Learning-rate schedules and gradient clipping.

#include <cstdint>
#include <string_view>
#include <vector>

#include "kiln/optim/optimizer.h"
#include "kiln/tensor.h"

namespace kiln::optim {

// Linear warmup from 0 to max_lr over `warmup` steps, then `decay` (constant,
// cosine or linear) from max_lr down to min_lr at step `total`; or Step,
// torch's StepLR: max_lr times gamma after every step_size steps past the
// warmup (min_lr and total unused).
struct LRSchedule {
  // The shape after the warmup.
  enum class Decay { Constant, Cosine, Linear, Step };
  double max_lr = 3e-4;  // reached at the warmup's end
  double min_lr = 0.0;   // reached at total (Cosine, Linear)
  int64_t warmup = 0;    // steps
  int64_t total = 1;     // steps
  Decay decay = Decay::Cosine;  // the shape after the warmup
  int64_t step_size = 1;  // Step only
  double gamma = 0.1;     // Step only

  // The rate for 0-based step.
  double at(int64_t step) const;
  // "constant" | "cosine" | "linear" | "step"
  static Decay parse(std::string_view name);
};

// ReduceLROnPlateau's settings (torch's names).
struct PlateauOptions {
  double factor = 0.1;      // the rate is multiplied by this on a plateau
  int64_t patience = 10;    // evaluations without improvement tolerated
  double threshold = 1e-4;  // an improvement: below best * (1 - threshold)
  int64_t cooldown = 0;     // evaluations after a reduction before counting again
  double min_lr = 0.0;      // the rate never falls below this
};

// torch's ReduceLROnPlateau (mode "min", relative threshold): after more than
// `patience` evaluations of a metric that did not improve, the optimizer's
// rate is multiplied by `factor` (never below min_lr).
class ReduceLROnPlateau {
 public:
  ReduceLROnPlateau(Optimizer& optimizer, const PlateauOptions& options = {});  // optimizer must outlive it
  // Records one evaluation; true when it reduced the rate.
  bool step(double metric);
  double best() const { return best_; }  // the lowest metric seen

 private:
  Optimizer& optimizer_;
  PlateauOptions options_;
  double best_;
  int64_t bad_ = 0, cooldown_left_ = 0;
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
