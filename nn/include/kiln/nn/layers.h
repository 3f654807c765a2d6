#pragma once
// The small layers: Embedding, LayerNorm, RMSNorm, Dropout, GELU, SiLU.

#include "kiln/nn/module.h"
#include "kiln/random.h"

namespace kiln::nn {

// An embedding table's rows, width, dtype and device.
struct EmbeddingOptions {
  int64_t num_embeddings;  // rows: the vocabulary
  int64_t embedding_dim;   // each row's width
  DType dtype = kFloat32;  // the table's
  Device device = kCPU;    // the table's
};

// What a model sees of a token embedding, whole (Embedding) or this rank's
// rows of a vocabulary split across a group (made by a LayerFactory).
class EmbeddingLayer : public Module {
 public:
  // indices (...) -> (..., embedding_dim)
  virtual Tensor forward(const Tensor& indices) const = 0;
  // The first row this rank holds.
  virtual int64_t vocab_start() const { return 0; }
  std::string extra_repr() const override;

  Tensor weight;  // (num_embeddings, embedding_dim), or this rank's rows
};

// A lookup table: indices (...) -> (..., embedding_dim). Initialized N(0, 1) as PyTorch.
class Embedding : public EmbeddingLayer {
 public:
  explicit Embedding(const EmbeddingOptions& options, Generator& gen = default_generator());  // drawn from gen
  // gen null: the table is allocated, not initialized (the caller fills it).
  Embedding(const EmbeddingOptions& options, Generator* gen);
  Tensor forward(const Tensor& indices) const override;
};

// A norm's normalized shape, eps and affine parameters.
struct NormOptions {
  Shape normalized_shape;  // the trailing dims normalized over
  double eps = 1e-5;       // added under the root
  bool affine = true;      // a learned weight (and, for LayerNorm, bias)
  bool bias = true;        // LayerNorm only
  DType dtype = kFloat32;  // the parameters'
  Device device = kCPU;    // the parameters'
};

// LayerNorm or RMSNorm, as a block built from a spec uses either.
class NormLayer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) const = 0;  // x (..., normalized_shape) -> the same shape
  // {x + residual, forward(x + residual)} from one fused kernel.
  virtual std::pair<Tensor, Tensor> forward_add(const Tensor& x, const Tensor& residual) const = 0;
  Tensor weight;  // undefined without affine
};

// LayerNorm over the last dims (Ba et al.), with weight and bias.
class LayerNorm : public NormLayer {
 public:
  explicit LayerNorm(const NormOptions& options);  // weight one, bias zero
  Tensor forward(const Tensor& x) const override;
  // {x + residual, forward(x + residual)} from one fused kernel (add_layer_norm).
  std::pair<Tensor, Tensor> forward_add(const Tensor& x, const Tensor& residual) const override;
  std::string extra_repr() const override;
  Tensor bias;  // undefined without affine or bias

 private:
  NormOptions options_;
};

// RMSNorm over the last dims (Zhang and Sennrich), with weight.
class RMSNorm : public NormLayer {
 public:
  explicit RMSNorm(const NormOptions& options);  // weight one
  Tensor forward(const Tensor& x) const override;
  // {x + residual, forward(x + residual)} from one fused kernel (add_rms_norm).
  std::pair<Tensor, Tensor> forward_add(const Tensor& x, const Tensor& residual) const override;
  std::string extra_repr() const override;

 private:
  NormOptions options_;
};

// Zeroes elements with probability p in training mode, drawing from its generator.
class Dropout : public Module {
 public:
  explicit Dropout(double p, Generator& gen = default_generator());  // gen must outlive the layer
  Tensor forward(const Tensor& x) const;  // x itself in eval mode or when p is 0
  double p() const { return p_; }         // the probability of zeroing
  std::string extra_repr() const override;

 private:
  double p_;
  Generator* gen_;
};

}  // namespace kiln::nn
