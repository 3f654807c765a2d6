#include "kiln/nn/layer_factory.h"

#include "kiln/ops.h"

namespace kiln::nn {

std::shared_ptr<LinearLayer> LayerFactory::column(const LinearOptions& options, std::vector<int64_t> segments) const {
  auto layer = std::make_shared<Linear>(options, nullptr);
  layer->split = {LinearSplit::Column, options.in_features, options.out_features, std::move(segments)};
  return layer;
}

std::shared_ptr<LinearLayer> LayerFactory::row(const LinearOptions& options) const {
  auto layer = std::make_shared<Linear>(options, nullptr);
  layer->split = {LinearSplit::Row, options.in_features, options.out_features, {}};
  return layer;
}

std::shared_ptr<EmbeddingLayer> LayerFactory::vocab_embedding(const EmbeddingOptions& options) const {
  return std::make_shared<Embedding>(options, nullptr);
}

int64_t LayerFactory::padded_vocab(int64_t vocab) const {
  auto round_up = [](int64_t n, int64_t m) { return (n + m - 1) / m * m; };
  const int64_t tp = tp_size(), padded = round_up(vocab, 128 * tp);
  // Every rank keeps at least one real row (the loss needs each rank's columns).
  return (padded / tp) * (tp - 1) < vocab ? padded : round_up(vocab, tp);
}

Tensor LayerFactory::vocab_loss(const Tensor& hidden, const Tensor& head, int64_t, const Tensor& targets,
                                double z_loss) const {
  // The head and the loss fused: the (B T, V) logits are never all in memory.
  return linear_cross_entropy(hidden.reshape({-1, hidden.size(-1)}), head, targets.reshape({-1}), -100, 0, z_loss);
}

Tensor LayerFactory::vocab_logits(const Tensor& hidden, const Tensor& head, int64_t vocab_size) const {
  return matmul(hidden, head.narrow(0, 0, vocab_size).t());
}

// One process holds every expert: nothing to exchange.
Tensor LayerFactory::exchange_expert_rows(const Tensor& rows, const std::vector<int64_t>&,
                                          const std::vector<int64_t>&) const {
  return rows;
}

Tensor LayerFactory::exchange_expert_counts(const Tensor& counts) const { return counts; }

std::pair<int64_t, int64_t> LayerFactory::stage_layers(int64_t n_layers) const {
  const int64_t pp = pp_size(), stage = pp_rank(), base = n_layers / pp, extra = n_layers % pp;
  const int64_t first = stage * base + std::min<int64_t>(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

std::shared_ptr<const LayerFactory> local_layers() {
  static const auto factory = std::make_shared<const LayerFactory>();
  return factory;
}

}  // namespace kiln::nn
