#pragma once
// ZeRO stage 1 (Rajbhandari et al. 2020): optimizer state sharded across a
// data-parallel group. Each parameter group is flattened and cut into one
// contiguous shard per rank; a step reduce-scatters (averages) the gradients so
// that each rank holds its shard's gradient, runs the inner optimizer on that
// shard only, and all-gathers the updated parameters. Replaces DDP's gradient
// all-reduce: use one or the other.

#include <functional>
#include <memory>
#include <vector>

#include "kiln/dist/process_group.h"
#include "kiln/optim/optimizer.h"

namespace kiln::dist {

class ZeroRedundancyOptimizer {
 public:
  // make_inner builds the optimizer for the shards (one group per input group,
  // same weight decay), e.g. [](auto groups) { return std::make_unique<AdamW>(groups, options); }.
  using InnerFactory = std::function<std::unique_ptr<optim::Optimizer>(std::vector<optim::ParamGroup>)>;
  ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups, std::shared_ptr<ProcessGroup> group,
                          const InnerFactory& make_inner);

  // Averages gradients across ranks, updates this rank's shard, gathers the parameters.
  void step();
  void zero_grad(bool set_to_none = true);
  void set_lr(double lr) { inner_->set_lr(lr); }
  double lr() const { return inner_->lr(); }
  // This rank's optimizer state (for its checkpoint).
  const optim::Optimizer& inner() const { return *inner_; }

 private:
  struct Flat {
    std::vector<Tensor> params;
    int64_t numel = 0;  // unpadded
    int64_t shard = 0;  // elements per rank
    Tensor shard_param;  // this rank's shard: a leaf the inner optimizer updates
  };
  std::vector<Flat> flats_;
  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<optim::Optimizer> inner_;
};

}  // namespace kiln::dist
