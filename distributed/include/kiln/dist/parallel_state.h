#pragma once
// ParallelState: the world split into tensor-, data- and pipeline-parallel
// groups in Megatron-LM's rank order (tensor-parallel ranks adjacent, then
// data-parallel, then pipeline stages):
//   rank = (pp_rank * dp + dp_rank) * tp + tp_rank
// Expert parallelism (Megatron-Core's layout with expert tensor parallelism
// 1) is carved out of the data-parallel ranks: ep consecutive replicas share
// out the experts (the expert-parallel group), and the replicas holding the
// same experts form the expert-data-parallel group (dp / ep of them), over
// which the experts' gradients are reduced.

#include <memory>

#include "kiln/dist/process_group.h"

namespace kiln::dist {

// The process groups of a tp x pp x dp (x ep) layout and this rank's place in each (above).
class ParallelState {
 public:
  // Raises kiln::Error when tp * pp * dp != world size or ep does not divide dp.
  ParallelState(std::shared_ptr<ProcessGroup> world, int tp, int pp, int dp, int ep = 1);

  // The layout's sizes, and this rank's coordinate along each.
  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int tp_rank() const { return tp_rank_; }
  int pp_rank() const { return pp_rank_; }
  int dp_rank() const { return dp_rank_; }
  int ep() const { return ep_; }
  int ep_rank() const { return dp_rank_ % ep_; }
  // The groups this rank belongs to: all ranks, its tensor-parallel peers, its
  // pipeline, its data-parallel replicas, its expert-parallel peers, and the
  // replicas holding its experts.
  const std::shared_ptr<ProcessGroup>& world() const { return world_; }
  const std::shared_ptr<ProcessGroup>& tp_group() const { return tp_group_; }
  const std::shared_ptr<ProcessGroup>& pp_group() const { return pp_group_; }
  const std::shared_ptr<ProcessGroup>& dp_group() const { return dp_group_; }
  const std::shared_ptr<ProcessGroup>& ep_group() const { return ep_group_; }
  const std::shared_ptr<ProcessGroup>& expert_dp_group() const { return expert_dp_group_; }
  // The first and the last pipeline stage of this rank's tensor- and
  // data-parallel coordinates (they hold a tied embedding's two copies);
  // null on the other stages and with one stage.
  const std::shared_ptr<ProcessGroup>& embedding_group() const { return embedding_group_; }

 private:
  std::shared_ptr<ProcessGroup> world_, tp_group_, pp_group_, dp_group_, embedding_group_, ep_group_,
      expert_dp_group_;
  int tp_, pp_, dp_, ep_, tp_rank_, pp_rank_, dp_rank_;
};

}  // namespace kiln::dist
