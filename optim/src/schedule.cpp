#include "kiln/optim/schedule.h"

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::optim {

double LRSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (decay == Decay::Step) {
    KILN_CHECK(step_size > 0, "[LRSchedule] step_size must be positive, got {}", step_size);
    return max_lr * std::pow(gamma, static_cast<double>(std::max<int64_t>(0, step - warmup) / step_size));
  }
  if (decay == Decay::Constant || total <= warmup) return max_lr;
  double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  double factor = decay == Decay::Cosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return min_lr + (max_lr - min_lr) * factor;
}

LRSchedule::Decay LRSchedule::parse(std::string_view name) {
  if (name == "constant") return Decay::Constant;
  if (name == "cosine") return Decay::Cosine;
  if (name == "linear") return Decay::Linear;
  if (name == "step") return Decay::Step;
  KILN_FAIL("[LRSchedule] unknown schedule '{}': use constant, cosine, linear or step", name);
}

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, const PlateauOptions& options)
    : optimizer_(optimizer), options_(options), best_(std::numeric_limits<double>::infinity()) {
  KILN_CHECK(options.factor > 0 && options.factor < 1, "[ReduceLROnPlateau] factor must be in (0, 1), got {}",
             options.factor);
  KILN_CHECK(options.patience >= 0 && options.cooldown >= 0, "[ReduceLROnPlateau] patience and cooldown must be >= 0");
}

bool ReduceLROnPlateau::step(double metric) {
  if (metric < best_ * (1 - options_.threshold)) {
    best_ = metric;
    bad_ = 0;
  } else {
    ++bad_;
  }
  if (cooldown_left_ > 0) {
    --cooldown_left_;
    bad_ = 0;
  }
  if (bad_ <= options_.patience) return false;
  const double lr = std::max(optimizer_.lr() * options_.factor, options_.min_lr);
  bad_ = 0;
  cooldown_left_ = options_.cooldown;
  if (optimizer_.lr() - lr <= 1e-8) return false;  // torch's eps: no change too small to matter
  optimizer_.set_lr(lr);
  return true;
}

double grad_squared_sum(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  // One multi-tensor pass (and one synchronization) per device.
  std::map<std::string, std::vector<Tensor>> by_device;
  for (const Tensor& p : params)
    if (p.grad().defined()) by_device[p.grad().device().str()].push_back(p.grad());
  double total = 0;
  for (const auto& [device, grads] : by_device) total += sum(squared_norms(grads)).item<double>();
  return total;
}

void clip_grads_to(const std::vector<Tensor>& params, double norm, double max_norm) {
  KILN_CHECK(max_norm > 0, "[clip_grad_norm] max_norm must be positive, got {}", max_norm);
  if (norm <= max_norm) return;
  NoGradGuard no_grad;
  const double scale = max_norm / (norm + 1e-6);
  for (Tensor p : params)
    if (p.grad().defined()) p.mutable_grad().mul_(scale);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  const double norm = std::sqrt(grad_squared_sum(params));
  clip_grads_to(params, norm, max_norm);
  return norm;
}

}  // namespace kiln::optim
