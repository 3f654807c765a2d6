#include "kiln/dist/parallel_state.h"

#include "kiln/base/error.h"

namespace kiln::dist {

ParallelState::ParallelState(std::shared_ptr<ProcessGroup> world, int tp, int pp, int dp, int ep)
    : world_(std::move(world)), tp_(tp), pp_(pp), dp_(dp), ep_(ep) {
  KILN_CHECK(tp > 0 && pp > 0 && dp > 0, "[ParallelState] tp ({}), pp ({}) and dp ({}) must be positive", tp, pp, dp);
  KILN_CHECK(tp * pp * dp == world_->size(),
             "[ParallelState] tp {} x pp {} x dp {} = {} does not match the world size {}", tp, pp, dp, tp * pp * dp,
             world_->size());
  KILN_CHECK(ep > 0 && dp % ep == 0, "[ParallelState] expert parallelism {} must divide the {} data-parallel ranks",
             ep, dp);
  const int r = world_->rank();
  tp_rank_ = r % tp;
  dp_rank_ = r / tp % dp;
  pp_rank_ = r / (tp * dp);
  // Ranks sharing the other two coordinates form a group, ordered by their own.
  tp_group_ = world_->split(pp_rank_ * dp + dp_rank_, tp_rank_);
  dp_group_ = world_->split(pp_rank_ * tp + tp_rank_, dp_rank_);
  pp_group_ = world_->split(dp_rank_ * tp + tp_rank_, pp_rank_);
  // Within the data-parallel group: blocks of ep consecutive replicas, and
  // the replicas at the same place in their blocks.
  const int block = dp_rank_ / ep, place = dp_rank_ % ep;
  ep_group_ = world_->split((pp_rank_ * tp + tp_rank_) * (dp / ep) + block, place);
  expert_dp_group_ = world_->split((pp_rank_ * tp + tp_rank_) * ep + place, block);
  if (pp > 1) {  // every rank takes part in the split; the middle stages each alone
    const bool ends = pp_rank_ == 0 || pp_rank_ == pp - 1;
    auto group = world_->split(ends ? dp_rank_ * tp + tp_rank_ : tp * dp + r, pp_rank_);
    if (ends) embedding_group_ = group;
  }
}

}  // namespace kiln::dist
