#include "kiln/nn/linear.h"

#include <cmath>

#include "kiln/nn/init.h"
#include "kiln/nn/lora.h"
#include "kiln/ops.h"

namespace kiln::nn {

Linear::Linear(const LinearOptions& options, Generator& gen) : Linear(options, &gen) {}

Linear::Linear(const LinearOptions& options, Generator* gen) : options_(options) {
  KILN_CHECK(options.in_features > 0 && options.out_features > 0,
             "[Linear] in_features ({}) and out_features ({}) must be positive", options.in_features,
             options.out_features);
  TensorOptions t = TensorOptions(options.dtype).device(options.device);
  weight = register_parameter("weight", empty({options.out_features, options.in_features}, t));
  if (options.bias) bias = register_parameter("bias", empty({options.out_features}, t));
  if (gen) reset_parameters(*gen);
}

void Linear::reset_parameters(Generator& gen) {
  double bound = 1.0 / std::sqrt(static_cast<double>(options_.in_features));
  init::uniform_(weight, -bound, bound, gen);
  if (bias.defined()) init::uniform_(bias, -bound, bound, gen);
}

Tensor Linear::project(const Tensor& x, Activation activation) const {
  KILN_CHECK(x.dim() >= 1 && x.size(-1) == options_.in_features,
             "[Linear] expects input (..., {}), got shape [{}]", options_.in_features, fmt::join(x.sizes(), ", "));
  // Mixed precision: float32 master weights meet bfloat16 activations in the
  // activations' dtype; the cast is differentiable, so gradients reach the
  // master weights in float32, and cached (the optimizer writes it).
  return linear(x, cast_cached(weight, x.dtype()), bias.defined() ? cast_cached(bias, x.dtype()) : Tensor(),
                activation);
}

Tensor LinearLayer::forward(const Tensor& x, Activation activation) const {
  if (!adapter_ || adapter_->merged()) return project(x, activation);
  Tensor y = project(x, Activation::None) + adapter_->forward(x);
  return activation == Activation::GeluTanh ? gelu(y, "tanh") : y;
}

void LinearLayer::set_adapter(std::shared_ptr<LoraAdapter> adapter) {
  KILN_CHECK(!adapter_, "[LinearLayer] the layer has an adapter already");
  adapter_ = register_module("lora", std::move(adapter));
}

std::string LinearLayer::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", weight.size(1), weight.size(0), bias.defined());
}

}  // namespace kiln::nn
