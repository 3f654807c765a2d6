#include "kiln/optim/schedule.h"

#include <cmath>
#include <map>
#include <string>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::optim {

double LRSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (decay == Decay::Constant || total <= warmup) return max_lr;
  double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  double factor = decay == Decay::Cosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return min_lr + (max_lr - min_lr) * factor;
}

LRSchedule::Decay LRSchedule::parse(std::string_view name) {
  if (name == "constant") return Decay::Constant;
  if (name == "cosine") return Decay::Cosine;
  if (name == "linear") return Decay::Linear;
  KILN_FAIL("[LRSchedule] unknown schedule '{}': use constant, cosine or linear", name);
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
