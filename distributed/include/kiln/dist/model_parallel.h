#pragma once
// Megatron-LM's tensor and pipeline parallelism injected into a model built
// from a spec: ModelParallel is the LayerFactory that makes one rank's layers
// (column- and row-parallel linears, the vocabulary-parallel embedding and
// loss, sequence parallelism, the pipeline stage of ParallelState), so
//
//   dist::ParallelState layout(world, tp, pp, dp);
//   nn::Llama model(config, gen, kFloat32, device, std::make_shared<dist::ModelParallel>(layout));
//
// is this rank's part of the same model that runs on one process. The
// functions below do what a training step needs beyond the optimizer, for any
// ParallelModel at any layout (a world of one included).

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/dist/parallel_state.h"
#include "kiln/dist/tensor_parallel.h"
#include "kiln/nn/staged_model.h"

namespace kiln::dist {

// The LayerFactory of a parallel layout: Megatron's column- and row-parallel layers and the rest (above).
class ModelParallel : public nn::LayerFactory {
 public:
  // The state (and its groups) must outlive the models built. Sequence
  // parallelism applies with tp > 1 (the same result at dropout 0; with
  // dropout, each slice draws its own mask).
  explicit ModelParallel(ParallelState& state, bool sequence_parallel = false);

  int tp_size() const override { return state_->tp(); }
  int tp_rank() const override { return state_->tp_rank(); }
  bool sequence_parallel() const override { return sequence_parallel_; }
  int pp_size() const override { return state_->pp(); }
  int pp_rank() const override { return state_->pp_rank(); }
  int ep_size() const override { return state_->ep(); }
  int ep_rank() const override { return state_->ep_rank(); }

  std::shared_ptr<nn::LinearLayer> column(const nn::LinearOptions& options,
                                          std::vector<int64_t> segments = {}) const override;
  std::shared_ptr<nn::LinearLayer> row(const nn::LinearOptions& options) const override;
  Tensor copy_to_tensor_parallel(const Tensor& x) const override;
  std::shared_ptr<nn::EmbeddingLayer> vocab_embedding(const nn::EmbeddingOptions& options) const override;
  Tensor vocab_loss(const Tensor& hidden, const Tensor& head, int64_t vocab_start, const Tensor& targets,
                    double z_loss = 0.0) const override;
  Tensor vocab_logits(const Tensor& hidden, const Tensor& head, int64_t vocab_size) const override;
  Tensor exchange_expert_rows(const Tensor& rows, const std::vector<int64_t>& out_splits,
                              const std::vector<int64_t>& in_splits) const override;
  Tensor exchange_expert_counts(const Tensor& counts) const override;

 private:
  ParallelState* state_;
  bool sequence_parallel_;
};

// After backward (and DDP's averaging), sums the gradients that ranks
// computed in pieces: a tied embedding's over its first- and last-stage
// copies, and with sequence parallelism the replicated weights' (norms,
// biases after row-parallel layers, positions) over the tp group. Before clipping.
void sync_gradients(const nn::ParallelModel& model, const ParallelState& state);
// The parameters that a norm over the whole model counts on this rank, so
// that the sum over the tp and pp groups (and, for the experts, the ep
// group) counts every weight once.
std::vector<Tensor> norm_parameters(const nn::ParallelModel& model, const ParallelState& state);
// Whether a parameter is split across the expert-parallel group (its
// gradient reduced over the expert-data-parallel group).
bool is_expert_parameter(const nn::ParallelModel& model, const std::string& name);
// The gradient norm of the whole model (each weight once, over every stage
// and shard), clipped to max_norm like optim::clip_grad_norm. Returns the
// norm before clipping.
double clip_grad_norm(const nn::ParallelModel& model, const ParallelState& state, double max_norm);

// Whole tensors under the model's names from this rank's tensors of the same
// names (its parameters, or optimizer state shaped like them): assembled
// across tp (experts across ep), collected from every stage on world rank 0; other ranks get an
// empty map. Collective over the world. Vocabulary tables lose their padding.
std::map<std::string, Tensor> gather_full(const nn::ParallelModel& model, const ParallelState& state,
                                          const std::map<std::string, Tensor>& local);
// gather_full of the parameters: the whole model's weights on world rank 0.
std::map<std::string, Tensor> full_state_dict(const nn::ParallelModel& model, const ParallelState& state);

}  // namespace kiln::dist
