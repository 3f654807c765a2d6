#pragma once
// Optimizer: parameter groups, per-parameter state, a step counter, and the
// state_dict that checkpoints carry. SGD, AdamW and Lion derive from it.

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::optim {

// Parameters that share a weight decay and a learning-rate scale.
struct ParamGroup {
  std::vector<Tensor> params;  // stepped in order
  double weight_decay = 0.0;   // as each optimizer applies it (AdamW, Lion: decoupled)
  // The group steps at lr() * lr_scale: rates per group (layer-wise decay,
  // a slower embedding) that a schedule, which sets lr(), scales alike.
  double lr_scale = 1.0;
};

// nanoGPT's and llm.c's default split: tensors of 2+ dims (matmul weights,
// embeddings) decay; biases and norm weights do not. Frozen parameters are
// left out, and a group left empty (LoRA's adapters are all matrices) too.
std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Tensor>>& named_params,
                                     double weight_decay);

// The base of SGD, AdamW and Lion: parameter groups, learning rate and state (above).
class Optimizer {
 public:
  Optimizer(std::vector<ParamGroup> groups, double lr, const char* name);  // name: in errors and state_dict checks
  virtual ~Optimizer() = default;

  // Updates every parameter that has a gradient.
  void step();
  void zero_grad(bool set_to_none = true);
  double lr() const { return lr_; }
  void set_lr(double lr);
  int64_t steps() const { return steps_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Every parameter, numbered across groups in order (state_dict's numbering).
  std::vector<Tensor> params() const;

  // The step count and every state tensor, named "<param index>.<state name>"
  // with parameters numbered across groups in order. Loading checks the
  // names: another optimizer's state (SGD's into AdamW) is refused.
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);
  const char* name() const { return name_; }

 protected:
  // Updates a group's parameters that have gradients: params[i] from grads[i],
  // with states[i] holding its tensors (one call per group, so that fused
  // multi-tensor kernels update them all at once), at the group's rate.
  virtual void update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<std::map<std::string, Tensor>*>& states, double lr, double weight_decay) = 0;
  // The names of the state tensors a parameter has once it has stepped.
  virtual std::vector<std::string> state_names() const = 0;

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::map<std::string, Tensor>> state_;  // one per parameter
  double lr_;
  int64_t steps_ = 0;
  const char* name_;
};

}  // namespace kiln::optim
