#pragma once
// Tensor parallelism as in Megatron-LM (Shoeybi et al. 2019): a weight matrix
// is split across the ranks of a group, and four autograd-aware collectives
// join the pieces.
//
//   copy_to_group      identity forward, sum of gradients backward (Megatron's f)
//   reduce_from_group  sum forward, identity backward (Megatron's g)
//   gather_from_group  concatenation along a dim forward, own slice backward
//   scatter_to_group   own slice forward, concatenation backward
// and, for expert parallelism, exchange_rows (an all-to-all both ways).
//
// ColumnParallelLinear splits the output features, RowParallelLinear the input
// features; a column layer followed by a row layer (attention, MLP) needs one
// all-reduce forward and one backward. VocabParallelEmbedding splits the
// vocabulary, and vocab_parallel_cross_entropy takes the loss of logits split
// the same way without gathering them.
//
// The groups are borrowed: they must outlive the layers and any graph built
// through these functions (ParallelState owns them for the whole run).

#include <memory>
#include <vector>

#include "kiln/dist/process_group.h"
#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"
#include "kiln/ops.h"
#include "kiln/random.h"

namespace kiln::dist {

// The four collectives of the file's comment, differentiable.
Tensor copy_to_group(const Tensor& x, ProcessGroup& group);
Tensor reduce_from_group(const Tensor& x, ProcessGroup& group);
Tensor gather_from_group(const Tensor& x, int64_t dim, ProcessGroup& group);
Tensor scatter_to_group(const Tensor& x, int64_t dim, ProcessGroup& group);

// Sequence parallelism (Korthikanti et al. 2022): outside the tensor-parallel
// layers (norms, dropout, residual adds) each rank keeps its slice of the
// sequence, dim -2 of (B, T, C). Entering a column-parallel layer gathers the
// slices (all-gather forward, reduce-scatter backward); leaving a row-parallel
// layer sums the partial products and keeps the rank's slice (reduce-scatter
// forward, all-gather backward): the all-reduce's traffic, split in two.
Tensor gather_from_sequence(const Tensor& x, ProcessGroup& group);
Tensor reduce_scatter_to_sequence(const Tensor& x, ProcessGroup& group);

// Expert parallelism's dispatch: rows of x (along dim 0) sent in blocks of
// in_splits[j] to rank j, out_splits[i] received from each rank i
// (ProcessGroup::all_to_all); backward sends the gradients back the same way.
Tensor exchange_rows(const Tensor& x, ProcessGroup& group, const std::vector<int64_t>& out_splits,
                     const std::vector<int64_t>& in_splits);

// Every rank's part of `local`, assembled into the full tensor on the CPU
// (float32, or float64 for float64 tensors).
Tensor all_gather_shards(const Tensor& local, const nn::ShardSpec& spec, ProcessGroup& group);

// A column- or row-parallel linear layer's whole sizes and how it splits.
struct ParallelLinearOptions {
  int64_t in_features;     // the whole layer's
  int64_t out_features;    // the whole layer's
  bool bias = true;        // a bias on the output (split with it in a column layer)
  DType dtype = kFloat32;  // the parameters'
  Device device = kCPU;    // the parameters'
  // Column parallel: the output features' segments (see ShardSpec), e.g.
  // {C, C, C} for a fused q/k/v projection; empty: one.
  std::vector<int64_t> segments;
  // Sequence parallel: a column layer's input and a row layer's output are
  // this rank's slice of the sequence (dim -2).
  bool sequence_parallel = false;
  // Column parallel: every rank gets the whole output (all-gathered).
  bool gather_output = false;
  // Row parallel: the input is this rank's slice of the features (a column
  // layer's output); false: the whole input, of which each rank takes its slice.
  bool input_is_parallel = true;
};

// y = x W^T + b with W's rows (output features) split across the group: the
// input is replicated, each rank computes its slice of the output.
class ColumnParallelLinear : public nn::LinearLayer {
 public:
  // Initialized as nn::Linear would be from *gen (every rank draws the full
  // weight and keeps its rows); with gen null, left for the caller to load
  // (a model loads its share of a whole model's values).
  ColumnParallelLinear(const ParallelLinearOptions& options, ProcessGroup& group, Generator* gen);

 protected:
  // x (..., in) -> (..., out / ranks), or (..., out) with gather_output; the
  // activation applied to this rank's columns in the GEMM's epilogue.
  // weight (out / ranks, in), bias (out / ranks).
  Tensor project(const Tensor& x, Activation activation) const override;

 private:
  ParallelLinearOptions options_;
  ProcessGroup* group_;
};

// y = x W^T + b with W's columns (input features) split across the group:
// each rank multiplies its slice of the input, the partial sums are added
// across ranks, then the (replicated) bias.
class RowParallelLinear : public nn::LinearLayer {
 public:
  // gen as ColumnParallelLinear's.
  RowParallelLinear(const ParallelLinearOptions& options, ProcessGroup& group, Generator* gen);

 protected:
  // x (..., in / ranks) -> (..., out); with input_is_parallel false, x is the
  // full (..., in) and each rank takes its slice. The activation, if any,
  // follows the sum. weight (out, in / ranks), bias (out) replicated.
  Tensor project(const Tensor& x, Activation activation) const override;

 private:
  ParallelLinearOptions options_;
  ProcessGroup* group_;
};

// An embedding table whose rows (the vocabulary) are split across the group:
// each rank looks up the ids in its range, zeros elsewhere, and the rows are
// summed across ranks.
class VocabParallelEmbedding : public nn::EmbeddingLayer {
 public:
  // num_embeddings must divide by the group's size. Initialized N(0, 1) like
  // nn::Embedding from *gen; with gen null, left for the caller to load.
  // weight (num_embeddings / ranks, embedding_dim).
  VocabParallelEmbedding(int64_t num_embeddings, int64_t embedding_dim, ProcessGroup& group, Generator* gen,
                         DType dtype = kFloat32, Device device = kCPU, bool sequence_parallel = false);
  // ids (..., T) -> (..., T, embedding_dim), the same on every rank; with
  // sequence_parallel, this rank's slice of the sequence (..., T / ranks, dim).
  Tensor forward(const Tensor& ids) const override;
  int64_t vocab_start() const override { return start_; }

 private:
  int64_t start_;
  ProcessGroup* group_;
  bool sequence_parallel_;
};

// Mean cross-entropy over the rows of logits split along the vocabulary:
// `logits` (N, V_r) are this rank's columns, starting at vocab_start; targets
// (N) are global ids (ignore_index rows count for nothing). The same loss on
// every rank; the gradient reaches each rank's columns. Computed in float32.
// z_loss as kiln::cross_entropy's (z_loss logsumexp^2 per counted row).
Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                                    ProcessGroup& group, int64_t ignore_index = -100, double z_loss = 0.0);

}  // namespace kiln::dist
