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

// What a model's blocks see of a linear layer, whether it is whole (Linear)
// or this rank's part of a split one (dist's column- and row-parallel
// layers, made by a LayerFactory).
class LinearLayer : public Module {
 public:
  // x (..., in) -> (..., out) in x's dtype, the activation applied in the same pass.
  virtual Tensor forward(const Tensor& x, Activation activation = Activation::None) const = 0;
  // This rank's part: a split layer shows its share.
  std::string extra_repr() const override;

  Tensor weight;  // (out, in), or this rank's part
  Tensor bias;    // (out), undefined without bias
};

class Linear : public LinearLayer {
 public:
  explicit Linear(const LinearOptions& options, Generator& gen = default_generator());
  // gen null: the parameters are allocated, not initialized (the caller fills them).
  Linear(const LinearOptions& options, Generator* gen);
  // x (..., in_features) -> (..., out_features), in x's dtype (the parameters
  // are cast when they differ: mixed precision), the activation applied in
  // the same pass.
  Tensor forward(const Tensor& x, Activation activation = Activation::None) const override;
  void reset_parameters(Generator& gen);

 private:
  LinearOptions options_;
};

}  // namespace kiln::nn
