#pragma once
// ParallelModel: a model built by a LayerFactory, so that each rank holds its
// share of one whole model: the parts its tensor-parallel layers keep (each
// parameter with its ShardSpec) and, for a StagedModel, its pipeline stage's
// layers. It converts between that share and the whole model's state, which
// is all that checkpoints, layout changes and dist/model_parallel.h's
// gradient and norm functions need of a model. Models built without a
// factory hold the whole model on one process.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/nn/layer_factory.h"
#include "kiln/nn/module.h"

namespace kiln::nn {

// A model built by a LayerFactory, converting between its rank's share and the whole model.
class ParallelModel : public Module {
 public:
  // null: local_layers(), the whole model on one process.
  explicit ParallelModel(std::shared_ptr<const LayerFactory> factory)
      : factory_(factory ? std::move(factory) : local_layers()) {}

  // The factory the model was built by: its layout.
  const LayerFactory& layout() const { return *factory_; }
  bool is_first_stage() const { return layout().is_first_stage(); }
  bool is_last_stage() const { return layout().is_last_stage(); }
  // Parameters held by both the first and the last pipeline stage (a head
  // tied to the embedding, when they differ): their gradients are summed
  // across the two, and the first stage's copy is the one a checkpoint or a
  // norm counts.
  virtual std::vector<std::string> tied_across_stages() const { return {}; }

  // The whole model's parameters under this class's names, vocabulary tables
  // cut to their real rows: the state every layout shares. One process only
  // (dist::full_state_dict gathers it at any layout). With gradients: the
  // parameters' gradients, named the same.
  std::map<std::string, Tensor> full_state_dict(bool gradients = false) const;
  // Copies this rank's share of a whole model's parameters (as full_state_dict
  // gives them) into its parameters; every name it holds must be present,
  // unless not strict (the others keep their values).
  void load_full_state_dict(const std::map<std::string, Tensor>& full, bool strict = true);
  // This rank's share of whole tensors named like its parameters (weights, or
  // optimizer state shaped like them), for the names it holds (those present, when not strict).
  std::map<std::string, Tensor> take_local(const std::map<std::string, Tensor>& full, bool strict = true) const;

 protected:
  // A Model's start values from gen, for its constructor: on one process its
  // own reset_parameters; at a parallel layout its share of a whole
  // Model(config, gen, dtype) drawn on the CPU, so that every layout starts
  // from one process's values and gen ends where one process leaves it.
  template <typename Model, typename Config>
  void initialize(const Config& config, Generator& gen, DType dtype) {
    if (layout().whole_model()) {
      static_cast<Model&>(*this).reset_parameters(gen);
    } else {
      Model whole(config, gen, dtype, kCPU);
      load_full_state_dict(whole.full_state_dict());
    }
  }

  std::shared_ptr<const LayerFactory> factory_;  // the layout's; a one-process factory when none was given
};

}  // namespace kiln::nn
