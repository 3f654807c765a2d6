#pragma once
// Linear: y = x W^T + b, with PyTorch's default initialization
// (weight and bias uniform in +-1/sqrt(in_features)).

#include <memory>
#include <vector>

#include "kiln/nn/module.h"
#include "kiln/ops.h"
#include "kiln/random.h"

namespace kiln::nn {

// A linear layer's sizes, whether it has a bias, and where its parameters live.
struct LinearOptions {
  int64_t in_features;     // x's last dim
  int64_t out_features;    // y's last dim
  bool bias = true;        // y = x W^T + b, or x W^T
  DType dtype = kFloat32;  // the parameters'
  Device device = kCPU;    // the parameters'
};

// How a LayerFactory split a linear layer among the tensor-parallel ranks:
// its output features (column), its input features (row) or not at all, with
// the whole layer's sizes and a column layer's output segments (q, k and v).
// An adapter (nn/lora.h) splits with its layer by it.
struct LinearSplit {
  // Not split; output features split; input features split.
  enum Kind { Whole, Column, Row };
  Kind kind = Whole;                 // how this layer is split
  int64_t in_features = 0, out_features = 0;  // the whole layer's; 0: the weight's
  std::vector<int64_t> segments;              // column: the output's segments; empty: one
};

class LoraAdapter;

// What a model's blocks see of a linear layer, whether it is whole (Linear)
// or this rank's part of a split one (dist's column- and row-parallel
// layers, made by a LayerFactory).
class LinearLayer : public Module {
 public:
  // x (..., in) -> (..., out) in x's dtype, the activation applied in the same
  // pass; with an unmerged adapter, its output added before the activation.
  Tensor forward(const Tensor& x, Activation activation = Activation::None) const;
  // This rank's part: a split layer shows its share.
  std::string extra_repr() const override;

  // A low-rank adapter beside the layer (registered as the child "lora").
  void set_adapter(std::shared_ptr<LoraAdapter> adapter);
  LoraAdapter* adapter() const { return adapter_.get(); }  // null without one

  Tensor weight;  // (out, in), or this rank's part
  Tensor bias;    // (out), undefined without bias
  LinearSplit split;  // how its LayerFactory split it

 protected:
  // The layer's own x W^T + b, the activation applied.
  virtual Tensor project(const Tensor& x, Activation activation) const = 0;

 private:
  std::shared_ptr<LoraAdapter> adapter_;
};

// A whole linear layer on one process.
class Linear : public LinearLayer {
 public:
  // Initialized as PyTorch's (uniform in +-1/sqrt(in_features)) from gen.
  explicit Linear(const LinearOptions& options, Generator& gen = default_generator());
  // gen null: the parameters are allocated, not initialized (the caller fills them).
  Linear(const LinearOptions& options, Generator* gen);
  void reset_parameters(Generator& gen);

 protected:
  // x (..., in_features) -> (..., out_features), in x's dtype (the parameters
  // are cast when they differ: mixed precision).
  Tensor project(const Tensor& x, Activation activation) const override;

 private:
  LinearOptions options_;
};

}  // namespace kiln::nn
