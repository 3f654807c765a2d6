#include "kiln/nn/layers.h"

#include "kiln/nn/init.h"
#include "kiln/ops.h"

namespace kiln::nn {

Embedding::Embedding(const EmbeddingOptions& o, Generator& gen) : Embedding(o, &gen) {}

Embedding::Embedding(const EmbeddingOptions& o, Generator* gen) {
  KILN_CHECK(o.num_embeddings > 0 && o.embedding_dim > 0, "[Embedding] sizes must be positive, got {} x {}",
             o.num_embeddings, o.embedding_dim);
  weight = register_parameter("weight", empty({o.num_embeddings, o.embedding_dim}, TensorOptions(o.dtype).device(o.device)));
  if (gen) init::normal_(weight, 0.0, 1.0, *gen);
}

Tensor Embedding::forward(const Tensor& indices) const { return embedding(weight, indices); }

std::string EmbeddingLayer::extra_repr() const { return fmt::format("{}, {}", weight.size(0), weight.size(1)); }

namespace {
std::string norm_repr(const NormOptions& o) {
  return fmt::format("[{}], eps={}, affine={}", fmt::join(o.normalized_shape, ", "), o.eps, o.affine);
}
}  // namespace

std::string LayerNorm::extra_repr() const { return fmt::format("{}, bias={}", norm_repr(options_), bias.defined()); }

std::string RMSNorm::extra_repr() const { return norm_repr(options_); }

std::string Dropout::extra_repr() const { return fmt::format("p={}", p_); }

LayerNorm::LayerNorm(const NormOptions& o) : options_(o) {
  KILN_CHECK(!o.normalized_shape.empty(), "[LayerNorm] normalized_shape must not be empty");
  TensorOptions t = TensorOptions(o.dtype).device(o.device);
  if (o.affine) {
    weight = register_parameter("weight", ones(o.normalized_shape, t));
    if (o.bias) bias = register_parameter("bias", zeros(o.normalized_shape, t));
  }
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, options_.normalized_shape, weight, bias, options_.eps);
}

std::pair<Tensor, Tensor> LayerNorm::forward_add(const Tensor& x, const Tensor& residual) const {
  return add_layer_norm(x, residual, options_.normalized_shape, weight, bias, options_.eps);
}

RMSNorm::RMSNorm(const NormOptions& o) : options_(o) {
  KILN_CHECK(!o.normalized_shape.empty(), "[RMSNorm] normalized_shape must not be empty");
  if (o.affine) weight = register_parameter("weight", ones(o.normalized_shape, TensorOptions(o.dtype).device(o.device)));
}

Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, options_.normalized_shape, weight, options_.eps); }

std::pair<Tensor, Tensor> RMSNorm::forward_add(const Tensor& x, const Tensor& residual) const {
  return add_rms_norm(x, residual, options_.normalized_shape, weight, options_.eps);
}

Dropout::Dropout(double p, Generator& gen) : p_(p), gen_(&gen) {
  KILN_CHECK(p >= 0 && p <= 1, "[Dropout] probability must be in [0, 1], got {}", p);
}

Tensor Dropout::forward(const Tensor& x) const { return dropout(x, p_, is_training(), *gen_); }

}  // namespace kiln::nn
