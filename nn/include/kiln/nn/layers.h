#pragma once
// The small layers: Embedding, LayerNorm, RMSNorm, Dropout, GELU, SiLU.

#include "kiln/nn/module.h"
#include "kiln/random.h"

namespace kiln::nn {

struct EmbeddingOptions {
  int64_t num_embeddings;
  int64_t embedding_dim;
  DType dtype = kFloat32;
  Device device = kCPU;
};

// A lookup table: indices (...) -> (..., embedding_dim). Initialized N(0, 1) as PyTorch.
class Embedding : public Module {
 public:
  explicit Embedding(const EmbeddingOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& indices) const;
  Tensor weight;  // (num_embeddings, embedding_dim)
};

struct NormOptions {
  Shape normalized_shape;
  double eps = 1e-5;
  bool affine = true;  // a learned weight (and, for LayerNorm, bias)
  bool bias = true;    // LayerNorm only
  DType dtype = kFloat32;
  Device device = kCPU;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(const NormOptions& options);
  Tensor forward(const Tensor& x) const;
  // {x + residual, forward(x + residual)} from one fused kernel (add_layer_norm).
  std::pair<Tensor, Tensor> forward_add(const Tensor& x, const Tensor& residual) const;
  Tensor weight, bias;

 private:
  NormOptions options_;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(const NormOptions& options);
  Tensor forward(const Tensor& x) const;
  // {x + residual, forward(x + residual)} from one fused kernel (add_rms_norm).
  std::pair<Tensor, Tensor> forward_add(const Tensor& x, const Tensor& residual) const;
  Tensor weight;

 private:
  NormOptions options_;
};

// Zeroes elements with probability p in training mode, drawing from its generator.
class Dropout : public Module {
 public:
  explicit Dropout(double p, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) const;
  double p() const { return p_; }

 private:
  double p_;
  Generator* gen_;
};

}  // namespace kiln::nn
