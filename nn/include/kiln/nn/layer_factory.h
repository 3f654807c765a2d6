#pragma once
// LayerFactory: how a model built from a spec makes the layers that a
// parallel layout splits, and where it stands in that layout. A model asks
// the factory for its projections, its vocabulary tables and its loss, and
// never asks which layout it runs in: nn's factory (this one) makes whole
// layers for one process; dist::ModelParallel makes Megatron-LM's column- and
// row-parallel linears, vocabulary-parallel embedding and loss, sequence
// parallelism and pipeline stages. The same model class runs at every layout.
//
// Layers come allocated, not initialized: a model fills them itself, or, at
// a parallel layout, loads its share of a whole model's initial values.

#include <memory>
#include <utility>
#include <vector>

#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"

namespace kiln::nn {

// Makes the layers a parallel layout splits, and says where this rank stands in it (above).
class LayerFactory {
 public:
  virtual ~LayerFactory() = default;

  // Tensor parallelism: how many ranks split the layers, and which this is.
  virtual int tp_size() const { return 1; }
  virtual int tp_rank() const { return 0; }
  // Sequence parallelism: outside the split layers each rank holds its slice
  // of the sequence (dim -2 of (B, T, C)): tokens [tp_rank T / tp, ...).
  virtual bool sequence_parallel() const { return false; }
  // Pipeline parallelism: this process runs stage pp_rank of pp_size.
  virtual int pp_size() const { return 1; }
  virtual int pp_rank() const { return 0; }
  // Expert parallelism: how many ranks share out each MoE layer's experts
  // (whole experts each), and which this is.
  virtual int ep_size() const { return 1; }
  virtual int ep_rank() const { return 0; }
  // One process holds the whole model: no tensor, pipeline or expert parallelism.
  bool whole_model() const { return tp_size() == 1 && pp_size() == 1 && ep_size() == 1; }
  // The ranks a parameter of this spec is split across, and this one's place among them.
  int shard_ranks(const ShardSpec& spec) const { return spec.experts ? ep_size() : tp_size(); }
  int shard_rank(const ShardSpec& spec) const { return spec.experts ? ep_rank() : tp_rank(); }

  // Expert parallelism's all-to-alls (dist::exchange_rows) over the
  // expert-parallel group: rows in blocks of in_splits[j] go to rank j and
  // out_splits[i] arrive from rank i, with gradients; and each rank's count
  // (E) int64 of rows for every expert, of which rank j receives the block of
  // its own experts: (E), block i from rank i.
  virtual Tensor exchange_expert_rows(const Tensor& rows, const std::vector<int64_t>& out_splits,
                                      const std::vector<int64_t>& in_splits) const;
  // (The counts' exchange.)
  virtual Tensor exchange_expert_counts(const Tensor& counts) const;

  // A linear layer whose output features are split (Megatron's column
  // parallel: q/k/v, the MLP's first layer): (..., in) -> (..., out / tp).
  // segments as ShardSpec's: each is split on its own (q, k and v heads).
  virtual std::shared_ptr<LinearLayer> column(const LinearOptions& options, std::vector<int64_t> segments = {}) const;
  // A linear layer whose input features are split (row parallel: attention's
  // output, the MLP's last layer): (..., in / tp) -> (..., out), summed.
  virtual std::shared_ptr<LinearLayer> row(const LinearOptions& options) const;
  // A tensor every tensor-parallel rank holds whole and uses in parts (T5's
  // position bias, of which each rank's heads take theirs): itself in the
  // forward pass; in backward, its gradient summed over the ranks (Megatron's
  // copy to the tensor-parallel region), so that each rank's copy of what
  // made it gets the whole gradient.
  virtual Tensor copy_to_tensor_parallel(const Tensor& x) const { return x; }
  // A token embedding whose rows (the vocabulary, padded_vocab(V) of them) are split.
  virtual std::shared_ptr<EmbeddingLayer> vocab_embedding(const EmbeddingOptions& options) const;
  // The vocabulary padded for fast kernels (a multiple of 128) and for an even
  // split, every rank keeping at least one real row.
  virtual int64_t padded_vocab(int64_t vocab) const;

  // Mean cross-entropy of the logits hidden x head^T against targets (B, T)
  // (ignore_index -100), where head holds this rank's rows of the vocabulary,
  // starting at vocab_start, and hidden (B, T, C) is, with sequence
  // parallelism, this rank's slice of the sequence. Float32 (float64 for
  // float64). z_loss: PaLM's z-loss (kiln::cross_entropy's) added.
  virtual Tensor vocab_loss(const Tensor& hidden, const Tensor& head, int64_t vocab_start, const Tensor& targets,
                            double z_loss = 0.0) const;
  // The logits (B, T, vocab_size) of the whole vocabulary on every rank,
  // where head holds this rank's rows of the padded vocabulary.
  virtual Tensor vocab_logits(const Tensor& hidden, const Tensor& head, int64_t vocab_size) const;

  // The layers [first, last) of n_layers that this pipeline stage holds: as
  // even as possible, the first stages one more.
  std::pair<int64_t, int64_t> stage_layers(int64_t n_layers) const;
  bool is_first_stage() const { return pp_rank() == 0; }
  bool is_last_stage() const { return pp_rank() == pp_size() - 1; }
};

// The factory of whole layers on one process.
std::shared_ptr<const LayerFactory> local_layers();

}  // namespace kiln::nn
