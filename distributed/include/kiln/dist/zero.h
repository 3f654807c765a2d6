#pragma once
// ZeRO stage 1 (Rajbhandari et al. 2020): optimizer state sharded across a
// data-parallel group. Each parameter group is flattened and cut into one
// contiguous shard per rank; a step reduce-scatters (averages) the gradients so
// that each rank holds its shard's gradient, runs the inner optimizer on that
// shard only, and all-gathers the updated parameters. Replaces DDP's gradient
// all-reduce: use one or the other.

#include <functional>
#include <map>
#include <string>
#include <memory>
#include <vector>

#include "kiln/dist/process_group.h"
#include "kiln/optim/optimizer.h"

namespace kiln::dist {

// ZeRO-1: each data-parallel rank keeps the optimizer state of its shard of the parameters (above).
class ZeroRedundancyOptimizer {
 public:
  // make_inner builds the optimizer for the shards (one group per input group,
  // same weight decay), e.g. [](auto groups) { return std::make_unique<AdamW>(groups, options); }.
  using InnerFactory = std::function<std::unique_ptr<optim::Optimizer>(std::vector<optim::ParamGroup>)>;
  // Shards groups' parameters over the data-parallel group.
  ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups, std::shared_ptr<ProcessGroup> group,
                          const InnerFactory& make_inner);

  // Averages the gradients across ranks into this rank's shard (reduce-scatter).
  // step() does it when it has not been done.
  void reduce_gradients();
  // After reduce_gradients: scales the averaged gradients to a global norm of
  // at most max_norm and returns the norm before. The norm sums the entries of
  // the `counted` parameters (all when empty) over this group and then over
  // each of model_groups (the tensor- and pipeline-parallel groups of a model
  // split across them).
  double clip_grad_norm(double max_norm, const std::vector<Tensor>& counted = {},
                        const std::vector<ProcessGroup*>& model_groups = {});
  // Updates this rank's shard and all-gathers the parameters.
  void step();
  void zero_grad(bool set_to_none = true);
  void set_lr(double lr) { inner_->set_lr(lr); }
  double lr() const { return inner_->lr(); }
  // This rank's optimizer state.
  const optim::Optimizer& inner() const { return *inner_; }
  // The parameters, numbered across groups as an optim::Optimizer numbers them.
  std::vector<Tensor> params() const;
  // The whole optimizer state as the inner optimizer would hold it for every
  // parameter ("<index>.<state>" + "step"), gathered from the shards:
  // checkpoints that load into any number of ranks. Collective over the group.
  std::map<std::string, Tensor> state_dict() const;
  // Loads such a state: each rank keeps its shard.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  struct Flat {
    std::vector<Tensor> params;
    int64_t numel = 0;  // unpadded
    int64_t shard = 0;  // elements per rank
    Tensor shard_param;  // this rank's shard: a leaf the inner optimizer updates
  };
  std::vector<Flat> flats_;
  std::shared_ptr<ProcessGroup> group_;
  bool reduced_ = false;
  std::unique_ptr<optim::Optimizer> inner_;
};

}  // namespace kiln::dist
