#pragma once
// StagedModel: a ParallelModel that can be cut into pipeline stages of
// consecutive blocks, which is all that the pipeline schedules
// (dist/pipeline.h) need to know of it. The first stage reads token ids, the others the previous
// stage's activations; the last stage takes the loss.

#include <string>
#include <vector>

#include "kiln/nn/parallel_model.h"
#include "kiln/nn/transformer.h"

namespace kiln::nn {

// A ParallelModel whose layers split into pipeline stages (above).
class StagedModel : public ParallelModel {
 public:
  using ParallelModel::ParallelModel;

  // This stage's part of the forward pass: token ids (B, T) on the first
  // stage, the previous stage's output on the others; returns what the next
  // stage reads (activation_shape), on the last stage the input of the loss.
  // With caches (one per layer of this stage), decoding: the input holds the
  // positions after the cached ones. inputs: what the attention masks and
  // positions need beyond the tokens (padding, prefixes, offset rows).
  virtual Tensor forward_stage(const Tensor& input, std::vector<KVCache>* caches = nullptr,
                               const AttentionInputs* inputs = nullptr) const = 0;
  // Last stage: the logits (B, T, vocab) of forward_stage's output.
  virtual Tensor logits_from_hidden(const Tensor& hidden) const = 0;
  // Last stage: the mean loss of forward_stage's output against targets (B, T).
  virtual Tensor loss_from_hidden(const Tensor& hidden, const Tensor& targets) const = 0;
  // What a stage passes on for a batch of (B, T), and its dtype.
  virtual Shape activation_shape(int64_t batch, int64_t seq) const = 0;
  virtual DType activation_dtype() const = 0;
  // The gradient that auxiliary losses (MoE routers') receive in backward:
  // the weight of one micro-batch in the step's mean loss.
  virtual void set_aux_loss_scale(double) const {}
};

}  // namespace kiln::nn
