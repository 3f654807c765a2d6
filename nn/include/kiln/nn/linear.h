#pragma once
// Linear: y = x W^T + b, with PyTorch's default initialization
// (weight and bias uniform in +-1/sqrt(in_features)).

#include "kiln/nn/module.h"
#include "kiln/ops.h"
#include "kiln/random.h"

namespace kiln::nn {

struct LinearOptions {
  int64_t in_features;
  int64_t out_features;
  bool bias = true;
  DType dtype = kFloat32;
  Device device = kCPU;
};

class Linear : public Module {
 public:
  explicit Linear(const LinearOptions& options, Generator& gen = default_generator());
  // x (..., in_features) -> (..., out_features), in x's dtype (the parameters
  // are cast when they differ: mixed precision), the activation applied in
  // the same pass.
  Tensor forward(const Tensor& x, Activation activation = Activation::None) const;
  void reset_parameters(Generator& gen);

  Tensor weight;  // (out_features, in_features)
  Tensor bias;    // (out_features), undefined without bias

 private:
  LinearOptions options_;
};

}  // namespace kiln::nn
